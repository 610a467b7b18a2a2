"""Language-model batches: documents -> token ids -> rows packed with several documents each.

A document's ids (its tokenizer appends EOS) become examples of at most `seq_len` next-token pairs
(`inputs` = ids[:-1], `targets` = ids[1:]); a longer document is cut into consecutive pieces that
overlap by one token, so every target is predicted once. Grain's first-fit packing then fills rows of
`seq_len` with whole pieces and marks them with segment ids (1, 2, ... per row; 0 = padding) and
positions that restart at 0 in every segment, so a model that masks attention by segment never
attends across documents.

Batches are dicts of numpy arrays for one process, all [b, seq_len]:
  inputs, targets, segment_ids, positions: int32;  weights: float32 (1 where a target counts)

Masked-LM batches (`build_masked`, for BERT pre-training) come from the same machinery with another
`ExampleFormat`: WordPiece ids cut into pieces of at most seq_len - 2 tokens, each wrapped as
`[CLS] piece [SEP]` and packed the same way; then every batch is masked (`llmjax.tasks.masking`) with
a generator seeded from (seed, step), so a resumed run masks exactly as an uninterrupted one:
  input_ids (masked), labels, token_type_ids (0), segment_ids, positions: int32;
  weights: float32 (1 at the positions to predict)

T5 span-corruption batches (`build_span_corruption`) pack (inputs, targets) pairs made from pieces of
each document (`span_corruption_format`), inputs [b, seq_len] and targets [b, T5's targets length]
with their own segment ids and positions; see `span_corruption_format`. Translation batches
(`build_translation`) pack the (source, target) pairs of a parallel corpus the same way.

Training: each process reads its own shard of the documents (every process_count-th, from its
index), shuffled per epoch by (seed, epoch), endlessly; it packs its own rows.
Documents are tokenized `_ENCODE_CHUNK` at a time (the tokenizer's batch encoding, one chunk ahead
in a thread of its own) and their ids kept (`DocumentIds`, bounded), so a document read again in a
later epoch or evaluation is not tokenized again; none of this changes a batch. Evaluation: every
process packs the whole split in stored order, identically, and keeps its rows of each global batch,
so all processes run the same number of evaluation steps; the last batch is filled with empty rows.
"""

import collections
from collections.abc import Callable, Iterator, Sequence
import dataclasses
import itertools
import threading

import grain
import ml_collections
import numpy as np

from llmjax import assets
from llmjax.data import text as text_lib
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError
from llmjax.tasks import masking

_PREFETCH_BATCHES = 4
# Documents tokenized in one call (`encode_batch`): enough to amortise the call and let a parallel
# tokenizer use its threads, few enough that the first batch does not wait for a whole corpus.
_ENCODE_CHUNK = 64
# Chunks read and tokenized ahead, in one thread beside the packing. Grain's default (16 threads,
# 500 elements) would tokenize hundreds of documents ahead and take the GIL from the packing.
_CHUNKS_AHEAD = 1
# Token ids kept for documents read again (later epochs, every evaluation): 128 MiB of int32,
# which holds the small corpora here whole; on a large corpus the least recently read go first.
_CACHED_TOKENS = 1 << 25


def split_document(ids: np.ndarray, seq_len: int, rng=None) -> list[dict[str, np.ndarray]]:
  """Next-token examples of at most seq_len pairs from one document's ids (EOS included)."""
  del rng  # Splitting is deterministic.
  ids = np.asarray(ids, np.int32)
  pieces = []
  for start in range(0, len(ids) - 1, seq_len):
    end = min(start + seq_len, len(ids) - 1)
    pieces.append({'inputs': ids[start:end], 'targets': ids[start + 1:end + 1]})
  return pieces


def split_masked_lm_document(ids: np.ndarray, seq_len: int, rng=None, *, cls_id: int,
                             sep_id: int) -> list[dict[str, np.ndarray]]:
  """Masked-LM examples `[CLS] piece [SEP]` of at most seq_len tokens from one document's ids
  (without special tokens); consecutive pieces do not overlap, and an empty document gives none."""
  del rng  # Masks are drawn per batch, by `finish`.
  ids = np.asarray(ids, np.int32)
  step = seq_len - 2
  return [{'input_ids': np.concatenate([[cls_id], ids[start:start + step], [sep_id]]).astype(np.int32)}
          for start in range(0, len(ids), step)]


