"""Pretrain a small GPT (decoder-only, GPT-2 architecture) by causal language modelling on the
Wikipedia articles shipped in the gensim package (98 train / 8 held-out articles, 450k words).

Documents are tokenized with a SentencePiece model trained on the train articles (cached after the
first run), packed into rows of `max_len` tokens with segment ids so no token attends across
documents, and the model is scored by per-token loss and perplexity on held-out articles.

  python -m llmjax.main --config=configs/gpt_lm.py --workdir=runs/gpt
  python -m llmjax.main --config=configs/gpt_lm.py:steps=500,layers=2 --workdir=...
  python -m llmjax.main --config=configs/gpt_lm.py:gpt2_bpe --workdir=...   # GPT-2's BPE, 50,257
  python -m llmjax.main --config=configs/gpt_lm.py:tiny --workdir=...   # seconds
  python -m llmjax.model_info --config=configs/gpt_lm.py:gpt2_small     # the paper's size

`gpt2_small` is GPT-2 small at its real size (Radford et al. 2019: 124M parameters, 1024-token
context, GPT-2's BPE vocabulary of 50,257) with the optimisation of GPT-3 Small (Brown et al. 2020,
Table 2.1: batch 0.5M tokens, lr 6e-4, 375M warmup tokens, cosine decay (to 10% there, to 0 here),
weight decay 0.1, 300B tokens). Reported: GPT-2 small reaches zero-shot perplexity 37.50 on WikiText-103 and 35.13 on
LAMBADA. It needs an accelerator mesh and a real corpus (`--config.data.name=c4` or `wikipedia/...`).
"""

from llmjax import config_lib, models


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, gpt2_small=False, gpt2_bpe=False, steps=1000,
                             layers=4, width=256, max_len=128, vocab=8000, batch=16, lr=1e-3)
  c = config_lib.base_config()
  c.task.name = 'causal_lm'
  c.model = models.model_config(
      'gpt', vocab_size=arg.vocab, max_position_embeddings=arg.max_len, hidden_size=arg.width,
      num_layers=arg.layers, num_heads=max(arg.width // 64, 1), intermediate_size=4 * arg.width,
      embd_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0)
  config_lib.enwiki_pretraining(c, arg)
  c.tokenizer.kind = 'sentencepiece'
  c.tokenizer.vocab = f'spm:enwiki_sample:{arg.vocab}'
  if arg.gpt2_bpe or arg.gpt2_small:
    # GPT-2's byte-level BPE and its 50,257 tokens instead of a SentencePiece model of the sample.
    c.tokenizer.update(kind='gpt2_bpe', vocab='asset:gpt2-bpe/encoder.json',
                       merges='asset:gpt2-bpe/vocab.bpe')
    c.model.vocab_size = 50257
  c.optim.schedule = 'cosine'
  c.optim.weight_decay = 0.1

  if arg.gpt2_small:
    c.model = models.model_config('gpt')  # GPT-2 small: 12 layers, width 768, 12 heads, 124M.
    c.data.max_len = 1024
    c.data.buckets = (1024,)
    c.batch_size = 512  # x 1024 tokens = 0.5M tokens per step.
    c.eval_batch_size = 512
    c.num_train_steps = 572_000  # 300B tokens.
    c.optim.update(lr=6e-4, b2=0.95, warmup_frac=375 / 300_000, schedule='cosine',
                   weight_decay=0.1, clip_norm=1.0)
    c.eval.every_steps = 5000
    c.checkpoint.every_steps = 5000
    c.log_every_steps = 100

  if arg.tiny:
    c.model.update(vocab_size=256, max_position_embeddings=32, hidden_size=32, num_layers=2,
                   num_heads=4, intermediate_size=64)
    c.tokenizer.update(kind='sentencepiece', vocab='spm:enwiki_sample:256', merges='')
    config_lib.tiny_run(c)
  return c
