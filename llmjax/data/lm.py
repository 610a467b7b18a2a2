"""Language-model batches: documents -> token ids -> rows packed with several documents each.

A document's ids (its tokenizer appends EOS) become examples of at most `seq_len` next-token pairs
(`inputs` = ids[:-1], `targets` = ids[1:]); a longer document is cut into consecutive pieces that
overlap by one token, so every target is predicted once. Grain's first-fit packing then fills rows of
`seq_len` with whole pieces and marks them with segment ids (1, 2, ... per row; 0 = padding) and
positions that restart at 0 in every segment, so a model that masks attention by segment never
attends across documents.

Batches are dicts of numpy arrays for one process, all [b, seq_len]:
  inputs, targets, segment_ids, positions: int32;  weights: float32 (1 where a target counts)

Training: each process reads its own shard of the documents (every process_count-th, from its
index), shuffled per epoch by (seed, epoch), endlessly; it packs its own rows. Evaluation: every
process packs the whole split in stored order, identically, and keeps its rows of each global batch,
so all processes run the same number of evaluation steps; the last batch is filled with empty rows.
"""

from collections.abc import Callable, Iterator, Sequence
import itertools

import grain
import ml_collections
import numpy as np

from llmjax import assets
from llmjax.data import spm_train
from llmjax.data import text as text_lib
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError

_PREFETCH_BATCHES = 4


def split_document(ids: np.ndarray, seq_len: int) -> list[dict[str, np.ndarray]]:
  """Next-token examples of at most seq_len pairs from one document's ids (EOS included)."""
  ids = np.asarray(ids, np.int32)
  pieces = []
  for start in range(0, len(ids) - 1, seq_len):
    end = min(start + seq_len, len(ids) - 1)
    pieces.append({'inputs': ids[start:end], 'targets': ids[start + 1:end + 1]})
  return pieces


class _SplitDocuments(grain.experimental.FlatMapTransform):
  """Grain's flat-map form of `split_document`."""

  def __init__(self, seq_len: int):
    self.seq_len = seq_len
    # A document of n tokens gives ceil((n - 1) / seq_len) pieces; grain needs an upper bound.
    self.max_fan_out = 1 << 20

  def flat_map(self, ids):
    return split_document(ids, self.seq_len)


class LMData:
  """Packed next-token batches of a text corpus for one process."""

  # Packed text has no fixed number of batches per epoch: runs are sized in steps.
  steps_per_epoch = None

  def __init__(self, splits: dict[str, Sequence[str]], encode: Callable[[str], Sequence[int]], *,
               seq_len: int, batch_size: int, eval_batch_size: int, seed: int,
               vocab_size: int | None = None, process_index: int = 0, process_count: int = 1):
    for name, size in (('batch_size', batch_size), ('eval_batch_size', eval_batch_size)):
      if size % process_count:
        raise UserError(f'config.{name}={size} is not divisible by the {process_count} processes: '
                        f'use a multiple of {process_count}')
    self._splits = splits
    self._encode = encode
    self.vocab_size = vocab_size
    self._seq_len = seq_len
    self._rows = batch_size // process_count
    self._eval_rows = eval_batch_size // process_count
    self._eval_batch_size = eval_batch_size
    self._seed = seed
    self._process_index = process_index
    self._process_count = process_count
    self.num_documents = {name: len(docs) for name, docs in splits.items()}

  def _packed(self, ds: grain.MapDataset, rows: int, seed: int, shuffle_bins: bool):
    ds = ds.map(lambda text: np.asarray(self._encode(text), np.int32)).to_iter_dataset()
    ds = grain.experimental.FlatMapIterDataset(ds, _SplitDocuments(self._seq_len))
    lengths = {'inputs': self._seq_len, 'targets': self._seq_len}
    # One bin per row: first-fit packs the next `rows` rows from the documents as they come.
    ds = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, num_packing_bins=rows, seed=seed, shuffle_bins=shuffle_bins)
    return ds.map(_to_batch_row)

  def train_iter(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless train batches, from global step `start_step`.

    Resuming replays the packing of the steps before `start_step` (tokenizing, not training), so it
    costs time proportional to the steps skipped.
    """
    docs = grain.MapDataset.source(self._splits['train'])
    docs = docs.slice(slice(self._process_index, None, self._process_count))
    if not len(docs):
      raise UserError(f'process {self._process_index} has no training documents: the train split '
                      f'has {len(self._splits["train"])}, fewer than the {self._process_count} '
                      'processes')
    docs = docs.shuffle(seed=self._seed).repeat()
    ds = self._packed(docs, self._rows, self._seed, shuffle_bins=True).batch(self._rows)
    it = iter(grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=_PREFETCH_BATCHES))
    for _ in range(start_step):
      next(it)
    return it

  def eval_iter(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the packed batches of `split`, in stored order."""
    if split not in self._splits:
      raise UserError(f'no split {split!r} is configured (have {sorted(self._splits)}): add it to '
                      'config.data.splits')
    docs = grain.MapDataset.source(self._splits[split])
    rows = iter(self._packed(docs, self._eval_batch_size, 0, shuffle_bins=False))
    lo = self._process_index * self._eval_rows
    while True:
      batch = list(itertools.islice(rows, self._eval_batch_size))
      if not batch:
        return
      batch += [_empty_row(self._seq_len)] * (self._eval_batch_size - len(batch))
      yield _stack(batch[lo:lo + self._eval_rows])


def encoder(config: ml_collections.ConfigDict) -> tuple[Callable[[str], list[int]], int]:
  """(text -> ids ending in the end-of-document token, vocabulary size) for `config.tokenizer`."""
  tok = config.tokenizer
  if tok.kind == 'gpt2_bpe':
    bpe = tokenizers_lib.gpt2_bpe(assets.resolve(tok.vocab), assets.resolve(tok.merges))
    eot = bpe.token_to_id(tokenizers_lib.EOT)
    return (lambda text: bpe.encode(text).ids + [eot]), bpe.get_vocab_size()
  if tok.kind == 'sentencepiece':
    if tok.vocab.startswith('spm:'):
      # 'spm:CORPUS:VOCAB_SIZE[:TYPE]': trained on the corpus's train split once, then cached.
      corpus, size, *kind = tok.vocab[len('spm:'):].split(':')
      path = spm_train.train_cached(corpus, int(size), *kind, data_dir=config.data.data_dir)
    else:
      path = assets.resolve(tok.vocab)
    sp = tokenizers_lib.sentencepiece(path)
    return (lambda text: sp.encode(text) + [tokenizers_lib.SPM_EOS_ID]), sp.get_piece_size()
  raise UserError(f'config.tokenizer.kind={tok.kind!r} cannot tokenize documents for language '
                  'modelling: use gpt2_bpe or sentencepiece')


def build(config: ml_collections.ConfigDict, *, process_index: int = 0,
          process_count: int = 1) -> LMData:
  """Opens the configured text corpus and tokenizer; returns its packed batches."""
  encode, vocab_size = encoder(config)
  return LMData(text_lib.open_text(config.data), encode, seq_len=config.data.max_len,
                batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                seed=config.seed, vocab_size=vocab_size, process_index=process_index,
                process_count=process_count)


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


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