@dataclasses.dataclass(frozen=True)
class ExampleFormat:
  """How documents become rows: what `LMData` varies between causal LM, masked LM and seq2seq.

  split: (document ids, seq_len, numpy Generator) -> examples, dicts of 1-D arrays no longer than
    `lengths` says. The generator is seeded from (seed, the document's place in the stream), so a
    document is split differently in every epoch but identically in a resumed run.
  to_row: one packed row (grain's features plus `<feature>_segment_ids` / `_positions`) -> a batch row.
  empty_row: seq_len -> the row that fills an evaluation batch (weights all 0).
  finish: optional (batch, numpy Generator) -> batch, applied to every batch with a generator
    seeded from (seed, step) in training and (seed, batch index) in evaluation.
  lengths: optional seq_len -> {feature: packed length}; None packs every feature to seq_len.
  """
  split: Callable[[np.ndarray, int, np.random.Generator], list[dict[str, np.ndarray]]]
  to_row: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
  empty_row: Callable[[int], dict[str, np.ndarray]]
  finish: Callable[[dict[str, np.ndarray], np.random.Generator], dict[str, np.ndarray]] | None = None
  lengths: Callable[[int], dict[str, int]] | None = None


class _SplitDocuments(grain.experimental.FlatMapTransform):
  """Grain's flat-map form of an `ExampleFormat.split`, over a chunk of (index, ids) documents."""

  def __init__(self, split, seq_len: int, seed: tuple[int, ...]):
    self.split = split
    self.seq_len = seq_len
    self.seed = seed
    # A chunk of documents of n tokens in all gives about n / seq_len pieces; grain needs a bound.
    self.max_fan_out = 1 << 30

  def flat_map(self, chunk):
    return [example for index, ids in chunk
            for example in self.split(ids, self.seq_len,
                                      np.random.default_rng((*self.seed, index)))]


class DocumentIds:
  """The ids of the documents of each split by index, `encode_batch` a list at a time, kept for
  documents read again (least recently read dropped past `max_tokens`). Safe to share between
  iterators in several threads: at worst two of them tokenize a document at the same time."""

  def __init__(self, splits: dict[str, Sequence], encode_batch: Callable[[list], list], *,
               max_tokens: int = _CACHED_TOKENS):
    self._splits = splits
    self._encode_batch = encode_batch
    self._max_tokens = max_tokens
    self._kept = collections.OrderedDict()  # (split, index) -> ids, least recently read first
    self._tokens = 0
    self._lock = threading.Lock()

  def get(self, split: str, indices: Sequence[int]) -> list:
    """The ids of documents `indices` of `split`: int32 arrays (tuples of them for pairs), read-only
    since they are shared."""
    found = {}
    with self._lock:
      for i in indices:
        if (split, i) in self._kept:
          self._kept.move_to_end((split, i))
          found[i] = self._kept[split, i]
    missing = [i for i in dict.fromkeys(indices) if i not in found]
    if missing:
      docs = self._splits[split]
      encoded = self._encode_batch([docs[i] for i in missing])
      with self._lock:
        for i, ids in zip(missing, encoded):
          found[i] = ids = _frozen(ids)
          if (split, i) in self._kept or _size(ids) > self._max_tokens:
            continue  # kept by another thread meanwhile, or too long to keep at all
          self._kept[split, i] = ids
          self._tokens += _size(ids)
          while self._tokens > self._max_tokens:
            self._tokens -= _size(self._kept.popitem(last=False)[1])
    return [found[i] for i in indices]


def _frozen(ids):
  """ids (or a tuple of them) as read-only int32 arrays: cached ids must never change."""
  if isinstance(ids, tuple):
    return tuple(_frozen(x) for x in ids)
  ids = np.asarray(ids, np.int32).view()  # a view, so a caller's own array keeps its flags
  ids.flags.writeable = False
  return ids


def _size(ids) -> int:
  return sum(x.size for x in ids) if isinstance(ids, tuple) else ids.size


