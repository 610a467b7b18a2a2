"""Tasks: the objective of an experiment, chosen by `config.task.name`, and the data it reads.

`classification` reads labelled text (`llmjax.data.pipeline`); `causal_lm` reads packed documents
(`llmjax.data.lm`); `mlm` (BERT's masked-LM pre-training) reads the same documents as masked
`[CLS] piece [SEP]` rows (`llmjax.data.lm.build_masked`). The training loop sees only the task
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


def build_data(config: ml_collections.ConfigDict, *, process_index: int, process_count: int):
  if config.task.name == 'classification':
    return pipeline.build(config, process_index=process_index, process_count=process_count)
  if config.task.name == 'mlm':
    return lm.build_masked(config, process_index=process_index, process_count=process_count)
  return lm.build(config, process_index=process_index, process_count=process_count)


def build_task(config: ml_collections.ConfigDict, data):
  """The task for `config`, over the model of `config.model` (resolved already)."""
  if config.task.name == 'classification':
    return ClassificationTask(models.build(config.model, data.num_labels), data.num_labels)
  if data.vocab_size > config.model.vocab_size:
    raise UserError(f'the tokenizer has {data.vocab_size} tokens but config.model.vocab_size='
                    f'{config.model.vocab_size}: set model.vocab_size >= {data.vocab_size}')
  if config.task.name == 'mlm':
    return MaskedLMTask(models.build(config.model))
  return CausalLMTask(models.build(config.model))
