"""Sequence-to-sequence learning with an encoder-decoder: predict the targets given the inputs.

T5's span-corruption pre-training (`llmjax.data.lm.build_span_corruption`) and translation
(`llmjax.data.translation`) are the sources of (inputs, targets) pairs. Training batches are packed:
several pairs share a row, pair i in segment i of both sides (inputs, input_segment_ids,
input_positions; targets, decoder_inputs, target_segment_ids, target_positions; weights), and the
model attends only within a pair, so a packed row computes what its pairs would compute one by one.
The loss is the summed cross-entropy over the weighted targets; the host divides by the target-token
count and reports perplexity and token accuracy. See `classification.py` for the interface every
task offers.

Translation (`TranslationTask`) is also scored by generation, as the literature reports it: the
evaluation rows of `llmjax.data.translation` hold one pair each; the task translates the source of
every row marked `decode` by beam search (`config.eval.num_beams`, `eval.length_penalty`; HF's
semantics, `llmjax.decoding`) and scores the translations against the reference texts with
sacrebleu's corpus BLEU (13a tokenization) and chrF (character 6-grams, beta 2), both 0-100.
Summarization is the same task on (document, summary) pairs; it also reports ROUGE-1/2/L.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from llmjax import decoding, models
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError
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


class TranslationTask(Seq2SeqTask):
  """Seq2SeqTask whose evaluation also generates the targets of the sources (a translation, a
  summary) and scores them: BLEU and chrF (sacrebleu), ROUGE-1, -2 and -L F1 (rouge-score, with
  stemming, as summarization papers report it), all 0-100."""

  METRICS = ('loss', 'perplexity', 'accuracy', 'bleu', 'chrf', 'rouge1', 'rouge2', 'rougeL')

  def __init__(self, model, label_smoothing: float, tokenizer, *, num_beams: int,
               length_penalty: float, max_new_tokens: int):
    """tokenizer: a `TextTokenizer`, or a function returning one (loaded when first needed)."""
    super().__init__(model, label_smoothing)
    self._tokenizer = tokenizer
    self.num_beams = num_beams
    self.length_penalty = length_penalty
    self.max_new_tokens = max_new_tokens

  @functools.cached_property
  def tokenizer(self) -> tokenizers_lib.TextTokenizer:
    return self._tokenizer if isinstance(self._tokenizer, tokenizers_lib.TextTokenizer) else (
        self._tokenizer())

  def predict(self, params, batch):
    """The best beam's tokens [b, max_new_tokens] (pad after EOS) and score [b] of each row."""
    tokens, score = decoding.seq2seq_beam_search(
        self.model, params, batch['inputs'], batch['input_segment_ids'] > 0,
        num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
        eos_id=self.tokenizer.eos_id, length_penalty=self.length_penalty)
    return {'tokens': tokens, 'score': score}

  def eval_outputs(self, params, batch):
    """The loss sums, and the translation of each row marked `decode` (beam search runs only for
    batches that hold one) with its reference bytes."""
    sums = super().eval_outputs(params, batch)
    tokens = jax.lax.cond(
        jnp.any(batch['decode'] > 0), lambda: self.predict(params, batch)['tokens'],
        lambda: jnp.zeros((batch['inputs'].shape[0], self.max_new_tokens), jnp.int32))
    return {**sums, 'tokens': tokens, 'decode': batch['decode'], 'reference': batch['reference']}

  def text(self, tokens: np.ndarray) -> str:
    return generated_text(self.tokenizer, tokens)

  def summarize(self, outputs):
    """Teacher-forced loss, perplexity and accuracy over the split, and the BLEU and chrF of the
    translations of its decoded rows (when it has any)."""
    metrics = super().summarize(outputs)
    hypotheses, references = [], []
    for o in outputs:
      for tokens, decode, reference in zip(o['tokens'], o['decode'], o['reference']):
        if decode > 0:
          hypotheses.append(self.text(tokens))
          references.append(bytes(reference).rstrip(b'\0').decode('utf-8'))
    if hypotheses:
      import sacrebleu  # pylint: disable=g-import-not-at-top  (see _rouge)
      metrics['bleu'] = float(sacrebleu.corpus_bleu(hypotheses, [references]).score)
      metrics['chrf'] = float(sacrebleu.corpus_chrf(hypotheses, [references]).score)
      scores = [_rouge().score(r, h) for h, r in zip(hypotheses, references)]
      for name in ('rouge1', 'rouge2', 'rougeL'):
        metrics[name] = 100 * float(np.mean([s[name].fmeasure for s in scores]))
    return metrics

  def format_predictions(self, outputs, inputs):
    """{'translation': text} per real row (the first len(inputs) rows)."""
    return [{'translation': self.text(tokens)} for tokens in outputs['tokens'][:len(inputs)]]


@functools.cache
def _rouge():
  """ROUGE's English stemmer and tokenizer, as Lin (2004) and the summarization literature use them.
  Built (and rouge-score, which imports NLTK, imported) when a split is first scored: 0.4 s that
  every other command would pay at its start."""
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  return rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)


def generated_text(tokenizer: tokenizers_lib.TextTokenizer, tokens) -> str:
  """The text of one row of generated tokens, up to its first EOS."""
  ids = np.asarray(tokens).tolist()
  ids = ids[:ids.index(tokenizer.eos_id)] if tokenizer.eos_id in ids else ids
  # A model's vocabulary may be padded past the tokenizer's (T5: 32,128 for 32,000 pieces); those
  # ids have no text.
  return tokenizer.decode([i for i in ids if i < tokenizer.vocab_size])


def translation_task(config: ml_collections.ConfigDict, data=None) -> TranslationTask:
  """The `translation` task of `config`; without `data` the tokenizer is loaded from the config
  when the task first needs it (it is the cached one a run trained)."""
  if data is not None and data.vocab_size > config.model.vocab_size:
    raise UserError(f'the tokenizer has {data.vocab_size} tokens but config.model.vocab_size='
                    f'{config.model.vocab_size}: set model.vocab_size >= {data.vocab_size}')
  tokenizer = data.tokenizer if data is not None else (
      lambda: tokenizers_lib.text_tokenizer(config))
  return TranslationTask(models.build(config.model), config.task.label_smoothing, tokenizer,
                         num_beams=config.eval.num_beams,
                         length_penalty=config.eval.length_penalty,
                         max_new_tokens=config.data.target_max_len)