class LMData:
  """Packed batches of a text corpus for one process: next-token pairs by default, or what
  `example_format` makes of each document (e.g. masked-LM pieces)."""

  # Packed text has no fixed number of batches per epoch: runs are sized in steps.
  steps_per_epoch = None

  def __init__(self, splits: dict[str, Sequence[str]], encode: Callable[[str], Sequence[int]], *,
               seq_len: int, batch_size: int, eval_batch_size: int, seed: int,
               vocab_size: int | None = None, process_index: int = 0, process_count: int = 1,
               example_format: ExampleFormat | None = None,
               encode_batch: Callable[[list], list] | None = None):
    """`encode` gives a document's ids (or a tuple of them: a translation pair); `encode_batch`,
    given, is used instead: the same for a list of documents in one call (a tokenizer's batch
    encoding, which runs in native code)."""
    for name, size in (('batch_size', batch_size), ('eval_batch_size', eval_batch_size)):
      if size % process_count:
        raise UserError(f'config.{name}={size} is not divisible by the {process_count} processes: '
                        f'use a multiple of {process_count}')
    self._splits = splits
    self._ids = DocumentIds(splits, encode_batch or (lambda docs: [encode(d) for d in docs]))
    self.vocab_size = vocab_size
    self._seq_len = seq_len
    self._rows = batch_size // process_count
    self._eval_rows = eval_batch_size // process_count
    self._eval_batch_size = eval_batch_size
    self._seed = seed
    self._process_index = process_index
    self._process_count = process_count
    self.num_documents = {name: len(docs) for name, docs in splits.items()}
    self._format = example_format or NEXT_TOKEN

  def _packed(self, split: str, order: grain.MapDataset, rows: int, seed: int, shuffle_bins: bool,
               split_seed: tuple[int, ...]):
    """Rows packed from the documents of `split` in `order` (their indices in the split);
    `split_seed` + a document's place in `order` seeds the generator its split gets."""
    ids = self._ids

    def encoded(chunk_index, indices):
      start = chunk_index * _ENCODE_CHUNK  # the place in `order` of the chunk's first document
      return list(enumerate(ids.get(split, indices), start))

    chunks = order.batch(_ENCODE_CHUNK, batch_fn=list).map_with_index(encoded)
    read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=_CHUNKS_AHEAD)
    ds = grain.experimental.FlatMapIterDataset(
        chunks.to_iter_dataset(read),
        _SplitDocuments(self._format.split, self._seq_len, split_seed))
    if self._format.lengths is not None:
      lengths = self._format.lengths(self._seq_len)
    else:
      # Packing needs the feature names before the first example: take them from a dummy document.
      names = self._format.split(np.zeros(self._seq_len, np.int32), self._seq_len, None)[0]
      lengths = {name: self._seq_len for name in names}
    # One bin per row: first-fit packs the next `rows` rows from the documents as they come.
    ds = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, num_packing_bins=rows, seed=seed, shuffle_bins=shuffle_bins)
    return ds.map(self._format.to_row)

  def train_iter(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless train batches, from global step `start_step`.

    Resuming replays the packing of the steps before `start_step` (tokenizing, not training), so it
    costs time proportional to the steps skipped.
    """
    # Indices into the split: shuffling them permutes exactly as shuffling the documents would.
    docs = grain.MapDataset.range(len(self._splits['train']))
    docs = docs.slice(slice(self._process_index, None, self._process_count))
    if not len(docs):
      raise UserError(f'process {self._process_index} has no training documents: the train split '
                      f'has {len(self._splits["train"])}, fewer than the {self._process_count} '
                      'processes')
    docs = docs.shuffle(seed=self._seed).repeat()
    # The index of a document in this endless stream differs between epochs: so do its splits.
    ds = self._packed('train', docs, self._rows, self._seed, shuffle_bins=True,
                      split_seed=(self._seed, 0, self._process_index)).batch(self._rows)
    if self._format.finish is not None:
      # The index of a batch in this iterator is its global step (resuming replays from step 0),
      # so the generator of a step is the same in a resumed run.
      finish, seed, process = self._format.finish, self._seed, self._process_index
      ds = ds.map_with_index(
          lambda step, batch: finish(batch, np.random.default_rng((seed, 0, step, process))))
    it = iter(grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=_PREFETCH_BATCHES))
    for _ in range(start_step):
      next(it)
    return it

  def eval_iter(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the packed batches of `split`, in stored order."""
    if split not in self._splits:
      raise UserError(f'no split {split!r} is configured (have {sorted(self._splits)}): add it to '
                      'config.data.splits')
    docs = grain.MapDataset.range(len(self._splits[split]))
    rows = iter(self._packed(split, docs, self._eval_batch_size, 0, shuffle_bins=False,
                             split_seed=(self._seed, 1)))
    lo = self._process_index * self._eval_rows
    for index in itertools.count():
      batch = list(itertools.islice(rows, self._eval_batch_size))
      if not batch:
        return
      batch += [self._format.empty_row(self._seq_len)] * (self._eval_batch_size - len(batch))
      batch = _stack(batch)
      if self._format.finish is not None:
        # The whole global batch, so every process count sees the same masks.
        batch = self._format.finish(batch, np.random.default_rng((self._seed, 1, index)))
      yield {k: v[lo:lo + self._eval_rows] for k, v in batch.items()}


def build(config: ml_collections.ConfigDict, *, process_index: int = 0,
          process_count: int = 1) -> LMData:
  """Opens the configured text corpus and tokenizer; returns its packed batches."""
  tok = tokenizers_lib.text_tokenizer(config)
  encode = lambda text: tok.encode(text) + [tok.eos_id]  # noqa: E731
  return LMData(text_lib.open_text(config.data), encode, seq_len=config.data.max_len,
                batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                seed=config.seed, vocab_size=tok.vocab_size, process_index=process_index,
                process_count=process_count,
                encode_batch=lambda texts: [ids + [tok.eos_id] for ids in tok.encode_many(texts)])


def _to_batch_row(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  segment_ids = packed['inputs_segment_ids'].astype(np.int32)
  return {
      'inputs': packed['inputs'].astype(np.int32),
      'targets': packed['targets'].astype(np.int32),
      'segment_ids': segment_ids,
      'positions': packed['inputs_positions'].astype(np.int32),
      'weights': (segment_ids > 0).astype(np.float32),
  }


def _empty_row(seq_len: int) -> dict[str, np.ndarray]:
  zeros = np.zeros(seq_len, np.int32)
  return {'inputs': zeros, 'targets': zeros, 'segment_ids': zeros, 'positions': zeros,
          'weights': np.zeros(seq_len, np.float32)}


NEXT_TOKEN = ExampleFormat(split=split_document, to_row=_to_batch_row, empty_row=_empty_row)


def masked_lm_format(*, cls_id: int, sep_id: int, mask_id: int, vocab_size: int,
                     special_ids: tuple[int, ...], rate: float = 0.15,
                     continuation: np.ndarray | None = None) -> ExampleFormat:
  """`[CLS] piece [SEP]` rows, masked by `masking.mask_tokens` at `rate`.

  continuation: [vocab_size] bool, True for word pieces that continue a word ('##s'); given, whole
  words are masked together.
  """

  def to_row(packed):
    segment_ids = packed['input_ids_segment_ids'].astype(np.int32)
    ids = packed['input_ids'].astype(np.int32)
    return {'input_ids': ids, 'token_type_ids': np.zeros_like(ids), 'segment_ids': segment_ids,
            'positions': packed['input_ids_positions'].astype(np.int32)}

  def empty_row(seq_len):
    zeros = np.zeros(seq_len, np.int32)
    return {'input_ids': zeros, 'token_type_ids': zeros, 'segment_ids': zeros, 'positions': zeros}

  def finish(batch, rng):
    ids = batch['input_ids']
    word_start = None if continuation is None else ~continuation[ids]
    inputs, labels, weights = masking.mask_tokens(
        ids, batch['segment_ids'] > 0, rng=rng, mask_id=mask_id, vocab_size=vocab_size,
        special_ids=special_ids, rate=rate, word_start=word_start)
    return {**batch, 'input_ids': inputs, 'labels': labels, 'weights': weights}

  return ExampleFormat(
      split=lambda ids, seq_len, rng: split_masked_lm_document(ids, seq_len, cls_id=cls_id,
                                                               sep_id=sep_id),
      to_row=to_row, empty_row=empty_row, finish=finish)


def build_masked(config: ml_collections.ConfigDict, *, process_index: int = 0,
                 process_count: int = 1) -> LMData:
  """Masked-LM batches of the configured text corpus, WordPiece-tokenized (`config.tokenizer`).

  `config.task.mask_rate` (default 0.15) and `config.task.whole_word_masking` (default False) set
  the masking.
  """
  tok_config = config.tokenizer
  if tok_config.kind != 'wordpiece':
    raise UserError(f'config.tokenizer.kind={tok_config.kind!r} cannot feed masked-LM pre-training: '
                    'use wordpiece (BERT needs [CLS], [SEP] and [MASK])')
  if config.data.max_len < 3:
    raise UserError(f'config.data.max_len={config.data.max_len} cannot hold [CLS] token [SEP]: use '
                    'max_len >= 3')
  tok = tokenizers_lib.wordpiece(assets.resolve(tok_config.vocab),
                                 lowercase=tok_config.get('lowercase', True), max_len=3)
  # Whole documents, without [CLS]/[SEP]: `split_masked_lm_document` cuts and wraps them.
  tok.no_truncation()
  vocab = tok.get_vocab()
  if tokenizers_lib.MASK not in vocab:
    raise UserError(f'vocabulary {tok_config.vocab} has no {tokenizers_lib.MASK} token: use a BERT '
                    'vocab.txt that contains it')
  vocab_size = tok.get_vocab_size()
  continuation = None
  if config.task.get('whole_word_masking', False):
    continuation = np.zeros(vocab_size, bool)
    for token, i in vocab.items():
      continuation[i] = token.startswith('##')
  special_ids = tuple(sorted(vocab[t] for t in (tokenizers_lib.PAD, tokenizers_lib.UNK,
                                                tokenizers_lib.CLS, tokenizers_lib.SEP,
                                                tokenizers_lib.MASK)))
  fmt = masked_lm_format(cls_id=vocab[tokenizers_lib.CLS], sep_id=vocab[tokenizers_lib.SEP],
                         mask_id=vocab[tokenizers_lib.MASK], vocab_size=vocab_size,
                         special_ids=special_ids, rate=config.task.get('mask_rate', 0.15),
                         continuation=continuation)
  return LMData(text_lib.open_text(config.data),
                lambda text: tok.encode(text, add_special_tokens=False).ids,
                seq_len=config.data.max_len, batch_size=config.batch_size,
                eval_batch_size=config.eval_batch_size, seed=config.seed, vocab_size=vocab_size,
                process_index=process_index, process_count=process_count, example_format=fmt,
                encode_batch=lambda texts: [
                    e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)])


def _seq2seq_format(split, inputs_length: int, targets_length: int,
                    decoder_start_id: int) -> ExampleFormat:
  """Packed (inputs, targets) pairs from `split`'s examples: the rows every seq2seq format shares."""

  def to_row(packed):
    targets = packed['targets'].astype(np.int32)
    segments = packed['targets_segment_ids'].astype(np.int32)
    starts = segments != np.concatenate([[0], segments[:-1]])
    decoder_inputs = np.where(starts, decoder_start_id, np.concatenate([[0], targets[:-1]]))
    return {'inputs': packed['inputs'].astype(np.int32),
            'input_segment_ids': packed['inputs_segment_ids'].astype(np.int32),
            'input_positions': packed['inputs_positions'].astype(np.int32),
            'targets': targets, 'decoder_inputs': decoder_inputs.astype(np.int32),
            'target_segment_ids': segments,
            'target_positions': packed['targets_positions'].astype(np.int32),
            'weights': (segments > 0).astype(np.float32)}

  def empty_row(seq_len):
    del seq_len
    source, target = np.zeros(inputs_length, np.int32), np.zeros(targets_length, np.int32)
    return {'inputs': source, 'input_segment_ids': source, 'input_positions': source,
            'targets': target, 'decoder_inputs': target, 'target_segment_ids': target,
            'target_positions': target, 'weights': np.zeros(targets_length, np.float32)}

  return ExampleFormat(split=split, to_row=to_row, empty_row=empty_row,
                       lengths=lambda seq_len: {'inputs': inputs_length,
                                                'targets': targets_length})


# T5's 100 <extra_id_i> tokens, placed after the tokenizer's vocabulary, <extra_id_0> the highest id.
NUM_SENTINELS = 100


def span_corruption_format(*, inputs_length: int, sentinel_ids: np.ndarray, eos_id: int,
                           noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                           decoder_start_id: int = 0) -> ExampleFormat:
  """T5's span corruption: each document is cut into pieces of the raw length that corrupts to
  `inputs_length` (`masking.span_corruption_lengths`), each piece gets its own random spans, and
  the (inputs, targets) pairs are packed side by side, pair i of a row in segment i of both.

  Rows: inputs, input_segment_ids, input_positions [b, inputs_length]; targets, decoder_inputs
  (targets shifted right within each segment, starting from `decoder_start_id`),
  target_segment_ids, target_positions [b, targets_length]: int32; weights [b, targets_length]:
  float32, 1 on real targets.
  """
  raw_length, targets_length = masking.span_corruption_lengths(
      inputs_length, noise_density=noise_density, mean_noise_span_length=mean_noise_span_length)
  spans = int(round(int(round(raw_length * noise_density)) / mean_noise_span_length))
  if spans > len(sentinel_ids):
    raise UserError(f'data.max_len={inputs_length} gives {spans} noise spans per example but there '
                    f'are {len(sentinel_ids)} sentinels: lower data.max_len or task.noise_density')

  def split(ids, seq_len, rng):
    del seq_len  # The raw length follows from inputs_length.
    examples = []
    for start in range(0, len(ids), raw_length):
      piece = ids[start:start + raw_length]
      if len(piece) < 2:  # Nothing to corrupt: one token cannot be split into kept and noise.
        continue
      noise = masking.random_spans_noise_mask(
          len(piece), rng=rng, noise_density=noise_density,
          mean_noise_span_length=mean_noise_span_length)
      inputs, targets = masking.span_corruption(piece, noise, sentinel_ids=sentinel_ids,
                                                eos_id=eos_id)
      examples.append({'inputs': inputs, 'targets': targets})
    return examples

  return _seq2seq_format(split, inputs_length, targets_length, decoder_start_id)


def build_span_corruption(config: ml_collections.ConfigDict, *, process_index: int = 0,
                          process_count: int = 1) -> LMData:
  """T5 span-corruption batches of the configured corpus: inputs of `config.data.max_len` tokens,
  `config.task.noise_density` and `config.task.mean_noise_span_length` as in T5 (0.15, 3).

  The tokenizer's vocabulary is followed by `NUM_SENTINELS` sentinel ids (the data's vocab_size
  counts them); the decoder starts from id 0 (T5's pad, as in the SentencePiece models llmjax trains).
  """
  tok = tokenizers_lib.text_tokenizer(config)
  vocab_size = tok.vocab_size + NUM_SENTINELS
  noise_density = config.task.noise_density
  mean_span = config.task.mean_noise_span_length
  if not 0 < noise_density < 1:
    raise UserError(f'config.task.noise_density={noise_density} must be in (0, 1): T5 uses 0.15')
  if mean_span < 1:
    raise UserError(f'config.task.mean_noise_span_length={mean_span} must be >= 1: T5 uses 3')
  fmt = span_corruption_format(
      inputs_length=config.data.max_len, sentinel_ids=vocab_size - 1 - np.arange(NUM_SENTINELS),
      eos_id=tok.eos_id, noise_density=noise_density, mean_noise_span_length=mean_span)
  return LMData(text_lib.open_text(config.data), tok.encode, seq_len=config.data.max_len,
                batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                seed=config.seed, vocab_size=vocab_size, process_index=process_index,
                process_count=process_count, example_format=fmt, encode_batch=tok.encode_many)


def translation_format(*, inputs_length: int, targets_length: int, eos_id: int,
                       decoder_start_id: int = 0) -> ExampleFormat:
  """(source, target) id pairs -> packed pairs, each side cut to its length with EOS last; a pair
  with an empty side is dropped. Rows as `span_corruption_format`'s."""

  def split(pair, seq_len, rng):
    del seq_len, rng
    source, target = pair
    if not len(source) or not len(target):
      return []
    return [{'inputs': np.append(source[:inputs_length - 1], eos_id).astype(np.int32),
             'targets': np.append(target[:targets_length - 1], eos_id).astype(np.int32)}]

  return _seq2seq_format(split, inputs_length, targets_length, decoder_start_id)


def build_translation(config: ml_collections.ConfigDict, *, process_index: int = 0,
                      process_count: int = 1) -> LMData:
  """Packed (source, target) batches of a parallel corpus: `config.data.text_keys` names the source
  and target features, `data.max_len` and `data.target_max_len` their lengths, and one tokenizer
  (a vocabulary shared by both languages, as Vaswani et al.) encodes both."""
  keys = tuple(config.data.text_keys)
  if len(keys) != 2:
    raise UserError(f'config.data.text_keys={keys} must name the source and the target feature of '
                    "a translation, e.g. ('en', 'de')")
  tok = tokenizers_lib.text_tokenizer(config)
  fmt = translation_format(inputs_length=config.data.max_len,
                           targets_length=config.data.target_max_len, eos_id=tok.eos_id)

  def encode_pairs(pairs):
    ids = tok.encode_many([text for pair in pairs for text in pair])
    return list(zip(ids[::2], ids[1::2]))

  return LMData(text_lib.open_text(config.data, keys),
                lambda pair: (tok.encode(pair[0]), tok.encode(pair[1])),
                seq_len=config.data.max_len, batch_size=config.batch_size,
                eval_batch_size=config.eval_batch_size, seed=config.seed, vocab_size=tok.vocab_size,
                process_index=process_index, process_count=process_count, example_format=fmt,
                encode_batch=encode_pairs)


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
