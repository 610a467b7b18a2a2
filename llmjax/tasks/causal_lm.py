"""Causal language modelling: predict each next token of packed documents.

Batches come from `llmjax.data.lm` (inputs, targets, segment_ids, positions, weights; see there).
The decoder masks attention by segment and restarts positions per segment, so a packed row computes
exactly what its documents would compute one by one. The loss is the summed cross-entropy over the
weighted targets; the host divides by the token count and reports perplexity. See
`classification.py` for the interface every task offers.
"""

import jax.numpy as jnp

from llmjax.tasks.token_prediction import TokenPredictionTask


class CausalLMTask(TokenPredictionTask):
  """Next-token cross-entropy on the logits of a decoder-only language model."""

  label_key = 'targets'

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
