"""Pretrain a small GPT (decoder-only, GPT-2 architecture) by causal language modelling on the
Wikipedia articles shipped in the gensim package (98 train / 8 held-out articles, 450k words).

Documents are tokenized with a SentencePiece model trained on the train articles (cached after the
first run), packed into rows of `max_len` tokens with segment ids so no token attends across
documents, and the model is scored by per-token loss and perplexity on held-out articles.

  python -m llmjax.main --config=configs/gpt_lm.py --workdir=runs/gpt
  python -m llmjax.main --config=configs/gpt_lm.py:steps=500,layers=2 --workdir=...
  python -m llmjax.main --config=configs/gpt_lm.py:tiny --workdir=...   # seconds
"""

from llmjax import config_lib, models


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, steps=1000, layers=4, width=256, max_len=128,
                             vocab=8000, batch=16, lr=1e-3)
  c = config_lib.base_config()
  c.task.name = 'causal_lm'
  c.model = models.model_config(
      'gpt', vocab_size=arg.vocab, max_position_embeddings=arg.max_len, hidden_size=arg.width,
      num_layers=arg.layers, num_heads=arg.width // 64, intermediate_size=4 * arg.width,
      embd_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0)
  c.data.name = 'enwiki_sample'
  # The 8 held-out articles: half score checkpoints, half are the final test.
  c.data.splits = dict(train='train', validation='validation[:50%]', test='validation[50%:]')
  c.data.max_len = arg.max_len
  c.data.buckets = (arg.max_len,)
  c.tokenizer.kind = 'sentencepiece'
  c.tokenizer.vocab = f'spm:enwiki_sample:{arg.vocab}'
  c.num_train_steps = arg.steps
  c.batch_size = arg.batch
  c.eval_batch_size = 32
  c.optim.lr = arg.lr
  c.optim.schedule = 'cosine'
  c.optim.warmup_frac = 0.05
  c.optim.weight_decay = 0.1
  c.eval.every_steps = 250
  c.eval.metric = 'loss'
  c.eval.mode = 'min'
  c.checkpoint.every_steps = 250
  c.log_every_steps = 50

  if arg.tiny:
    c.model.update(vocab_size=256, max_position_embeddings=32, hidden_size=32, num_layers=2,
                   num_heads=4, intermediate_size=64)
    c.tokenizer.vocab = 'spm:enwiki_sample:256'
    c.data.max_len = 32
    c.data.buckets = (32,)
    c.num_train_steps = 6
    c.batch_size = 8
    c.eval_batch_size = 8
    c.eval.every_steps = 3
    c.checkpoint.every_steps = 3
    c.log_every_steps = 2
  return c
