"""Masked language modelling (Devlin et al., 2019): predict the original token at masked positions.

Batches come from `llmjax.data.lm.build_masked` (input_ids with the masks applied, labels,
token_type_ids, segment_ids, positions, weights; see there). The encoder attends within a segment and
restarts positions per segment, so each packed `[CLS] piece [SEP]` is encoded as if alone. The loss
is the summed cross-entropy at the weighted (masked) positions; the host divides by the number of
masked tokens and reports perplexity and masked-token accuracy. See `classification.py` for the
interface every task offers.
"""

import math

import jax.numpy as jnp
import numpy as np
import optax


class MaskedLMTask:
  """Cross-entropy of the original tokens at the masked positions of a masked-LM encoder."""

  def __init__(self, model):
    self.model = model

  def init(self, rng, length: int):
    ids = jnp.zeros((1, length), jnp.int32)
    return self.model.init(rng, ids, ids, ids + 1, deterministic=True)['params']

  @staticmethod
  def tokens(batch) -> int:
    """Real tokens processed (every non-padding position is encoded, not only the masked ones)."""
    return int((batch['segment_ids'] > 0).sum())

  def logits(self, params, batch, *, dropout_rng=None):
    deterministic = dropout_rng is None
    segment_ids = batch['segment_ids']
    return self.model.apply(
        {'params': params}, batch['input_ids'], batch['token_type_ids'], segment_ids > 0,
        segment_ids=segment_ids, positions=batch['positions'], deterministic=deterministic,
        rngs=None if deterministic else {'dropout': dropout_rng})

  @staticmethod
  def _sums(logits, batch):
    weights = batch['weights']
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch['labels'])
    correct = (jnp.argmax(logits, -1) == batch['labels']) * weights
    return {'loss': jnp.sum(nll * weights), 'weight': jnp.sum(weights), 'correct': jnp.sum(correct)}

  def loss(self, params, batch, dropout_rng):
    """(summed loss, sums); `sums` holds loss, weight (masked tokens) and correct predictions."""
    sums = self._sums(self.logits(params, batch, dropout_rng=dropout_rng), batch)
    return sums['loss'], sums

  def eval_outputs(self, params, batch):
    return self._sums(self.logits(params, batch), batch)

  @staticmethod
  def train_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Loss per masked token, its perplexity, and the accuracy of the masked-token predictions."""
    weight = max(sums['weight'], 1.0)
    loss = sums['loss'] / weight
    return {'loss': loss, 'perplexity': math.exp(min(loss, 50.0)),
            'accuracy': sums['correct'] / weight}

  def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """`train_metrics` over a whole split."""
    return self.train_metrics({k: sum(float(o[k]) for o in outputs)
                               for k in ('loss', 'weight', 'correct')})
