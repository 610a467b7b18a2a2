"""Fine-tune a classifier (or a regressor) on your own CSV, TSV or JSON-lines files, without code.

Name the files per split and the columns that hold the text and the label; the labels are
discovered from the train file and saved with the run. A split without a file is carved out of the
train file (10% each for validation and test, by a hash of the text). Bad rows stop the run with
file:line (or, with `--config.data.bad_rows=skip`, are left out and counted). See
llmjax/data/files.py.

  python -m llmjax.main --workdir=runs/mine \
      --config=configs/classify_files.py:train=reviews.csv,text=review,label=stars
  python -m llmjax.main --workdir=runs/pairs \
      --config=configs/classify_files.py:train=tr.tsv,validation=dev.tsv,test=te.tsv,text=q+p,label=a
  python -m llmjax.main --workdir=runs/score \
      --config=configs/classify_files.py:train=data.jsonl,label=score,regression

`text=A+B` names the two columns of a sentence pair.

The format is taken from the train file's extension (.csv, .tsv, .jsonl).
"""

import pathlib

from llmjax import config_lib
from llmjax.data import files
from llmjax.errors import UserError


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, train='', validation='', test='', text='text', label='label',
                             regression=False, tiny=False, epochs=3, max_len=128, batch=32, lr=5e-5)
  if not arg.train:
    raise UserError('configs/classify_files.py needs a train file: write '
                    'configs/classify_files.py:train=FILE.csv,text=COLUMN,label=COLUMN')
  fmt = pathlib.Path(arg.train).suffix.lstrip('.').lower()
  if fmt not in files.FORMATS:
    raise UserError(f'train={arg.train} must end in .csv, .tsv or .jsonl (the format is taken '
                    'from it)')
  c = config_lib.base_config()
  config_lib.minilm_finetuning(c, arg)
  c.data.name = fmt
  c.data.splits = dict(train=arg.train, validation=arg.validation, test=arg.test)
  c.data.text_keys = tuple(arg.text.split('+'))
  c.data.label_key = arg.label
  if arg.regression:
    c.task.name = 'regression'
    c.eval.metric = 'pearson'
  if arg.tiny:
    config_lib.tiny_bert(c)
  return c
