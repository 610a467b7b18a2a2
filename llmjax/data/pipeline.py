"""Input pipeline for text classification: TFDS (ArrayRecord) -> grain -> padded numpy batches.

`build(config)` opens the configured dataset and returns a `ClassificationData`, whose iterators
give dicts of numpy arrays for one process:

  input_ids, token_type_ids, attention_mask: int32 [b, L]   (attention_mask 1 = real token)
  label: int32 [b];  weight: float32 [b]   (1 = real example, 0 = padding row)

with b = global batch // process_count and L the smallest of `config.data.buckets` that holds the
longest sequence of the *global* batch, so every process agrees on the shape without talking to
the others.

Training order is a pure function of (config.seed, step): global step s is batch s % spe of epoch
s // spe (spe = steps_per_epoch), and every epoch is a fresh seeded permutation of the train split.
`train_iter(start_step)` therefore resumes a killed run exactly, and the order does not depend on
the number of processes. With `config.data.length_groups` = G > 0 (what transformers' Trainer
calls `group_by_length`), each epoch's permutation is cut into windows of G batches whose examples
are sorted by length before they are batched, and the epoch's batches are then shuffled: a batch
holds sentences of about one length, so it pads to a smaller bucket (the movie reviews at batch 32,
buckets 16/32/48/64/128, G = 50: 1,148 positions a step instead of 2,085 with random batches over
32/64/128). Evaluation reads a split in its stored order, pads the last batch with
weight-0 rows, and so counts every example exactly once.

With `config.data.folds` = K > 0 the configured splits are pooled and re-cut into fold
`config.data.fold` of K-fold cross-validation (`cross_validation_splits`).

Everything runs in the training process (no grain worker processes); a background thread
prepares the next few batches while the accelerator works.
"""

from collections.abc import Callable, Iterator, Sequence
import functools
import hashlib
import sys
from typing import Any

from absl import logging
import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
import tokenizers

from llmjax import assets
from llmjax.data import files
from llmjax.data import local_builder
from llmjax.data import text as text_lib
from llmjax.data import tfds_sources
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError

# Batches prepared ahead of the one being consumed. Reading and tokenizing a batch of 32 takes a
# few milliseconds, so a small buffer is enough to hide it behind a training step.
_PREFETCH_BATCHES = 4


