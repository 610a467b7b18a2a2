"""Abstractive summarization with T5 through tfds: CNN/DailyMail (`cnn_dailymail`, 287k news
articles with their highlights) or XSum (`xsum`, 204k BBC articles with one-sentence summaries).

A T5-small-shaped encoder-decoder (v1.0: 6 + 6 layers, d_model 512) reads the article (512 tokens)
and writes the summary (128), trained by teacher forcing with label smoothing 0.1 and scored by
generation: beam search (4 beams, length penalty 0.6 as in the T5 paper) on the first 1,000
validation articles at each evaluation, ROUGE-1/2/L F1 with stemming (rouge-score) as the
literature reports them, best checkpoint by ROUGE-L. The task is the `summarization` entry of
llmjax.tasks: the same (source, target) pairs and generation as translation.

With `init_from=DIR` (a Hugging Face T5 directory, e.g. t5-small: config.json, model.safetensors
and spiece.model) it fine-tunes the pretrained model with its own vocabulary, the paper's setting
(T5 reports CNN/DM ROUGE-1/2/L 41.12/19.56/38.35 for T5-base, Table 14; no "summarize:" prefix is
added here). Without it the model starts from scratch with a 32k SentencePiece vocabulary trained
on the articles and summaries. TFDS downloads the datasets on first use: this needs the internet
once (or a data_dir prepared elsewhere as ArrayRecord).

  python -m llmjax.main --config=configs/summarize.py:init_from=/models/t5-small --workdir=runs/cnn
  python -m llmjax.main --config=configs/summarize.py:dataset=xsum --workdir=runs/xsum
  python -m llmjax.main --config=configs/summarize.py:tiny --workdir=...   # seconds (tests: mock data)
"""

from llmjax import config_lib, models
from llmjax.errors import UserError

# dataset -> (document feature, summary feature)
DATASETS = {'cnn_dailymail': ('article', 'highlights'), 'xsum': ('document', 'summary')}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, dataset='cnn_dailymail', init_from='',
                             steps=100_000, batch=64, lr=1e-3)
  if arg.dataset not in DATASETS:
    raise UserError(f'unknown dataset {arg.dataset!r}: choose one of {", ".join(DATASETS)}')
  c = config_lib.base_config()
  c.task.name = 'summarization'
  c.task.label_smoothing = 0.1
  c.model = models.model_config('t5', dropout_rate=0.1)  # T5 v1.0 small.
  c.model.init_from = arg.init_from
  c.data.name = arg.dataset
  c.data.text_keys = DATASETS[arg.dataset]
  c.data.splits = dict(train='train', validation='validation', test='test')
  c.data.max_len = 512
  c.data.buckets = (512,)
  c.data.target_max_len = 128
  c.tokenizer.kind = 'sentencepiece'
  c.tokenizer.vocab = (f'{arg.init_from}/spiece.model' if arg.init_from
                       else f'spm:{arg.dataset}:32000')
  c.num_train_steps = arg.steps
  c.batch_size = arg.batch
  c.eval_batch_size = 64
  c.optim.update(lr=arg.lr, schedule='cosine', warmup_frac=0.01, weight_decay=0.01)
  c.eval.every_steps = 5000
  c.eval.metric = 'rougeL'
  c.eval.num_beams = 4
  c.eval.length_penalty = 0.6
  c.eval.max_decode_examples = 1000
  c.checkpoint.every_steps = 5000
  c.log_every_steps = 100

  if arg.tiny:
    c.model.update(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=32)
    c.tokenizer.vocab = f'spm:{arg.dataset}:128'
    config_lib.tiny_run(c)
    c.data.target_max_len = 16
    c.eval.num_beams = 2
    c.eval.max_decode_examples = 8
  return c
