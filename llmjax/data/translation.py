"""Translation data: packed pairs to train on, one pair per row to evaluate and predict.

Training batches are `llmjax.data.lm.build_translation`'s: (source, target) pairs packed several to
a row. Packed rows cannot be decoded one sentence at a time, so evaluation rows hold one pair each
(the same row layout and the same truncation and EOS, segment id 1 on the pair), which gives the
same teacher-forced loss and lets the task translate each row's source by beam search. Each
evaluation row also carries what scoring the translation needs:

  decode     [b] float32: 1 for the first `config.eval.max_decode_examples` pairs of the split
             (-1: all), which the task translates and scores; 0 for the others and for padding
  reference  [b, n] uint8: the UTF-8 bytes of the pair's target TEXT, as the corpus has it (not
             re-made from token ids), zero-padded; n is a power of two >= 256 that fits the split

`predict_iter(path)` reads a user's sources, one per line (`llmjax.data.files.read_inputs`): plain
text, or JSON objects holding the source feature (`config.data.text_keys[0]`).
"""

from collections.abc import Iterator, Sequence
import pathlib

import ml_collections
import numpy as np

from llmjax.data import files
from llmjax.data import lm
from llmjax.data import text as text_lib
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError

# The tasks that read (source, target) text pairs: a translation, a (document, summary) corpus.
PAIR_TASKS = ('translation', 'summarization')

_MIN_REFERENCE_BYTES = 256


class TranslationData:
  """Batches of a parallel corpus for one process (see the module docstring)."""

  steps_per_epoch = None  # packed text: runs are sized in steps

  def __init__(self, packed: 'lm.LMData', pairs: dict[str, Sequence[tuple[str, str]]],
               tokenizer: tokenizers_lib.TextTokenizer, *, source_key: str, max_len: int,
               target_max_len: int, eval_batch_size: int, max_decode_examples: int = -1,
               process_index: int = 0, process_count: int = 1):
    self._packed = packed
    self._pairs = pairs
    self.tokenizer = tokenizer
    self.vocab_size = packed.vocab_size
    self.source_key = source_key
    self._format = lm.translation_format(inputs_length=max_len, targets_length=target_max_len,
                                         eos_id=tokenizer.eos_id)
    self._max_len = max_len
    self._target_max_len = target_max_len
    self._eval_batch_size = eval_batch_size
    self._eval_rows = eval_batch_size // process_count
    self._process_index = process_index
    self._max_decode = max_decode_examples

  def train_iter(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    return self._packed.train_iter(start_step)

  def pairs(self, split: str) -> Sequence[tuple[str, str]]:
    """The (source, target) texts of `split`, in stored order."""
    if split not in self._pairs:
      raise UserError(f'no split {split!r} is configured (have {sorted(self._pairs)}): add it to '
                      'config.data.splits')
    return self._pairs[split]

  def eval_iter(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of one-pair-per-row batches of `split`, in stored order."""
    pairs = self.pairs(split)
    texts = (pairs[i] for i in range(len(pairs)))  # by index: TFDS mock sources only support [i]
    encode = self.tokenizer.encode
    # A pair with an empty side is dropped, as in training (`translation_format`).
    examples = ((target, example) for source, target in texts
                for example in self._format.split((encode(source), encode(target)), 0, None))
    width = _reference_width(pairs)
    rows = []
    for index, (target, example) in enumerate(examples):
      reference = np.zeros(width, np.uint8)
      data = target.encode('utf-8')
      reference[:len(data)] = np.frombuffer(data, np.uint8)
      decode = self._max_decode < 0 or index < self._max_decode
      rows.append({**self._row(example['inputs'], example['targets']),
                   'decode': np.float32(decode), 'reference': reference})
      if len(rows) == self._eval_batch_size:
        yield self._local(rows)
        rows = []
    if rows:
      empty = {**self._row(np.zeros(0, np.int32), np.zeros(0, np.int32)), 'decode': np.float32(0),
               'reference': np.zeros(width, np.uint8)}
      yield self._local(rows + [empty] * (self._eval_batch_size - len(rows)))

  def predict_iter(self, path: str | pathlib.Path
                   ) -> Iterator[tuple[dict[str, np.ndarray], list[dict]]]:
    """(batch, the parsed inputs of its real rows) for the sources in the file `path`."""
    inputs = files.read_inputs(path, (self.source_key,))
    eos = self.tokenizer.eos_id
    for start in range(0, len(inputs), self._eval_batch_size):
      chunk = inputs[start:start + self._eval_batch_size]
      rows = [self._row(np.append(self.tokenizer.encode(x[self.source_key])[:self._max_len - 1],
                                  eos).astype(np.int32), np.zeros(0, np.int32)) for x in chunk]
      rows += [self._row(np.zeros(0, np.int32), np.zeros(0, np.int32))] * (
          self._eval_batch_size - len(rows))
      yield self._local(rows), chunk

  def _row(self, inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """The batch row of one pair (ids with EOS; empty arrays make a padding row), in the layout of
    the packed rows: what `translation_format` makes of a bin that holds this pair alone."""
    packed = {}
    for name, ids, length in (('inputs', inputs, self._max_len),
                              ('targets', targets, self._target_max_len)):
      real = np.arange(length) < len(ids)
      packed[name] = np.pad(ids, (0, length - len(ids))).astype(np.int32)
      packed[f'{name}_segment_ids'] = real.astype(np.int32)
      packed[f'{name}_positions'] = np.where(real, np.arange(length), 0).astype(np.int32)
    return self._format.to_row(packed)

  def _local(self, rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """This process's part of a global batch built identically by every process."""
    lo = self._process_index * self._eval_rows
    return {k: np.stack([r[k] for r in rows[lo:lo + self._eval_rows]]) for k in rows[0]}


def _reference_width(pairs: Sequence[tuple[str, str]]) -> int:
  """A power of two >= 256 that holds every target of `pairs` in UTF-8: splits of similar texts
  share the width, and so the compiled evaluation step."""
  longest = max((len(pairs[i][1].encode('utf-8')) for i in range(len(pairs))), default=0)
  return max(_MIN_REFERENCE_BYTES, 1 << (longest - 1).bit_length())


def build(config: ml_collections.ConfigDict, *, process_index: int = 0,
          process_count: int = 1) -> TranslationData:
  """The translation data of `config`: `config.data.text_keys` names the (source, target)
  features; `data.max_len`, `data.target_max_len` their lengths; `eval.max_decode_examples` how
  many pairs of an evaluated split are translated and scored."""
  packed = lm.build_translation(config, process_index=process_index, process_count=process_count)
  keys = tuple(config.data.text_keys)
  return TranslationData(
      packed, text_lib.open_text(config.data, keys), tokenizers_lib.text_tokenizer(config),
      source_key=keys[0], max_len=config.data.max_len, target_max_len=config.data.target_max_len,
      eval_batch_size=config.eval_batch_size,
      max_decode_examples=config.eval.get('max_decode_examples', -1),
      process_index=process_index, process_count=process_count)
