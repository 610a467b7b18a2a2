"""Causal language modelling: predict each next token of packed documents.

Batches come from `llmjax.data.lm` (inputs, targets, segment_ids, positions, weights; see there).
The decoder masks attention by segment and restarts positions per segment, so a packed row computes
exactly what its documents would compute one by one. The loss is the summed cross-entropy over the
weighted targets; the host divides by the token count and reports perplexity. See
`classification.py` for the interface every task offers.

With `loss_chunk_size` (config `task.loss_chunk_size`) > 0 the output projection and the loss run a
chunk of about that many tokens at a time (`losses.chunked_cross_entropy`): the same sums, without
ever holding the logits [B, L, vocab] of the whole batch, forward or backward.
"""

import functools

import jax.numpy as jnp

from llmjax.models import gpt
from llmjax.tasks import losses
from llmjax.tasks.token_prediction import TokenPredictionTask


class CausalLMTask(TokenPredictionTask):
  """Next-token cross-entropy on the logits of a decoder-only language model."""

  label_key = 'targets'

  def __init__(self, model, label_smoothing: float = 0.0, *, loss_chunk_size: int = 0):
    super().__init__(model, label_smoothing)
    self.loss_chunk_size = loss_chunk_size

  def init(self, rng, length: int):
    ids = jnp.zeros((1, length), jnp.int32)
    return self.model.init(rng, ids, deterministic=True)['params']

  @staticmethod
  def tokens(batch) -> int:
    return int(batch['weights'].sum())

  def logits(self, params, batch, *, dropout_rng=None):
    return self._decoder(params, batch, dropout_rng)

  def _decoder(self, params, batch, dropout_rng, return_hidden=False):
    """The decoder's logits [B, L, vocab], or with `return_hidden` (final states, head weight)."""
    deterministic = dropout_rng is None
    return self.model.apply(
        {'params': params}, batch['inputs'], positions=batch['positions'],
        segment_ids=batch['segment_ids'], deterministic=deterministic, return_hidden=return_hidden,
        rngs=None if deterministic else {'dropout': dropout_rng})

  def _loss_sums(self, params, batch, dropout_rng=None):
    if not self.loss_chunk_size:
      return super()._loss_sums(params, batch, dropout_rng)
    x, head = self._decoder(params, batch, dropout_rng, return_hidden=True)
    return self._pack(losses.chunked_cross_entropy(
        functools.partial(gpt.lm_logits, self.model.config), head, x, batch[self.label_key],
        batch['weights'], chunk_tokens=self.loss_chunk_size,
        label_smoothing=self.label_smoothing), batch['weights'])
