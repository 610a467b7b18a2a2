"""Experiment configs: the defaults every config starts from, argument parsing, and validation.

A config file in `configs/` defines `get_config(arg=None)`. `arg` is the text after the colon in
`--config=configs/FILE.py:epochs=1,tiny`, parsed by `parse_arg` against typed defaults. Every config
starts from `base_config()`, which names every key llmjax knows; `validate` rejects keys that are not
there and values that cannot work, with one line that names the key and the fix, before anything
heavy starts.
"""

import difflib
import json
import math
import os
import re
import types

import ml_collections

from llmjax.errors import UserError
from llmjax import models, tasks
from llmjax.data import translation as translation_lib

# Parallelism presets (MaxText style): each is a table from the logical axis names the models give
# their parameters and activations to the mesh axis that splits them. `config.parallelism` joins
# presets with '+'; a logical axis two presets split is split over both mesh axes, in that order.
# `sequence` is Megatron's sequence parallelism (Korthikanti et al. 2022): it reuses the tensor axis,
# so between attention and MLP (residual stream, layer norms, dropout) each tensor device holds
# 1/tensor of the positions, and inside them heads and hidden units keep the split (see
# LOGICAL_AXES).
PARALLELISM_PRESETS = {
    'data': {'batch': 'data'},
    'fsdp': {'batch': 'fsdp', 'embed': 'fsdp'},  # ZeRO-3: parameters and optimizer state sharded.
    'tensor': {'heads': 'tensor', 'mlp': 'tensor', 'vocab': 'tensor'},  # Megatron.
    'sequence': {'length': 'tensor'},
}
# Every logical axis of the models, in the order Flax resolves them: where two axes of one array want
# the same mesh axis, the earlier takes it and the later is not split. So activations [batch, length,
# embed] split by row, not by width, under fsdp; and under tensor+sequence, attention and the MLP
# split by head or hidden unit, the residual stream by position. 'layers' is nn.scan's
# stacked-blocks axis: every device holds all of it.
LOGICAL_AXES = ('batch', 'heads', 'mlp', 'vocab', 'embed', 'length', 'kv', 'layers')
MESH_AXES = ('data', 'fsdp', 'tensor')


