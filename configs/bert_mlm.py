"""Pretrain a small BERT encoder by masked language modelling on the Wikipedia articles shipped in the
gensim package (98 train / 8 held-out articles, 450k words).

Articles are tokenized with the uncased BERT WordPiece vocabulary (30,522 tokens), cut into pieces of
at most `max_len` - 2 tokens, each wrapped as `[CLS] piece [SEP]`, and packed into rows of `max_len`
with segment ids so no token attends across pieces. 15% of the tokens are chosen for prediction (80%
become [MASK], 10% a random token, 10% stay), with masks seeded by (seed, step). The model is scored
by the loss per masked token (and its perplexity and accuracy) on held-out articles.

`bert_base` is BERT-base at its real size (Devlin et al. 2019: 12 layers, hidden 768, 12 heads, FFN
3072, GELU, dropout 0.1; 109,482,240 encoder parameters, 109,514,298 with the MLM head as in
transformers' BertForMaskedLM) with the paper's pre-training: batch 256 sequences, 1M steps (90% at
length 128, as here, then 10% at 512: a second run with `--config.data.max_len=512` and
`init_from` the first's export), Adam lr 1e-4 (beta1 0.9, beta2 0.999), weight decay 0.01, 10k warmup
steps then linear decay. The paper trained on BooksCorpus + English Wikipedia (3.3B words); this reads
Wikipedia through tfds (BooksCorpus is not redistributed). It also trained next-sentence prediction,
which this omits (RoBERTa found it does not help). Reported: GLUE test average 79.6 (Table 1),
SQuAD v1.1 dev F1 88.5 (Table 2). It needs an accelerator mesh and the corpus
(`wikipedia/20230601.en`, on a machine with internet).

  python -m llmjax.main --config=configs/bert_mlm.py --workdir=runs/bert_mlm
  python -m llmjax.main --config=configs/bert_mlm.py:steps=500,layers=2 --workdir=...
  python -m llmjax.main --config=configs/bert_mlm.py:tiny --workdir=...   # seconds
  python -m llmjax.model_info --config=configs/bert_mlm.py:bert_base      # the paper's size
"""

from llmjax import config_lib, models


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, tiny=False, bert_base=False, steps=1000, layers=4, width=256, max_len=128,
                             batch=16, lr=5e-4)
  c = config_lib.base_config()
  c.task.name = 'mlm'
  c.model = models.model_config(
      'bert_mlm', max_position_embeddings=512, hidden_size=arg.width, num_layers=arg.layers,
      num_heads=arg.width // 64, intermediate_size=4 * arg.width)
  config_lib.enwiki_pretraining(c, arg)
  c.tokenizer.kind = 'wordpiece'
  c.tokenizer.vocab = 'asset:all-MiniLM-L6-v2/vocab.txt'  # uncased BERT's vocabulary
  c.tokenizer.lowercase = True
  c.optim.schedule = 'linear'
  c.optim.weight_decay = 0.01

  if arg.bert_base:
    c.model = models.model_config('bert_mlm')  # BERT-base: 12 layers, hidden 768, 12 heads.
    c.data.name = 'wikipedia/20230601.en'
    c.data.splits = dict(train='train[1%:]', validation='train[:0.5%]', test='train[0.5%:1%]')
    c.data.max_len = 128
    c.data.buckets = (128,)
    c.batch_size = 256
    c.eval_batch_size = 256
    c.num_train_steps = 1_000_000
    c.optim.update(lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.01, schedule='linear',
                   warmup_frac=0.01)  # 10k of 1M steps
    c.eval.every_steps = 10_000
    c.checkpoint.every_steps = 10_000
    c.log_every_steps = 100

  if arg.tiny:
    # The full vocabulary stays, so tiny runs read the real vocab.txt as well as the tests' fake one.
    c.model.update(max_position_embeddings=32, hidden_size=32, num_layers=2, num_heads=4,
                   intermediate_size=64)
    config_lib.tiny_run(c)
  return c
