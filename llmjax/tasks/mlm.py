"""Masked language modelling (Devlin et al., 2019): predict the original token at masked positions.

Batches come from `llmjax.data.lm.build_masked` (input_ids with the masks applied, labels,
token_type_ids, segment_ids, positions, weights; see there). The encoder attends within a segment and
restarts positions per segment, so each packed `[CLS] piece [SEP]` is encoded as if alone. The loss
is the summed cross-entropy at the weighted (masked) positions; the host divides by the number of
masked tokens and reports perplexity and masked-token accuracy. See `classification.py` for the
interface every task offers.
"""

import jax.numpy as jnp

from llmjax.tasks.token_prediction import TokenPredictionTask


class MaskedLMTask(TokenPredictionTask):
  """Cross-entropy of the original tokens at the masked positions of a masked-LM encoder."""

  label_key = 'labels'

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