def base_config() -> ml_collections.ConfigDict:
  """Every key llmjax reads, with its default. Experiment configs change values, never add keys."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # The PRNG of dropout masks (jax.random key impls). threefry2x32 is portable and the same on any
  # mesh (on CPU llmjax lowers it unrolled, llmjax/threefry.py, and it is the fastest there);
  # rbg / unsafe_rbg use XLA's RngBitGenerator, cheaper on GPU (MaxText's default), with masks
  # that depend on the backend and sharding.
  c.rng_impl = 'threefry2x32'
  # The library of the train and eval steps' matrix products on an x86 CPU: 'onednn' runs each
  # product as one oneDNN call (XLA's library rewriter, one product per call, nothing fused into it),
  # 'xla' leaves them to XLA:CPU (YNNPACK and Eigen). oneDNN parallelises attention's batched
  # products over all cores, which YNNPACK does not (llmjax/train.py, `compiler_options`).
  # Other platforms ignore it. LLMJAX_CPU_DOT_LIBRARY in the environment changes the default: the
  # tests set 'xla', since JAX's persistent compilation cache cannot store a program that calls
  # oneDNN, and their tiny steps cost mostly their compile.
  c.cpu_dot_library = os.environ.get('LLMJAX_CPU_DOT_LIBRARY') or 'onednn'
  c.num_epochs = 3
  c.num_train_steps = -1          # > 0 stops after this many steps (overrides num_epochs).
  c.batch_size = 32               # Global batch, split over the data-parallel devices.
  c.eval_batch_size = 64

  # name, init_from ('' = random init; 'asset:NAME' or a path = a Hugging Face directory whose
  # architecture replaces the config's), and the family's architecture: BERT-base by default.
  c.model = models.model_config('bert_classifier')

  c.task = ml_collections.ConfigDict()
  c.task.name = 'classification'  # A key of llmjax.tasks.TASKS, e.g. classification, regression.
  # Training targets put this mass evenly over all classes (Szegedy et al. 2016); metrics stay NLL.
  c.task.label_smoothing = 0.0
  c.task.mask_rate = 0.15  # mlm: the fraction of tokens to predict (Devlin et al. 2019).
  c.task.whole_word_masking = False  # mlm: mask every piece of a chosen word.
  # Losses that compute fewer logits, with the same sums. mlm: run the prediction head only at
  # the masked positions, gathered into N slots per row (BERT's max_predictions_per_seq; a batch
  # with a row holding more runs it everywhere); 0 = at every position, -1 = N from the row length
  # and mask_rate (a row exceeds it about once in 10,000). -1 halves the step of a small BERT whose
  # head over 30,522 tokens is most of its FLOPs (benchmarks/throughput_vs_transformers.py, case b).
  c.task.max_predictions_per_seq = -1
  # causal_lm, sft: project to the vocabulary and take the loss ~this many tokens at a time, never
  # holding the logits of the whole batch, forward or backward; 0 = all at once.
  c.task.loss_chunk_size = 0
  # span_corruption (Raffel et al. 2020): the fraction of tokens hidden, in spans of this mean length.
  c.task.noise_density = 0.15
  c.task.mean_noise_span_length = 3.0

  c.data = ml_collections.ConfigDict()
  # llmjax's own builder, any tfds name (e.g. 'glue/sst2'), or csv | tsv | jsonl: a user's own
  # files, named per split in `splits` (see llmjax.data.files).
  c.data.name = 'movie_reviews'
  c.data.data_dir = ''            # '' = $LLMJAX_CACHE/tensorflow_datasets
  c.data.splits = ml_collections.ConfigDict(
      dict(train='train', validation='validation', test='test'))
  # Classification: one text feature, or two for sentence pairs; translation: (source, target).
  c.data.text_keys = ('sentence',)
  c.data.label_key = 'label'
  # The classes, index = label id. Empty: taken from the data (a ClassLabel's names, or the sorted
  # labels of a user's train file); a run saves them in its config.json and checkpoints.
  c.data.label_names = ()
  c.data.bad_rows = 'error'       # A user's files: 'error' stops at a bad row, 'skip' counts it.
  c.data.text_key = 'text'  # Language modelling: the feature holding each document.
  c.data.max_len = 128
  c.data.target_max_len = 128     # translation: target tokens per example (EOS included).
  c.data.buckets = (32, 64, 128)
  c.data.max_train_examples = -1
  # Classification and regression: > 0 pools all configured splits for K-fold cross-validation
  # and tests on fold `data.fold` (llmjax.data.pipeline.cross_validation_splits); 0 = the splits.
  c.data.folds = 0
  c.data.fold = 0
  # Classification and regression: > 0 batches examples of about one length, sorted within windows
  # of this many batches of the shuffled epoch (transformers' `group_by_length` uses 50), so fewer
  # pad tokens are computed; 0 = batches of random lengths. See llmjax/data/pipeline.py.
  c.data.length_groups = 0

  # sft (instruction tuning, llmjax.data.sft): how prompts and responses become token ids.
  c.data.chat_template = 'instruction'  # A name in sft.TEMPLATES, or '...{prompt}...{response}'.
  c.data.instruction = ''  # Phrases a tfds classification set: 'Is it positive?\n{sentence}'.
  c.task.max_new_tokens = 32  # Greedy answers stop at EOS or after this many tokens.
  c.task.eval_decode_examples = 256  # Answers generated per evaluation for exact_match; -1 = all.

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.kind = 'wordpiece'  # wordpiece | gpt2_bpe | sentencepiece
  # wordpiece: vocab.txt; gpt2_bpe: encoder.json (with `merges`); sentencepiece: the .model file.
  c.tokenizer.vocab = 'asset:all-MiniLM-L6-v2/vocab.txt'
  c.tokenizer.merges = ''
  c.tokenizer.lowercase = True  # wordpiece only

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adamw'               # adamw | adafactor (b1, b2, eps: adamw only)
  c.optim.lr = 3e-5
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.01
  c.optim.no_decay = r'(bias|scale)$'  # Regex over '/'-joined parameter paths: biases and LayerNorm.
  c.optim.schedule = 'linear'          # linear | cosine | constant after the warmup, or rsqrt.
  c.optim.warmup_frac = 0.1            # Fraction of the training steps spent warming up.
  c.optim.warmup_shape = 'linear'      # linear (from 0) | constant (at lr: T5's rsqrt).
  c.optim.clip_norm = 1.0              # Global gradient-norm clipping; 0 disables it.
  c.optim.grad_accum_steps = 1         # Microbatches per step; the batch is split into this many.
  c.optim.freeze = ''                  # Regex of parameters that do not train ('' = none).

  # LoRA (Hu et al. 2021, `llmjax.lora`): each matched weight W trains as W + alpha/rank * A B.
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0                      # 0 = off; on, only the adapters and `trainable` train.
  c.lora.alpha = 16.0                  # The adapters' scale is alpha / rank.
  # Regex of the weights to adapt: the paper's q and v (BERT and T5 'attention', GPT 'attn').
  c.lora.targets = r'(attention|attn)/(q|v)/kernel$'
  c.lora.trainable = r'^classifier/'   # Regex of what trains fully besides: a new task head.

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # One size may be -1.
  # What the mesh axes split: presets of PARALLELISM_PRESETS joined with '+' (data, fsdp, tensor,
  # sequence). `logical_rules`, (logical axis, mesh axes) pairs, replaces the presets' rule of each
  # axis it names and comes first, so it also wins a mesh axis two axes of one array want; e.g.
  # (('vocab', None),) keeps a vocabulary the tensor size does not divide whole.
  c.parallelism = 'data+fsdp+tensor'
  c.logical_rules = ()

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 0          # 0 = only at the end of each epoch.
  c.eval.metric = 'accuracy'      # Validation metric for early stopping and the best checkpoint.
  c.eval.mode = 'max'
  c.eval.patience = 0             # Evaluations without improvement before stopping; 0 = never stop.
  # translation: each evaluation also translates the split's sources by beam search and reports
  # BLEU and chrF (sacrebleu) besides the loss. HF's semantics: score = log p / length**penalty.
  c.eval.num_beams = 4
  c.eval.length_penalty = 1.0
  c.eval.max_decode_examples = -1  # Translate the first N pairs of a split; -1 = all, 0 = none.

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 200  # Also saved after every evaluation and at the end.
  c.checkpoint.keep = 2           # The last `keep` checkpoints are kept, plus the best one.
  # SIGTERM (preemption) saves at the current step and exits 0. Several processes agree on that
  # step every `preemption_sync_steps` steps (an all-gather of one flag between hosts).
  c.checkpoint.preemption_sync_steps = 10
  # A step whose loss or gradient norm is not finite: 'stop' ends the run naming the step, the last
  # checkpoint (from before it) intact; 'skip' leaves parameters and optimizer state unchanged and
  # counts it (metric `skipped_steps`).
  c.on_nonfinite = 'stop'

  c.log_every_steps = 20
  return c


def parse_arg(arg: str | None, **spec) -> types.SimpleNamespace:
  """Parses 'a=1,b=x,flag' against `spec` (name -> default; the default's type is the value's type).

  A bare name sets a bool to True. Unknown names and values of the wrong type are a UserError.
  """
  values = dict(spec)
  for item in filter(None, (arg or '').split(',')):
    name, has_value, text = item.partition('=')
    name = name.strip()
    if name not in spec:
      raise UserError(f'unknown config argument {name!r}: choose from {", ".join(spec)}')
    kind = type(spec[name])
    if not has_value:
      if kind is not bool:
        raise UserError(f'config argument {name!r} needs a value: write {name}=...')
      values[name] = True
    elif kind is bool:
      if text.lower() not in ('true', 'false', '1', '0'):
        raise UserError(f'config argument {name}={text!r} is not a bool: write {name}=true or false')
      values[name] = text.lower() in ('true', '1')
    else:
      try:
        values[name] = kind(text)
      except ValueError:
        raise UserError(f'config argument {name}={text!r} is not a {kind.__name__}') from None
  return types.SimpleNamespace(**values)


def enwiki_pretraining(c: ml_collections.ConfigDict, arg: types.SimpleNamespace) -> None:
  """What the small pretraining configs share: the gensim Wikipedia sample (its 8 held-out articles
  halved into validation and test), rows of `arg.max_len`, `arg.steps` steps of `arg.batch` rows at
  peak rate `arg.lr` after 5% warmup, and validation loss checked and saved every 250 steps."""
  c.data.name = 'enwiki_sample'
  c.data.splits = dict(train='train', validation='validation[:50%]', test='validation[50%:]')
  c.data.max_len = arg.max_len
  c.data.buckets = (arg.max_len,)
  c.num_train_steps = arg.steps
  c.batch_size = arg.batch
  c.eval_batch_size = 32
  c.optim.lr = arg.lr
  c.optim.warmup_frac = 0.05
  c.eval.every_steps = 250
  c.eval.metric = 'loss'
  c.eval.mode = 'min'
  c.checkpoint.every_steps = 250
  c.log_every_steps = 50


def minilm_finetuning(c: ml_collections.ConfigDict, arg: types.SimpleNamespace) -> None:
  """What the fine-tuning configs share: all-MiniLM-L6-v2 (the BERT checkpoint that ships offline)
  trained `arg.epochs` epochs of AdamW at peak rate `arg.lr` (linear warmup over 10% and decay),
  `arg.batch` rows of at most `arg.max_len` tokens bucketed by length, evaluated every 100 steps
  and at each epoch's end."""
  c.model.init_from = 'asset:all-MiniLM-L6-v2'
  c.num_epochs = arg.epochs
  c.batch_size = arg.batch
  c.eval_batch_size = 128
  c.optim.lr = arg.lr
  c.data.max_len = arg.max_len
  c.data.buckets = tuple(b for b in (32, 64, 128, 256) if b < arg.max_len) + (arg.max_len,)
  c.eval.every_steps = 100
  c.checkpoint.every_steps = 100
  c.log_every_steps = 20


