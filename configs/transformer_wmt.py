"""The original Transformer, base model (Vaswani et al. 2017), trained to translate English to German
on WMT'14 (`wmt14_translate/de-en` through tfds: 4.5M sentence pairs; newstest2013 validates,
newstest2014 tests).

Architecture (`llmjax.models.t5.transformer_base`): 6 + 6 layers, d_model 512, 8 heads of 64, FFN 2048
(ReLU), post-LayerNorm, sinusoidal positions, embeddings scaled by sqrt(d_model), one embedding matrix
shared by source, target and the pre-softmax layer over a shared 37,000-token vocabulary (here a
SentencePiece model trained on both sides of the train split, cached after the first run): 63,082,496
parameters (the paper's Table 3 rounds its own to 65M). Training as in the paper: batches of about
25,000 source and 25,000 target tokens (96 packed rows of 256), 100k steps, Adam (beta1 0.9, beta2
0.98, eps 1e-9) with lr = d_model^-0.5 * min(step^-0.5, step * 4000^-1.5), dropout 0.1, label
smoothing 0.1. Not applied: averaging the last 5 checkpoints. Reported: BLEU 27.3 on
newstest2014 (Table 2; beam 4, length penalty 0.6), 25.8 on newstest2013 (Table 3). Each
evaluation reports the teacher-forced loss and translates the validation set the paper's way (beam
4, length penalty 0.6) for sacrebleu's BLEU and chrF; the best checkpoint is chosen by BLEU.

  python -m llmjax.main --config=configs/transformer_wmt.py --workdir=runs/wmt     # accelerators
  python -m llmjax.model_info --config=configs/transformer_wmt.py
  python -m llmjax.main --config=configs/transformer_wmt.py:tiny --workdir=...     # seconds

The dataset must be prepared where the network allows (tfds downloads and builds it on first use).
"""

import dataclasses

from llmjax import config_lib, models
from llmjax.models import t5


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, steps=100_000)
  c = config_lib.base_config()
  c.task.name = 'translation'
  c.task.label_smoothing = 0.1
  c.model = models.model_config('t5', **dataclasses.asdict(t5.transformer_base()))
  c.data.name = 'wmt14_translate/de-en'
  c.data.text_keys = ('en', 'de')  # source, target
  c.data.splits = dict(train='train', validation='validation', test='test')
  c.data.max_len = 256
  c.data.buckets = (256,)
  c.data.target_max_len = 256
  c.tokenizer.kind = 'sentencepiece'
  c.tokenizer.vocab = 'spm:wmt14_translate/de-en:37000'
  c.num_train_steps = arg.steps
  c.batch_size = 96
  c.eval_batch_size = 96
  c.optim.update(lr=512 ** -0.5 * 4000 ** -0.5, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0,
                 schedule='rsqrt', warmup_frac=4000 / arg.steps, warmup_shape='linear',
                 clip_norm=0.0)
  c.eval.every_steps = 5000
  c.eval.metric = 'bleu'
  c.eval.num_beams = 4
  c.eval.length_penalty = 0.6
  c.checkpoint.every_steps = 5000
  c.log_every_steps = 100

  if arg.tiny:
    c.model.update(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   max_position_embeddings=32)
    c.tokenizer.vocab = 'spm:wmt14_translate/de-en:256'
    config_lib.tiny_run(c)
    c.data.target_max_len = 32
    c.optim.warmup_frac = 0.5
    c.eval.num_beams = 2
    c.eval.max_decode_examples = 8
  return c
