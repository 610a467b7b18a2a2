"""Sequence-to-sequence learning with an encoder-decoder: predict the targets given the inputs.

T5's span-corruption pre-training (`llmjax.data.lm.build_span_corruption`) and translation
(`llmjax.data.lm.build_translation`) are the sources of (inputs, targets) pairs. Batches are packed: several pairs share a row, pair i in segment i of both
sides (inputs, input_segment_ids, input_positions; targets, decoder_inputs, target_segment_ids,
target_positions; weights), and the model attends only within a pair, so a packed row computes what
its pairs would compute one by one. The loss is the summed cross-entropy over the weighted targets;
the host divides by the target-token count and reports perplexity and token accuracy. See
`classification.py` for the interface every task offers.
"""

import jax.numpy as jnp

from llmjax.tasks.token_prediction import TokenPredictionTask


class Seq2SeqTask(TokenPredictionTask):
  """Teacher-forced next-token cross-entropy on the decoder of an encoder-decoder model."""

  label_key = 'targets'

  def init(self, rng, length: int):
    ids = jnp.zeros((1, length), jnp.int32)
    return self.model.init(rng, ids, ids, deterministic=True)['params']

  @staticmethod
  def tokens(batch) -> int:
    """Real tokens processed: the encoder's inputs and the decoder's targets."""
    return int((batch['input_segment_ids'] > 0).sum() + (batch['target_segment_ids'] > 0).sum())

  def logits(self, params, batch, *, dropout_rng=None):
    deterministic = dropout_rng is None
    return self.model.apply(
        {'params': params}, batch['inputs'], batch['decoder_inputs'],
        input_segment_ids=batch['input_segment_ids'], input_positions=batch['input_positions'],
        decoder_segment_ids=batch['target_segment_ids'],
        decoder_positions=batch['target_positions'], deterministic=deterministic,
        rngs=None if deterministic else {'dropout': dropout_rng})