def tiny_bert(c: ml_collections.ConfigDict) -> None:
  """The `tiny` variant of a fine-tuning config: a random two-layer BERT on the first 256 train
  examples for two epochs, every code path of a real run in seconds."""
  c.model.init_from = ''
  c.model.update(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4,
                 intermediate_size=64, max_position_embeddings=64)
  c.data.max_len = 32
  c.data.buckets = (16, 32)
  c.data.max_train_examples = 256
  c.batch_size = 16
  c.eval_batch_size = 32
  c.num_epochs = 2
  c.optim.lr = 5e-3
  c.eval.every_steps = 10
  c.checkpoint.every_steps = 5
  c.log_every_steps = 5


def tiny_run(c: ml_collections.ConfigDict, max_len: int = 32) -> None:
  """The run of a `tiny` variant: 6 steps of 8 rows of `max_len` tokens, evaluated and saved twice;
  every code path of a real run in seconds (the model's size is the config's to shrink)."""
  c.data.max_len = max_len
  c.data.buckets = (max_len,)
  c.num_train_steps = 6
  c.batch_size = 8
  c.eval_batch_size = 8
  c.eval.every_steps = 3
  c.checkpoint.every_steps = 3
  c.log_every_steps = 2


def token_classification(c: ml_collections.ConfigDict, arg: types.SimpleNamespace,
                         dataset: str) -> None:
  """What the token-classification configs share: all-MiniLM-L6-v2 with a fresh per-token classifier
  on `dataset` (features 'tokens' and 'tags'), `arg.epochs` epochs of `arg.batch` sentences at lr
  `arg.lr`, at most `arg.max_len` pieces; `arg.tiny`: a random two-layer BERT, in seconds."""
  c.task.name = 'token_classification'
  c.model.name = 'bert_token_classifier'
  c.model.init_from = 'asset:all-MiniLM-L6-v2'
  c.data.name = dataset
  c.data.text_keys = ('tokens',)
  c.data.label_key = 'tags'
  c.data.max_len = arg.max_len
  c.data.buckets = tuple(b for b in (32, 64) if b < arg.max_len) + (arg.max_len,)
  c.num_epochs = arg.epochs
  c.batch_size = arg.batch
  c.eval_batch_size = 128
  c.optim.lr = arg.lr
  c.log_every_steps = 20
  if arg.tiny:
    c.model.init_from = ''
    c.model.update(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4,
                   intermediate_size=64, max_position_embeddings=64)
    tiny_run(c, max_len=32)
    c.optim.lr = 5e-3


