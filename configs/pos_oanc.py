"""Part-of-speech tagging on OANC sentences: all-MiniLM-L6-v2 with a classifier on every token.

19,996 sentences of the Open American National Corpus with Penn Treebank tags (llmjax's `oanc_pos`
builder, split 80/10/10 by a hash of the words); scored by the accuracy of each word's tag,
predicted at its first WordPiece. `train=N` trains on the first N sentences of the train split only,
for a shorter run. AdamW at lr 1e-4, 10% warmup, linear decay, batch 32, max length 128, 2 epochs
(1,006 steps): test token accuracy 0.9516 (2026-11-29, 2 CPU cores). At lr 5e-5 a fresh classifier
over 45 tags learns too slowly, and 8,000 sentences for 3 epochs reach 0.945.

  python -m llmjax.main --config=configs/pos_oanc.py --workdir=runs/pos
  python -m llmjax.main --config=configs/pos_oanc.py:epochs=2,train=4000 --workdir=...
  python -m llmjax.main --config=configs/pos_oanc.py:tiny --workdir=...   # seconds, random init
"""

from llmjax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, epochs=2, max_len=128, batch=32, lr=1e-4, train=-1)
  c = config_lib.base_config()
  config_lib.token_classification(c, arg, 'oanc_pos')
  c.data.max_train_examples = arg.train
  c.eval.metric = 'accuracy'  # of each word's tag, on the validation split
  return c
