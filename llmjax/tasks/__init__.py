"""Tasks: the objective of an experiment, chosen by `config.task.name`, and the data it reads.

Each entry of `TASKS` names how to build the task's data and its task object, the model families it
can train and the metrics its evaluation reports:

  classification   labelled text, single sentences or pairs (`llmjax.data.pipeline`)
  regression       the same texts with a real-valued target: mean squared error, Pearson, Spearman
  causal_lm        packed documents (`llmjax.data.lm.build`)
  mlm              BERT's masked-LM rows (`llmjax.data.lm.build_masked`)
  span_corruption  T5's packed (inputs, targets) pairs (`llmjax.data.lm.build_span_corruption`)
  translation      a parallel corpus: packed (source, target) pairs to train on, one pair per row to
                   evaluate by beam search, BLEU and chrF (`llmjax.data.translation`)
  summarization    the same for (document, summary) pairs, reporting ROUGE-1/2/L too
  token_classification  a tag per word, for NER and POS tagging (`llmjax.data.tagging`)
  sft              instruction tuning of a decoder: prompt/response pairs in a chat template, loss
                   on the responses, scored by generation (`llmjax.data.sft`)

The training loop sees only the task interface described in `classification.py` and the data's
`train_iter`, `eval_iter` and `steps_per_epoch`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections

from llmjax import lora, models
from llmjax.data import lm, pipeline, tagging, translation
from llmjax.data import sft as sft_data
from llmjax.errors import UserError
from llmjax.tasks.causal_lm import CausalLMTask
from llmjax.tasks.classification import ClassificationTask, RegressionTask
from llmjax.tasks.mlm import MaskedLMTask
from llmjax.tasks import seq2seq
from llmjax.tasks.seq2seq import Seq2SeqTask
from llmjax.tasks.sft import SFTTask, make as _sft_task
from llmjax.tasks.token_classification import TokenClassificationTask


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """How one task is built.

  data: (config, *, process_index, process_count) -> the data object the loop iterates.
  task: (config, data or None) -> the task object; without data (model_info, generate, restoring a
    run) everything the task needs comes from the config alone.
  families: the `config.model.name`s it can train.
  metrics: the names its `summarize` reports; `config.eval.metric` must be one of them.
  sized_in_steps: its data has no fixed epoch length (packed text): runs set num_train_steps.
  """
  data: Callable[..., Any]
  task: Callable[[ml_collections.ConfigDict, Any], Any]
  families: tuple[str, ...]
  metrics: tuple[str, ...]
  sized_in_steps: bool = False


def _label_names(config, data) -> list[str]:
  """Class names from the data, else those a run saved in its config, else two unnamed classes."""
  if data is not None:
    return data.label_names
  return list(config.data.label_names) or ['LABEL_0', 'LABEL_1']


def _classifier(config, data):
  names = _label_names(config, data)
  return ClassificationTask(models.build(config.model, len(names)), names,
                            config.task.label_smoothing)


def _tagger(config, data):
  names = _label_names(config, data)
  return TokenClassificationTask(models.build(config.model, len(names)), names,
                                 config.task.label_smoothing)


def _regressor(config, data):
  del data
  return RegressionTask(models.build(config.model, 1))


def _lm_task(cls, *options):
  """A language-model task of class `cls`; `options`: config.task keys its constructor takes."""
  def make(config, data):
    if data is not None and data.vocab_size > config.model.vocab_size:
      raise UserError(f'the tokenizer has {data.vocab_size} tokens but config.model.vocab_size='
                      f'{config.model.vocab_size}: set model.vocab_size >= {data.vocab_size}')
    return cls(models.build(config.model), config.task.label_smoothing,
               **{key: config.task[key] for key in options})
  return make


_LM_METRICS = ('loss', 'perplexity', 'accuracy')

# The data builders are looked up at call time: llmjax.data.lm imports this package's `masking`.
TASKS = {
    'classification': TaskSpec(
        lambda config, **kw: pipeline.build(config, **kw), _classifier, ('bert_classifier',),
        ClassificationTask.METRICS),
    'regression': TaskSpec(
        lambda config, **kw: pipeline.build(config, **kw), _regressor, ('bert_classifier',),
        RegressionTask.METRICS),
    # NER, POS tagging: a tag per word (`llmjax.data.tagging`).
    'token_classification': TaskSpec(
        lambda config, **kw: tagging.build(config, **kw), _tagger, ('bert_token_classifier',),
        TokenClassificationTask.METRICS),
    'causal_lm': TaskSpec(lambda config, **kw: lm.build(config, **kw),
                          _lm_task(CausalLMTask, 'loss_chunk_size'),
                          ('gpt',), _LM_METRICS, sized_in_steps=True),
    'mlm': TaskSpec(lambda config, **kw: lm.build_masked(config, **kw),
                    _lm_task(MaskedLMTask, 'max_predictions_per_seq', 'mask_rate'),
                    ('bert_mlm',), _LM_METRICS, sized_in_steps=True),
    'span_corruption': TaskSpec(lambda config, **kw: lm.build_span_corruption(config, **kw),
                                _lm_task(Seq2SeqTask), ('t5',), _LM_METRICS,
                            sized_in_steps=True),
    # Packed pairs to train on; evaluation also translates by beam search (BLEU, chrF).
    'translation': TaskSpec(lambda config, **kw: translation.build(config, **kw),
                            seq2seq.translation_task, ('t5',), seq2seq.TranslationTask.METRICS,
                            sized_in_steps=True),
    'summarization': TaskSpec(lambda config, **kw: translation.build(config, **kw),
                            seq2seq.translation_task, ('t5',), seq2seq.TranslationTask.METRICS,
                            sized_in_steps=True),
    # Instruction tuning: prompt/response conversations, loss on responses (`llmjax.data.sft`).
    'sft': TaskSpec(lambda config, **kw: sft_data.build(config, **kw), _sft_task, ('gpt',),
                    SFTTask.METRICS, sized_in_steps=True),
}


def spec(config: ml_collections.ConfigDict) -> TaskSpec:
  if config.task.name not in TASKS:
    raise UserError(f'config.task.name={config.task.name!r} is not a known task: use one of '
                    f'{", ".join(TASKS)}')
  return TASKS[config.task.name]


def build_data(config: ml_collections.ConfigDict, *, process_index: int, process_count: int):
  return spec(config).data(config, process_index=process_index, process_count=process_count)


def task_for(config: ml_collections.ConfigDict, data=None):
  """The task of `config` over the model of `config.model` (resolved already), shaped by `data`
  when given (e.g. its number of labels, its vocabulary size)."""
  families = spec(config).families
  if config.model.name not in families:
    raise UserError(f'config.task.name={config.task.name!r} trains {" or ".join(families)} models, '
                    f'not config.model.name={config.model.name!r}: change one of them')
  return lora.wrap(spec(config).task(config, data), config)
