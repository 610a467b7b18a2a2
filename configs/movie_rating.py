"""Regression: predict the mean human rating (-4..+4) of a movie-review sentence.

The same Rotten Tomatoes snippets as configs/bert_classify.py, with the `rating` feature (the mean of
about 20 raters, VADER's ground truth) as a real-valued target: a one-output head on
all-MiniLM-L6-v2 fitted by mean squared error, scored by Pearson and Spearman correlation on the
test split (the best checkpoint chosen by validation Pearson).

  python -m llmjax.main --config=configs/movie_rating.py --workdir=runs/rating
  python -m llmjax.main --config=configs/movie_rating.py:tiny --workdir=...   # seconds, random init
"""

from llmjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, epochs=3, max_len=64, batch=32, lr=5e-5)
  c = config_lib.base_config()
  config_lib.minilm_finetuning(c, arg)
  c.task.name = 'regression'
  c.data.label_key = 'rating'
  c.eval.metric = 'pearson'
  if arg.tiny:
    config_lib.tiny_bert(c)
  return c
