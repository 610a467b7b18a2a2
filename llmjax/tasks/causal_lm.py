"""Causal language modelling: predict each next token of packed documents.

Batches come from `llmjax.data.lm` (inputs, targets, segment_ids, positions, weights; see there).
The decoder masks attention by segment and restarts positions per segment, so a packed row computes
exactly what its documents would compute one by one. The loss is the summed cross-entropy over the
weighted targets; the host divides by the token count and reports perplexity. See
`classification.py` for the interface every task offers.
"""

import math

import jax.numpy as jnp
import numpy as np
import optax


class CausalLMTask:
  """Next-token cross-entropy on the logits of a decoder-only language model."""

  def __init__(self, model):
    self.model = model

  def init(self, rng, length: int):
    ids = jnp.zeros((1, length), jnp.int32)
    return self.model.init(rng, ids, deterministic=True)['params']

  @staticmethod
  def tokens(batch) -> int:
    return int(batch['weights'].sum())

  def logits(self, params, batch, *, dropout_rng=None):
    deterministic = dropout_rng is None
    return self.model.apply(
        {'params': params}, batch['inputs'], positions=batch['positions'],
        segment_ids=batch['segment_ids'], deterministic=deterministic,
        rngs=None if deterministic else {'dropout': dropout_rng})

  @staticmethod
  def token_losses(logits, batch):
    """[B, L] cross-entropy of each target, 0 where the weight is 0."""
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                          batch['targets'])
    return nll * batch['weights']

  def _sums(self, logits, batch):
    weights = batch['weights']
    correct = (jnp.argmax(logits, -1) == batch['targets']) * weights
    return {'loss': jnp.sum(self.token_losses(logits, batch)), 'weight': jnp.sum(weights),
            'correct': jnp.sum(correct)}

  def loss(self, params, batch, dropout_rng):
    sums = self._sums(self.logits(params, batch, dropout_rng=dropout_rng), batch)
    return sums['loss'], sums

  def eval_outputs(self, params, batch):
    return self._sums(self.logits(params, batch), batch)

  @staticmethod
  def train_metrics(sums: dict[str, float]) -> dict[str, float]:
    weight = max(sums['weight'], 1.0)
    loss = sums['loss'] / weight
    return {'loss': loss, 'perplexity': math.exp(min(loss, 50.0)),
            'accuracy': sums['correct'] / weight}

  def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per-token loss, perplexity and next-token accuracy over a whole split."""
    return self.train_metrics({k: sum(float(o[k]) for o in outputs)
                               for k in ('loss', 'weight', 'correct')})
