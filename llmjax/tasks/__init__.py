"""Tasks: the objective of an experiment, chosen by `config.task.name`, and the data it reads.

`classification` reads labelled text (`llmjax.data.pipeline`); `causal_lm` reads packed documents
(`llmjax.data.lm`); `mlm` (BERT's masked-LM pre-training) reads the same documents as masked
`[CLS] piece [SEP]` rows (`llmjax.data.lm.build_masked`); `span_corruption` (T5's pre-training)
reads them as packed (inputs, targets) pairs for an encoder-decoder
(`llmjax.data.lm.build_span_corruption`); `translation` reads the packed (source, target) pairs of a
parallel corpus (`llmjax.data.lm.build_translation`). The training loop sees only the task
interface described in `classification.py` and the data's `train_iter`, `eval_iter` and
`steps_per_epoch`.
"""

import ml_collections

from llmjax import models
from llmjax.data import lm, pipeline
from llmjax.errors import UserError
from llmjax.tasks.causal_lm import CausalLMTask
from llmjax.tasks.classification import ClassificationTask
from llmjax.tasks.mlm import MaskedLMTask
from llmjax.tasks.seq2seq import Seq2SeqTask

# Each language-modelling task: the `llmjax.data.lm` function that builds its data (by name: lm
# imports `masking` from this package), its task class and the model families it can train.
_LM_TASKS = {
    'causal_lm': ('build', CausalLMTask, ('gpt',)),
    'mlm': ('build_masked', MaskedLMTask, ('bert_mlm',)),
    'span_corruption': ('build_span_corruption', Seq2SeqTask, ('t5',)),
    'translation': ('build_translation', Seq2SeqTask, ('t5',)),
}
TASKS = ('classification', *_LM_TASKS)


def build_data(config: ml_collections.ConfigDict, *, process_index: int, process_count: int):
  if config.task.name == 'classification':
    return pipeline.build(config, process_index=process_index, process_count=process_count)
  build = getattr(lm, _LM_TASKS[config.task.name][0])
  return build(config, process_index=process_index, process_count=process_count)


def build_task(config: ml_collections.ConfigDict, data):
  """The task for `config`, over the model of `config.model` (resolved already)."""
  if config.task.name == 'classification':
    return task_for(config, data.num_labels)
  if data.vocab_size > config.model.vocab_size:
    raise UserError(f'the tokenizer has {data.vocab_size} tokens but config.model.vocab_size='
                    f'{config.model.vocab_size}: set model.vocab_size >= {data.vocab_size}')
  return task_for(config)


def task_for(config: ml_collections.ConfigDict, num_labels: int = 2):
  """The task of `config` without its data (a classifier gets `num_labels` classes)."""
  classification = config.task.name == 'classification'
  families = ('bert_classifier',) if classification else _LM_TASKS[config.task.name][2]
  if config.model.name not in families:
    raise UserError(f'config.task.name={config.task.name!r} trains {" or ".join(families)} models, '
                    f'not config.model.name={config.model.name!r}: change one of them')
  smoothing = config.task.label_smoothing
  if classification:
    return ClassificationTask(models.build(config.model, num_labels), num_labels, smoothing)
  return _LM_TASKS[config.task.name][1](models.build(config.model), smoothing)
