"""Fine-tune a BERT encoder on a GLUE task (Wang et al. 2019), read through TFDS as `glue/<task>`.

Each task trains on its train split less the last 5% (held out for early stopping and the best
checkpoint) and reports its official metric on the official validation split, which is what GLUE
papers report as "dev" (the test labels are private). Metrics: CoLA Matthews correlation; MRPC and
QQP F1 (and accuracy); STS-B Pearson (and Spearman) of a regression head; MNLI accuracy on the
matched validation set (`task=mnli_mismatched` for the other); the rest accuracy.

  python -m llmjax.main --config=configs/glue.py:task=cola --workdir=runs/glue_cola
  python -m llmjax.main --config=configs/glue.py:task=stsb,epochs=5,lr=3e-5 --workdir=...

TFDS downloads GLUE on first use: this needs the internet once (or a data_dir prepared elsewhere as
ArrayRecord). Reference figures for BERT-base (Devlin et al. 2019, Table 1, test set): CoLA 52.1,
SST-2 93.5, MRPC 88.9 F1, STS-B 85.8 Spearman, QQP 71.2 F1, MNLI 84.6/83.4, QNLI 90.5, RTE 66.4.
"""

from llmjax import config_lib
from llmjax.errors import UserError

# task -> (text features, the metric it reports, the validation split that serves as its test).
TASKS = {
    'cola': (('sentence',), 'matthews', 'validation'),
    'sst2': (('sentence',), 'accuracy', 'validation'),
    'mrpc': (('sentence1', 'sentence2'), 'f1', 'validation'),
    'qqp': (('question1', 'question2'), 'f1', 'validation'),
    'stsb': (('sentence1', 'sentence2'), 'pearson', 'validation'),
    'mnli': (('premise', 'hypothesis'), 'accuracy', 'validation_matched'),
    'mnli_mismatched': (('premise', 'hypothesis'), 'accuracy', 'validation_mismatched'),
    'qnli': (('question', 'sentence'), 'accuracy', 'validation'),
    'rte': (('sentence1', 'sentence2'), 'accuracy', 'validation'),
    'wnli': (('sentence1', 'sentence2'), 'accuracy', 'validation'),
}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, task='sst2', tiny=False, epochs=3, max_len=128, batch=32,
                             lr=2e-5)
  if arg.task not in TASKS:
    raise UserError(f'unknown GLUE task {arg.task!r}: choose one of {", ".join(TASKS)}')
  text_keys, metric, test_split = TASKS[arg.task]
  c = config_lib.base_config()
  config_lib.minilm_finetuning(c, arg)
  c.data.name = f'glue/{arg.task.split("_")[0]}'
  c.data.text_keys = text_keys
  c.data.splits = dict(train='train[:95%]', validation='train[95%:]', test=test_split)
  if arg.task == 'stsb':
    c.task.name = 'regression'  # Similarity scores 0-5.
  c.eval.metric = metric
  if arg.tiny:
    config_lib.tiny_bert(c)
  return c
