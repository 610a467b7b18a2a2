"""Translate English to Spanish with a small T5 trained from scratch on the verse-aligned Bible.

Data: `bible_en_es` (`llmjax/data/bible.py`): King James Version / Reina-Valera 1909 verse pairs
from Debian's SWORD packages, split by held-out books (validation: Ruth, Joel, Jonah, Colossians,
1 Thessalonians, James, 471 pairs; test: Esther, Lamentations, Micah, Nahum, Habakkuk, Ephesians,
Philippians, 1 Peter, 1 John, 998 pairs; train: the other 51 books, 29,047 pairs).
One SentencePiece vocabulary (unigram, 8,000 pieces, T5's specials) is trained on both languages of
the train books and cached after the first run.

Model: T5 v1.0 layout (relative position buckets, ReLU, tied embeddings), `layers` + `layers`
blocks of width `width`, heads of 64, FFN 4 x width, dropout 0.1. Training: packed pairs of up to
128 source and 128 target tokens (longer verses are cut), AdamW at `lr` with 5% warmup and cosine
decay, label smoothing 0.1. Every `eval_every` steps the validation books are translated by beam
search (`beams` beams, HF's length penalty 1.0) and scored with sacrebleu (BLEU, chrF); the best
checkpoint by validation BLEU translates the test books at the end.

  python -m llmjax.main --config=configs/translate_bible.py --workdir=runs/bible
  python -m llmjax.main --config=configs/translate_bible.py:steps=500,layers=2 --workdir=...
  python -m llmjax.main --config=configs/translate_bible.py:tiny --workdir=...    # seconds
  python -m llmjax.main --mode=predict --workdir=runs/bible --input=sentences.txt \
      --output=translations.jsonl   # one English sentence per line -> one JSON line each

`benchmarks/t5_translation_vs_transformers.py` trains this architecture side by side with
transformers + PyTorch on the same batches and compares the test BLEU.
"""

from llmjax import config_lib, models


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, steps=3000, layers=3, width=256, vocab=8000,
                             batch=32, lr=1e-3, max_len=128, beams=4, eval_every=1000)
  c = config_lib.base_config()
  c.task.name = 'translation'
  c.task.label_smoothing = 0.1
  c.model = models.model_config(
      't5', vocab_size=arg.vocab, d_model=arg.width, d_kv=64, d_ff=4 * arg.width,
      num_layers=arg.layers, num_heads=max(arg.width // 64, 1), dropout_rate=0.1)
  c.data.name = 'bible_en_es'
  c.data.text_keys = ('en', 'es')  # source, target
  c.data.splits = dict(train='train', validation='validation', test='test')
  c.data.max_len = arg.max_len
  c.data.buckets = (arg.max_len,)
  c.data.target_max_len = arg.max_len
  c.tokenizer.kind = 'sentencepiece'
  c.tokenizer.vocab = f'spm:bible_en_es:{arg.vocab}'
  c.num_train_steps = arg.steps
  c.batch_size = arg.batch
  c.eval_batch_size = 64
  c.optim.update(lr=arg.lr, schedule='cosine', warmup_frac=0.05, weight_decay=0.01)
  c.eval.every_steps = arg.eval_every
  c.eval.metric = 'bleu'
  c.eval.mode = 'max'
  c.eval.num_beams = arg.beams
  c.eval.length_penalty = 1.0
  c.eval.max_decode_examples = -1
  c.checkpoint.every_steps = arg.eval_every
  c.log_every_steps = 50

  if arg.tiny:
    c.model.update(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=32)
    c.tokenizer.vocab = 'spm:bible_en_es:64'
    config_lib.tiny_run(c)
    c.data.target_max_len = 32
    c.eval.num_beams = 2
  return c
