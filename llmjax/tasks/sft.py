"""Instruction tuning (supervised fine-tuning) of a decoder-only model: the causal-LM loss on the
response tokens only, and answers generated greedily from the prompts scored by exact match.

Batches come from `llmjax.data.sft` (see there). Training rows are packed conversations whose
weights are 1 on the responses (EOS included), so `CausalLMTask`'s summed cross-entropy is the loss
on response tokens; loss, perplexity and token accuracy are reported over those tokens. Evaluation
also greedy-decodes the prompts of the rows marked `decode` (the first `task.eval_decode_examples`
of a split) over the KV cache (`llmjax.decoding.generate`, up to `task.max_new_tokens` tokens or
EOS) and reports `exact_match`: the fraction whose decoded answer equals the decoded reference
after stripping whitespace. Batches without such rows skip the decoding.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from llmjax import decoding, models
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError
from llmjax.tasks.causal_lm import CausalLMTask


class SFTTask(CausalLMTask):
  """Causal-LM cross-entropy on response tokens, and greedy answers scored by exact match."""

  METRICS = ('loss', 'perplexity', 'accuracy', 'exact_match')

  def __init__(self, model, tokenizer: tokenizers_lib.TextTokenizer, *, max_new_tokens: int,
               label_smoothing: float = 0.0, loss_chunk_size: int = 0):
    super().__init__(model, label_smoothing, loss_chunk_size=loss_chunk_size)
    self.tokenizer = tokenizer
    self.max_new_tokens = max_new_tokens

  @staticmethod
  def tokens(batch) -> int:
    # Every real token is computed on, not only the weighted response tokens.
    return int((batch['segment_ids'] > 0).sum())

  def predict(self, params, batch):
    """Greedy answers to the left-padded prompts: {'generated': [b, max_new_tokens] ids}, each row
    up to its EOS and `pad_id` 0 after it."""
    return {'generated': decoding.generate(
        self.model, params, batch['prompt'], batch['prompt_mask'],
        max_new_tokens=self.max_new_tokens, eos_id=self.tokenizer.eos_id)}

  def eval_outputs(self, params, batch):
    sums = super().eval_outputs(params, batch)
    rows = batch['prompt'].shape[0]
    generated = jax.lax.cond(
        jnp.any(batch['decode'] > 0), lambda: self.predict(params, batch)['generated'],
        lambda: jnp.zeros((rows, self.max_new_tokens), jnp.int32))
    return {**sums, 'generated': generated, 'reference': batch['reference'],
            'reference_length': batch['reference_length'], 'decode': batch['decode']}

  def answer(self, ids) -> str:
    """The text of generated ids, up to (without) the first EOS."""
    ids = list(np.asarray(ids))
    if self.tokenizer.eos_id in ids:
      ids = ids[:ids.index(self.tokenizer.eos_id)]
    return self.tokenizer.decode([int(i) for i in ids])

  def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Loss, perplexity and accuracy over the response tokens, and exact match of the decoded
    rows."""
    matches, decoded = 0, 0
    for o in outputs:
      for generated, reference, length in zip(o['generated'][o['decode'] > 0],
                                               o['reference'][o['decode'] > 0],
                                               o['reference_length'][o['decode'] > 0]):
        reference = self.tokenizer.decode([int(i) for i in reference[:length]])
        matches += self.answer(generated).strip() == reference.strip()
        decoded += 1
    return {**super().summarize(outputs), 'exact_match': matches / max(decoded, 1)}

  def format_predictions(self, outputs: dict[str, np.ndarray], inputs: list) -> list[dict]:
    """{'prediction': the generated answer} per input record."""
    return [{'prediction': self.answer(ids).strip()}
            for _, ids in zip(inputs, outputs['generated'])]


def make(config: ml_collections.ConfigDict, data=None) -> SFTTask:
  """The task of `config` (its TaskSpec's `task`): the tokenizer comes from the data when given,
  else from the config (restoring a run, predicting)."""
  tokenizer = data.tokenizer if data is not None else tokenizers_lib.text_tokenizer(config)
  if tokenizer.vocab_size > config.model.vocab_size:
    raise UserError(f'the tokenizer has {tokenizer.vocab_size} tokens but config.model.vocab_size='
                    f'{config.model.vocab_size}: set model.vocab_size >= {tokenizer.vocab_size}')
  return SFTTask(models.build(config.model), tokenizer, max_new_tokens=config.task.max_new_tokens,
                 label_smoothing=config.task.label_smoothing,
                 loss_chunk_size=config.task.loss_chunk_size)
