"""Named-entity recognition on WNUT-16 tweets: all-MiniLM-L6-v2 with a classifier on every token.

The 2,394 training tweets of the WNUT 2016 Twitter NER task (10 entity types, BIO tags), split
80/10/10 by llmjax's `wnut16` builder (only that split ships offline). Each word's tag is predicted
at its first WordPiece; the best checkpoint by validation entity F1 (seqeval, as transformers'
run_ner reports it) is scored on the test split. Hyperparameters as a transformers user would set
them: AdamW at lr 5e-5 with 10% warmup and linear decay, weight decay 0.01, batch 32, 5 epochs,
max length 128 (no tweet is longer: 75 pieces at most).

  python -m llmjax.main --config=configs/ner_wnut16.py --workdir=runs/ner
  python -m llmjax.main --config=configs/ner_wnut16.py:epochs=3,lr=1e-4 --workdir=...
  python -m llmjax.main --config=configs/ner_wnut16.py:tiny --workdir=...   # seconds, random init
  python -m llmjax.main --mode=predict --workdir=runs/ner --input=tweets.txt --output=tags.jsonl

`benchmarks/ner_vs_transformers.py` trains transformers' BertForTokenClassification on the same
encoded tweets with the same hyperparameters, for comparison. On 242 test tweets one run's F1 moves
by a few points with `seed` alone, so compare means over seeds.
"""

from llmjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, epochs=5, max_len=128, batch=32, lr=5e-5, seed=0)
  c = config_lib.base_config()
  c.seed = arg.seed  # the classifier's init, dropout and the train order: runs to average over
  config_lib.token_classification(c, arg, 'wnut16')
  c.eval.metric = 'f1'  # entity-level, on the validation split
  return c
