"""Pretrain a small T5 (encoder-decoder) by span corruption on the Wikipedia articles shipped in the
gensim package (98 train / 8 held-out articles, 450k words).

Articles are tokenized with a SentencePiece model trained on the train articles (cached after the
first run; T5's specials: pad 0, eos 1, unk 2), followed by 100 sentinel ids. Each article is cut into
pieces that corrupt to `max_len` input tokens (T5's `random_spans_helper`: 568 raw tokens for 512);
15% of each piece, in spans of mean length 3, is replaced by one sentinel per span in the inputs, and
the targets spell out each sentinel and the span it hides (Raffel et al. 2020, section 3.1.4). Pairs
are packed with segment ids, so nothing attends across pairs. The model is scored by the loss per
target token (and its perplexity and accuracy) on held-out articles.

  python -m llmjax.main --config=configs/t5_span.py --workdir=runs/t5
  python -m llmjax.main --config=configs/t5_span.py:steps=500,layers=2 --workdir=...
  python -m llmjax.main --config=configs/t5_span.py:tiny --workdir=...      # seconds
  python -m llmjax.model_info --config=configs/t5_span.py:t5_small          # the paper's size

`t5_small` is T5 v1.0 small at its real size (60,506,624 parameters, vocab 32,128, relative position
buckets, ReLU, tied and rescaled head) with the paper's pre-training: C4, 2^19 = 524,288 steps of 128
sequences x 512 tokens (2^16 tokens), Adafactor, learning rate 1/sqrt(max(step, 10^4)), dropout 0.1.
Reported (Raffel et al. 2020, Table 14, T5-Small after multi-task pre-training and fine-tuning): GLUE
average 77.4, SuperGLUE average 63.3, WMT English-German BLEU 26.7.
`t5_v1_1_small` is the T5 1.1 checkpoint's architecture (76,961,152 parameters: gated GELU, d_ff 1024,
8 layers, 6 heads, untied head without rescaling), pre-trained on C4 only and without dropout; T5 1.1
was released without a paper and reports no fine-tuned figures of its own.
Both need an accelerator mesh and the C4 corpus (`c4/en` through tfds, on a machine with internet).
"""

import dataclasses

from llmjax import config_lib, models
from llmjax.models import t5


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, t5_small=False, t5_v1_1_small=False, steps=1000,
                             layers=4, width=256, max_len=128, vocab=8000, batch=16, lr=1e-3)
  c = config_lib.base_config()
  c.task.name = 'span_corruption'
  # 100 sentinels follow the SentencePiece vocabulary.
  c.model = models.model_config(
      't5', vocab_size=arg.vocab + 100, d_model=arg.width, d_kv=64, d_ff=4 * arg.width,
      num_layers=arg.layers, num_heads=max(arg.width // 64, 1), dropout_rate=0.0)
  config_lib.enwiki_pretraining(c, arg)
  c.tokenizer.kind = 'sentencepiece'
  c.tokenizer.vocab = f'spm:enwiki_sample:{arg.vocab}'
  c.optim.schedule = 'cosine'
  c.optim.weight_decay = 0.01

  if arg.t5_small or arg.t5_v1_1_small:
    c.model = models.model_config('t5')  # T5 v1.0 small.
    if arg.t5_v1_1_small:
      c.model = models.model_config('t5', **dataclasses.asdict(t5.t5_v1_1(dropout_rate=0.0)))
    c.data.name = 'c4/en'
    c.data.splits = dict(train='train', validation='validation[:50%]', test='validation[50%:]')
    c.data.max_len = 512
    c.data.buckets = (512,)
    # T5's SentencePiece vocabulary has 32,000 pieces; with 100 sentinels the model pads to 32,128.
    c.tokenizer.vocab = 'spm:c4/en:32000'
    c.batch_size = 128
    c.eval_batch_size = 128
    c.num_train_steps = 2 ** 19
    c.optim.update(lr=0.01, schedule='rsqrt', warmup_frac=1e4 / 2 ** 19, warmup_shape='constant',
                   weight_decay=0.0, name='adafactor', clip_norm=0.0)
    c.eval.every_steps = 5000
    c.checkpoint.every_steps = 5000
    c.log_every_steps = 100

  if arg.tiny:
    c.model.update(vocab_size=256 + 100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=32)
    c.tokenizer.vocab = 'spm:enwiki_sample:256'
    config_lib.tiny_run(c)
  return c