def _flatten(c, prefix=''):
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from _flatten(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises UserError naming the first key that is unknown or inconsistent."""
  if config.model.name not in models.FAMILIES:
    raise UserError(f'config.model.name={config.model.name!r} is not a known model: use one of '
                    f'{", ".join(models.FAMILIES)}')
  known = {k for k, _ in _flatten(base_config()) if not k.startswith('model.')}
  known |= {f'model.{k}' for k in ('name', 'init_from', *models.arch_fields(config.model.name))}
  for key, _ in _flatten(config):
    if key not in known:
      close = difflib.get_close_matches(key, known, n=1)
      hint = f': did you mean {close[0]}?' if close else ': remove it'
      raise UserError(f'unknown config key {key}{hint}')

  def get(key):
    value = config
    for part in key.split('.'):
      value = value[part]
    return value

  def need(ok, key, fix):
    if not ok:
      raise UserError(f'config.{key}={get(key)!r} {fix}')

  need(config.task.name in tasks.TASKS, 'task.name',
       f'is not a known task: use one of {", ".join(tasks.TASKS)}')
  need(config.optim.name in ('adamw', 'adafactor'), 'optim.name',
       'is not a known optimizer: use adamw or adafactor')
  need(config.optim.lr > 0, 'optim.lr', 'must be > 0: pass e.g. --config.optim.lr=3e-5')
  need(config.optim.weight_decay >= 0, 'optim.weight_decay', 'must be >= 0')
  need(0 <= config.optim.warmup_frac < 1, 'optim.warmup_frac', 'must be in [0, 1)')
  need(config.optim.warmup_shape in ('linear', 'constant'), 'optim.warmup_shape',
       'must be linear or constant')
  need(config.optim.schedule != 'rsqrt' or config.optim.warmup_frac > 0, 'optim.warmup_frac',
       'must be > 0 for the rsqrt schedule: it decays as sqrt(warmup / step)')
  need(config.optim.schedule in ('linear', 'cosine', 'constant', 'rsqrt'), 'optim.schedule',
       'must be linear, cosine, constant or rsqrt')
  need(config.optim.clip_norm >= 0, 'optim.clip_norm', 'must be >= 0 (0 disables clipping)')
  for key in ('optim.no_decay', 'optim.freeze', 'lora.targets', 'lora.trainable'):
    try:
      re.compile(get(key))
    except re.error as e:
      raise UserError(f'config.{key}={get(key)!r} is not a regex ({e})') from None
  need(config.lora.rank >= 0, 'lora.rank', 'must be >= 0 (0 = no LoRA; 8 is common)')
  need(config.lora.alpha > 0, 'lora.alpha', 'must be > 0 (the adapters are scaled by alpha / rank)')
  need(config.num_epochs > 0 or config.num_train_steps > 0, 'num_epochs',
       'must be > 0 (or set num_train_steps > 0)')
  for key in ('batch_size', 'eval_batch_size', 'optim.grad_accum_steps', 'log_every_steps',
              'checkpoint.keep'):
    need(get(key) > 0, key, 'must be > 0')
  for key in ('model.dtype', 'model.param_dtype'):
    need(get(key) in ('float32', 'bfloat16', 'float16'), key, 'must be float32, bfloat16 or float16')
  for key in (f'model.{k}' for k in config.model if k.endswith('dropout')):
    need(0 <= get(key) < 1, key, 'must be in [0, 1)')
  # Architecture checks live in each family's config dataclass (its __post_init__); this one is
  # repeated here because it is the most common mistake and costs nothing to catch early.
  if 'hidden_size' in config.model:
    need(config.model.num_heads > 0, 'model.num_heads', 'must be > 0')
    need(config.model.hidden_size % config.model.num_heads == 0, 'model.num_heads',
         f'must divide model.hidden_size={config.model.hidden_size}')
  need(config.eval.mode in ('max', 'min'), 'eval.mode', 'must be max or min')
  need(config.cpu_dot_library in ('onednn', 'xla'), 'cpu_dot_library', 'must be onednn or xla')
  need(config.rng_impl in ('threefry2x32', 'rbg', 'unsafe_rbg'), 'rng_impl',
       'must be threefry2x32, rbg or unsafe_rbg')
  need(0 <= config.task.label_smoothing < 1, 'task.label_smoothing', 'must be in [0, 1)')
  need(config.task.loss_chunk_size >= 0, 'task.loss_chunk_size', 'must be >= 0 (0 = no chunks)')
  need(config.task.max_predictions_per_seq >= -1, 'task.max_predictions_per_seq',
       'must be >= -1 (0 = head at every position, -1 = derived from max_len and mask_rate)')
  metrics = tasks.TASKS[config.task.name].metrics
  need(config.eval.metric in metrics, 'eval.metric',
       f'is not reported by task {config.task.name}: use one of {", ".join(metrics)}')
  need(config.eval.num_beams >= 1, 'eval.num_beams', 'must be >= 1 (1 = greedy decoding)')
  need(config.eval.max_decode_examples != 0 or config.eval.metric not in ('bleu', 'chrf'),
       'eval.max_decode_examples', f'is 0, so nothing is translated to compute eval.metric='
       f'{config.eval.metric!r} on: use -1 (all) or a count > 0')
  need(config.data.bad_rows in ('error', 'skip'), 'data.bad_rows', 'must be error or skip')
  need(not tasks.TASKS[config.task.name].sized_in_steps or config.num_train_steps > 0,
       'num_train_steps',
       f'must be > 0 for {config.task.name}: packed text has no fixed epoch length')
  need(config.tokenizer.kind in ('wordpiece', 'gpt2_bpe', 'sentencepiece'), 'tokenizer.kind',
       'must be wordpiece, gpt2_bpe or sentencepiece')
  need(config.eval.patience >= 0, 'eval.patience', 'must be >= 0 (0 = no early stopping)')
  need(config.on_nonfinite in ('stop', 'skip'), 'on_nonfinite', 'must be stop or skip')
  need(config.checkpoint.preemption_sync_steps > 0, 'checkpoint.preemption_sync_steps',
       'must be > 0 (steps between the processes agreeing on a SIGTERM)')
  need(config.data.folds == 0 or config.data.folds >= 2, 'data.folds',
       'must be 0 (the configured splits) or >= 2 (K-fold cross-validation, e.g. 5)')
  need(config.data.folds == 0 or 0 <= config.data.fold < config.data.folds, 'data.fold',
       f'must be in [0, data.folds={config.data.folds})')
  need(config.data.folds == 0 or config.task.name in ('classification', 'regression'),
       'data.folds', f'cross-validates classification and regression only, not '
       f'{config.task.name}: set it to 0')
  need(config.data.length_groups >= 0, 'data.length_groups',
       'must be >= 0 (0 = batches of random lengths; e.g. 50)')
  need(config.data.length_groups == 0 or config.task.name in ('classification', 'regression'),
       'data.length_groups', f'groups batches by length for classification and regression only, '
       f'not {config.task.name}: set it to 0')
  buckets = tuple(config.data.buckets)
  need(list(buckets) == sorted(set(buckets)) and buckets and buckets[0] > 2, 'data.buckets',
       'must be increasing lengths > 2')
  need(buckets[-1] == config.data.max_len, 'data.max_len',
       f'must equal the last bucket {buckets[-1]}: set data.buckets to end at data.max_len')
  # Learned and sinusoidal position tables end at max_position_embeddings.
  tabled_positions = config.model.get('position', 'learned') in ('learned', 'sinusoidal')
  translation = config.task.name in translation_lib.PAIR_TASKS
  if tabled_positions and 'max_position_embeddings' in config.model:
    for key in ('data.max_len', 'data.target_max_len') if translation else ('data.max_len',):
      need(get(key) <= config.model.max_position_embeddings, key,
           f'exceeds model.max_position_embeddings={config.model.max_position_embeddings}')
  need(1 <= len(config.data.text_keys) <= 2, 'data.text_keys', 'must name one or two text features')
  if translation:
    need(len(config.data.text_keys) == 2, 'data.text_keys',
         "must name the source and target features, e.g. ('en', 'de')")
    need(config.data.target_max_len >= 2, 'data.target_max_len', 'must be >= 2 (a token and EOS)')
  for split in ('train', 'validation', 'test'):
    need(split in config.data.splits, 'data.splits', f'lacks the {split!r} split')

  shape = mesh_shape(config.mesh, num_devices)
  dp = shape['data'] * shape['fsdp']
  for key in ('batch_size', 'eval_batch_size'):
    need(config[key] % dp == 0, key,
         f'is not divisible by the data-parallel size data*fsdp={dp}: use a multiple of {dp}')
  need(config.batch_size % (dp * config.optim.grad_accum_steps) == 0, 'optim.grad_accum_steps',
       f'splits batch_size={config.batch_size} into microbatches not divisible by data*fsdp={dp}')
  parallelism_presets(config.parallelism)
  mesh_axes = set(MESH_AXES)
  for rule in config.logical_rules:
    need(rule[0] in LOGICAL_AXES, 'logical_rules',
         f'names an unknown logical axis {rule[0]!r}: use one of {", ".join(LOGICAL_AXES)}')
    axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
    for axis in axes:
      need(axis is None or axis in mesh_axes, 'logical_rules',
           f'maps {rule[0]!r} to an unknown mesh axis {axis!r}')


def parallelism_presets(parallelism: str) -> list[str]:
  """'fsdp+tensor' -> ['fsdp', 'tensor']; a name not in PARALLELISM_PRESETS is a UserError."""
  names = parallelism.split('+')
  for name in names:
    if name not in PARALLELISM_PRESETS:
      raise UserError(f'config.parallelism={parallelism!r} names an unknown preset {name!r}: join '
                      f'presets of {", ".join(PARALLELISM_PRESETS)} with +, e.g. fsdp+tensor')
  return names


def mesh_shape(mesh: ml_collections.ConfigDict, num_devices: int) -> dict[str, int]:
  """Mesh sizes with the one -1 filled in from the device count."""
  sizes = {axis: int(mesh.get(axis, 1)) for axis in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
    raise UserError(f'config.mesh={dict(sizes)} may hold one -1 and otherwise positive sizes')
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if num_devices % fixed:
      raise UserError(f'config.mesh={dict(sizes)}: {num_devices} devices cannot be split by {fixed}; '
                      f'choose sizes whose product divides {num_devices}')
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise UserError(f'config.mesh={dict(sizes)} needs {math.prod(sizes.values())} devices but '
                    f'{num_devices} are present: make the product {num_devices} or set one size to -1')
  return sizes


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