class ClassificationData:
  """A prepared classification dataset: tokenizer, label set and batch iterators for one process.

  Attributes:
    tokenizer: the WordPiece tokenizer used for the batches.
    num_labels: number of classes.
    label_names: class names, index = label id.
    steps_per_epoch: global train batches per epoch (the remainder of the epoch is dropped).
    num_examples: examples per configured split, e.g. {'train': 8453, 'validation': 1069, ...}.
  """

  def __init__(self, *, tokenizer: tokenizers.Tokenizer, label_names: Sequence[str],
               splits: dict[str, Sequence[tuple[tuple[str, ...], Any]]], text_keys: Sequence[str],
               buckets: Sequence[int], batch_size: int, eval_batch_size: int, seed: int,
               process_index: int, process_count: int, length_groups: int = 0):
    self.tokenizer = tokenizer
    self.label_names = list(label_names)
    self.num_labels = len(self.label_names)
    self.regression = not self.label_names  # Real-valued labels.
    self._splits = dict(splits)
    self.num_examples = {name: len(ex) for name, ex in self._splits.items()}
    self._text_keys = tuple(text_keys)  # Field names of predict_iter's inputs.
    self._pair = len(text_keys) == 2
    self._buckets = tuple(buckets)
    self._batch_size = batch_size
    self._eval_batch_size = eval_batch_size
    self._process_index = process_index
    self._process_count = process_count
    self._pad_id = tokenizer.token_to_id(tokenizers_lib.PAD)
    # Filler for eval padding rows: the encoding of empty text, [CLS] [SEP] (+ [SEP] for pairs),
    # so a padding row is a valid input the model can run on; its weight of 0 removes it from
    # every metric.
    self._filler = tokenizer.encode('', '') if self._pair else tokenizer.encode('')
    self.steps_per_epoch = self.num_examples['train'] // batch_size
    if self.steps_per_epoch == 0:
      raise UserError(f'the train split has {self.num_examples["train"]} examples, fewer than '
                      f'config.batch_size={batch_size}: lower the batch size or use more data')
    self._order_seed = _order_seed(seed)
    self._length_groups = length_groups
    max_len = (tokenizer.truncation or {}).get('max_length')
    if max_len is None or max_len > self._buckets[-1]:
      raise ValueError(f'the tokenizer truncates to {max_len}, longer than the largest bucket '
                       f'{self._buckets[-1]}')

  def train_iter(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Returns the endless stream of this process's train batches, from global step start_step."""
    if start_step < 0:
      raise ValueError(f'start_step must be >= 0, got {start_step}')
    lengths = self._train_lengths() if self._length_groups else None
    return train_batches(self._splits['train'], self._batch_size, self._order_seed, start_step,
                         lambda examples: self._collate(examples, self._batch_size),
                         lengths, self._length_groups)

  @functools.cache
  def _train_lengths(self) -> np.ndarray:
    """Tokens (truncated) of every train example, for batches grouped by length."""
    train = self._splits['train']
    lengths = []
    for start in range(0, len(train), 1024):
      texts = [train[i][0] for i in range(start, min(start + 1024, len(train)))]
      texts = [t if self._pair else t[0] for t in texts]
      lengths += [len(e.ids) for e in self.tokenizer.encode_batch(texts)]
    return np.asarray(lengths)

  def examples(self, split: str) -> Sequence[tuple[tuple[str, ...], Any]]:
    """All of `split`'s examples as ((text, ...), label), in stored order (e.g. for a baseline
    fitted on the same texts)."""
    if split not in self._splits:
      raise UserError(f'no split {split!r} is configured (have {sorted(self._splits)}): add it to '
                      'config.data.splits')
    return self._splits[split]

  def eval_iter(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Returns this process's batches of `split` in stored order; the last is padded (weight 0)."""
    return eval_batches(self.examples(split), self._eval_batch_size,
                        lambda examples: self._collate(examples, self._eval_batch_size))

  def predict_iter(self, path) -> Iterator[tuple[dict[str, np.ndarray], list[dict]]]:
    """Batches of the inputs in `path` (JSON lines with the text fields, or one text per line
    for single-text tasks) and those inputs, for `--mode=predict`."""
    inputs = files.read_inputs(path, self._text_keys)
    for start in range(0, len(inputs), self._eval_batch_size):
      chunk = inputs[start:start + self._eval_batch_size]
      examples = [(tuple(x[k] for k in self._text_keys), 0.0 if self.regression else 0)
                  for x in chunk]
      yield self._collate(examples, self._eval_batch_size), chunk

  def _collate(self, examples: list[tuple[tuple[str, ...], Any]],
               global_size: int) -> dict[str, np.ndarray]:
    """Tokenizes one global batch and returns this process's rows, padded to a bucket length."""
    # Every process tokenizes the whole global batch (cheap) so that all of them pick the same
    # bucket length L without communicating; each then keeps only its own rows.
    texts = [t if self._pair else t[0] for t, _ in examples]
    encodings = self.tokenizer.encode_batch(texts)
    encodings += [self._filler] * (global_size - len(examples))
    labels = [label for _, label in examples] + [0] * (global_size - len(examples))
    weights = [1.0] * len(examples) + [0.0] * (global_size - len(examples))
    longest = max(len(e.ids) for e in encodings)
    length = next(b for b in self._buckets if b >= longest)  # truncation keeps longest <= last

    rows = global_size // self._process_count
    lo = self._process_index * rows
    batch = {
        'input_ids': np.full((rows, length), self._pad_id, np.int32),
        'token_type_ids': np.zeros((rows, length), np.int32),
        'attention_mask': np.zeros((rows, length), np.int32),
        'label': np.asarray(labels[lo:lo + rows], np.float32 if self.regression else np.int32),
        'weight': np.asarray(weights[lo:lo + rows], np.float32),
    }
    for i, enc in enumerate(encodings[lo:lo + rows]):
      n = len(enc.ids)
      batch['input_ids'][i, :n] = enc.ids
      batch['token_type_ids'][i, :n] = enc.type_ids
      batch['attention_mask'][i, :n] = 1
    if not self.regression:
      # TFDS marks unlabelled examples (e.g. GLUE test splits) with label -1: keep the row for the
      # shapes but give it weight 0 and a valid class id, so it never feeds a wrong label to the
      # loss.
      unlabelled = batch['label'] < 0
      batch['weight'][unlabelled] = 0.0
      batch['label'][unlabelled] = 0
    return batch


class _Examples:
  """Random-access view of a TFDS data source as ((text, ...), label) with `str` texts."""

  def __init__(self, source: Sequence[Any], text_keys: Sequence[str], label_key: str):
    self._source = source
    self._text_keys = tuple(text_keys)
    self._label_key = label_key

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> tuple[tuple[str, ...], int | float]:
    if not 0 <= index < len(self._source):
      raise IndexError(index)  # (ends iteration; ArrayRecord raises ValueError instead)
    ex = self._source[index]
    label = ex[self._label_key]
    label = float(label) if np.issubdtype(np.asarray(label).dtype, np.floating) else int(label)
    return tuple(text_lib.as_str(ex[k]) for k in self._text_keys), label


def build(config: ml_collections.ConfigDict, *, process_index: int = 0,
          process_count: int = 1) -> ClassificationData:
  """Opens (preparing it on first use) the configured dataset and returns its batch iterators."""
  data = config.data
  batch_size, eval_batch_size, buckets = batching(config, process_index, process_count)
  text_keys = (data.text_keys,) if isinstance(data.text_keys, str) else tuple(data.text_keys)
  if len(text_keys) not in (1, 2):
    raise UserError(f'config.data.text_keys={text_keys} must name one text feature or two (a '
                    'sentence pair)')
  split_specs = dict(data.splits)
  if 'train' not in split_specs:
    raise UserError(f'config.data.splits={split_specs} has no "train" entry: add one, e.g. '
                    "train='train[:90%]'")

  tokenizer = tokenizers_lib.wordpiece(assets.resolve(config.tokenizer.vocab),
                                       lowercase=config.tokenizer.lowercase, max_len=data.max_len)
  regression = config.task.name == 'regression'
  if data.name in files.FORMATS:
    splits, label_names = files.open_files(data, regression)
  else:
    splits, label_names = _open_tfds(data, text_keys, split_specs, regression)
  if data.folds:
    splits = cross_validation_splits(splits, data.folds, data.fold)
  if data.max_train_examples > 0:
    splits['train'] = _Prefix(splits['train'], data.max_train_examples)
  result = ClassificationData(
      tokenizer=tokenizer, label_names=label_names, splits=splits, text_keys=text_keys,
      buckets=buckets, batch_size=batch_size,
      eval_batch_size=eval_batch_size, seed=config.seed, process_index=process_index,
      process_count=process_count, length_groups=data.length_groups)
  logging.info('data %s: %s examples, labels %s, %d train steps per epoch', data.name,
               result.num_examples, result.label_names or 'real-valued', result.steps_per_epoch)
  return result


def _open_tfds(data, text_keys, split_specs, regression):
  """({split: examples}, label names) of a TFDS dataset: a ClassLabel feature for classification,
  a float feature (e.g. glue/stsb's label, movie_reviews' rating) for regression."""
  sources = tfds_sources.open_splits(data.name, split_specs, tfds_sources.resolve_data_dir(data))
  features = next(iter(sources.values())).dataset_info.features
  missing = [k for k in (*text_keys, data.label_key) if k not in features]
  if missing:
    raise UserError(f'dataset {data.name!r} has no feature {missing[0]!r} (features: '
                    f'{sorted(features.keys())}): fix config.data.text_keys / label_key')
  label_feature = features[data.label_key]
  if regression:
    if not np.issubdtype(np.dtype(label_feature.np_dtype), np.floating) or label_feature.shape:
      raise UserError(f'feature {data.label_key!r} of {data.name!r} is not a real-valued scalar: '
                      'set config.data.label_key to one for the regression task')
    label_names = []
  elif isinstance(label_feature, tfds.features.ClassLabel):
    label_names = label_feature.names
  else:
    raise UserError(f'feature {data.label_key!r} of {data.name!r} is not a class label: set '
                    'config.data.label_key to a ClassLabel feature (or task.name=regression for a '
                    'real-valued one)')
  splits = {name: _Examples(src, text_keys, data.label_key) for name, src in sources.items()}
  return splits, label_names


def batching(config: ml_collections.ConfigDict, process_index: int,
             process_count: int) -> tuple[int, int, tuple[int, ...]]:
  """(batch_size, eval_batch_size, buckets) of `config`, checked for this process (shared by the
  classification and token-classification pipelines)."""
  batch_size, eval_batch_size = int(config.batch_size), int(config.eval_batch_size)
  for field, value in (('batch_size', batch_size), ('eval_batch_size', eval_batch_size)):
    if value <= 0 or value % process_count:
      fixed = max(process_count, value - value % process_count)
      raise UserError(f'config.{field}={value} must be a positive multiple of the process count '
                      f'{process_count}: pass e.g. --config.{field}={fixed}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} not in [0, {process_count})')
  buckets = tuple(int(b) for b in config.data.buckets)
  if not buckets or any(b <= 0 for b in buckets) or list(buckets) != sorted(set(buckets)):
    raise UserError(f'config.data.buckets={buckets} must be increasing positive lengths: '
                    'e.g. --config.data.buckets="(32, 64, 128)"')
  if buckets[-1] != config.data.max_len:
    raise UserError(f'config.data.max_len={config.data.max_len} must equal the largest bucket '
                    f'{buckets[-1]}: set both to the same length')
  return batch_size, eval_batch_size, buckets


# Of the examples outside the test fold, the tenths held out for validation (checkpoint choice and
# early stopping): close to the 10% that llmjax's 80/10/10 builders hold out.
CV_VALIDATION_TENTHS = 1


def cross_validation_splits(splits: dict[str, Sequence[tuple[tuple[str, ...], Any]]], folds: int,
                            fold: int) -> dict[str, list[tuple[tuple[str, ...], Any]]]:
  """K-fold cross-validation (`config.data.folds` = K, `config.data.fold` = i): every example of
  the configured splits pooled, each in fold sha256(its texts) mod K, so copies of one text share a
  fold and never sit on both sides of it. Fold i is the test split; of the other examples, one in
  ten (by a second hash) is the validation split and the rest train. Over i = 0..K-1 every example
  is tested exactly once, by a model that never trained on it."""
  if folds < 2 or not 0 <= fold < folds:
    raise UserError(f'config.data.fold={fold} with config.data.folds={folds}: folds must be >= 2 '
                    f'and fold in [0, {folds})')
  fold_shares = tuple((str(k), 1) for k in range(folds))
  rest_shares = (('validation', CV_VALIDATION_TENTHS), ('train', 10 - CV_VALIDATION_TENTHS))
  out = {'train': [], 'validation': [], 'test': []}
  for examples in splits.values():
    for i in range(len(examples)):
      example = examples[i]
      key = '\x1f'.join(example[0])
      if local_builder.split_of(key, fold_shares) == str(fold):
        out['test'].append(example)
      else:
        out[local_builder.split_of('validation\x1f' + key, rest_shares)].append(example)
  return out


class _Prefix:
  """The first n examples of a data source (config.data.max_train_examples)."""

  def __init__(self, source: Sequence[Any], n: int):
    self._source = source
    self._n = min(n, len(source))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> Any:
    if not 0 <= index < self._n:
      raise IndexError(index)
    return self._source[index]


def train_batches(examples: Sequence[Any], batch_size: int, order_seed: int, start_step: int,
                  collate: Callable[[list], dict[str, np.ndarray]],
                  lengths: np.ndarray | None = None, length_groups: int = 0
                  ) -> Iterator[dict[str, np.ndarray]]:
  """The endless stream of collate(global train batch s) for s >= start_step (shared by the
  classification and token-classification pipelines); with `length_groups` > 0, batches of
  examples of similar `lengths` (see the module docstring)."""
  if length_groups > 0:
    order = LengthGroupedOrder(lengths, batch_size, order_seed, length_groups)
    ds = grain.MapDataset.range(start_step, sys.maxsize).map(
        lambda step: [examples[i] for i in order.batch(step)])
    return iter(ds.map(collate).to_iter_dataset(_read_options()))
  # Element s of the repeated dataset is global batch s: grain's batch keeps epochs apart
  # (dropping each epoch's remainder) and its shuffle permutes epoch e with seed
  # (order_seed + e), so the stream is a function of (seed, step) that can be sliced at any step.
  ds = grain.MapDataset.source(examples).shuffle(seed=order_seed)
  ds = ds.batch(batch_size, drop_remainder=True, batch_fn=list).repeat()
  return iter(ds[start_step:].map(collate).to_iter_dataset(_read_options()))


class LengthGroupedOrder:
  """The example indices of each global train batch when batches group examples by length.

  Epoch e: a permutation of the examples seeded by (order_seed, e), cut into windows of
  `length_groups` x batch_size; each window sorted by length (longest first, ties in permuted order)
  and cut into batches; the last n % batch_size examples of the epoch dropped, as without grouping;
  the epoch's batches permuted again, so that lengths do not rise and fall with the windows.
  """

  def __init__(self, lengths: np.ndarray, batch_size: int, order_seed: int, length_groups: int):
    self._lengths = np.asarray(lengths)
    self._batch_size = batch_size
    self._seed = order_seed
    self._window = batch_size * length_groups
    self.steps_per_epoch = len(self._lengths) // batch_size

  def batch(self, step: int) -> np.ndarray:
    return self._epoch(step // self.steps_per_epoch)[step % self.steps_per_epoch]

  @functools.lru_cache(maxsize=2)
  def _epoch(self, epoch: int) -> np.ndarray:
    """[steps_per_epoch, batch_size] example indices of one epoch."""
    rng = np.random.default_rng([self._seed, epoch])
    order = rng.permutation(len(self._lengths))
    windows = np.split(order, range(self._window, len(order), self._window))
    order = np.concatenate([w[np.argsort(-self._lengths[w], kind='stable')] for w in windows])
    batches = order[:self.steps_per_epoch * self._batch_size].reshape(self.steps_per_epoch, -1)
    return batches[rng.permutation(self.steps_per_epoch)]


def eval_batches(examples: Sequence[Any], batch_size: int,
                 collate: Callable[[list], dict[str, np.ndarray]]
                 ) -> Iterator[dict[str, np.ndarray]]:
  """collate(batch) for the examples in stored order, batch_size at a time (the last one shorter:
  collate pads it)."""
  ds = grain.MapDataset.source(examples).batch(batch_size, drop_remainder=False, batch_fn=list)
  return iter(ds.map(collate).to_iter_dataset(_read_options()))


def _order_seed(seed: int) -> int:
  """The 32-bit shuffle seed for config.seed; epoch e is shuffled with (order_seed + e) mod 2**32.

  Hashing keeps nearby config seeds apart: with seed + e directly, seed 1 would replay seed 0's
  epoch orders shifted by one epoch.
  """
  digest = hashlib.sha256(f'llmjax/train-order/{int(seed)}'.encode()).digest()
  return int.from_bytes(digest[:4], 'little')


def _read_options() -> grain.ReadOptions:
  # One background thread runs the whole pipeline ahead of the consumer (tokenization itself is
  # parallel inside `tokenizers`); results come back in order.
  return grain.ReadOptions(num_threads=1, prefetch_buffer_size=_PREFETCH_BATCHES)
