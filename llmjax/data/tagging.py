"""Input pipeline for token classification (NER, POS tagging): tagged words -> padded numpy batches.

An example is a sentence of words with one tag each: a TFDS dataset with a Sequence(Text) feature
`config.data.text_keys[0]` ('tokens') and a Sequence(ClassLabel) feature `config.data.label_key`
('tags' for llmjax's wnut16 and oanc_pos, 'ner' or 'pos' for conll2003). Every sentence is encoded
once, when the data is built:

  * its words go through the WordPiece tokenizer as pre-tokenized input (a word never merges with
    its neighbours), and each word's tag goes on its FIRST piece; the other pieces get weight 0, so
    the loss and the metrics ignore them (Devlin et al. 2019, sec. 5.3; transformers' run_ner);
  * a word that the normalizer erases entirely (e.g. a lone zero-width space) is encoded as [UNK],
    so every word keeps a piece to carry its tag;
  * a sentence longer than `max_len` pieces ([CLS] and [SEP] included) keeps its longest prefix of
    whole words (only a first word longer than that is cut inside). The dropped words are counted
    in the log; they get no prediction and are not scored.

`build(config)` returns a `TaggingData` whose iterators give dicts of numpy arrays for one process:

  input_ids, token_type_ids, attention_mask: int32 [b, L]
  labels: int32 [b, L]     the word's tag id on its first piece, 0 elsewhere
  weights: float32 [b, L]  1 on the first piece of each word of a real example, else 0

with L the smallest of `config.data.buckets` that holds the longest row of the global batch. The
training order (a pure function of seed and step, resumable at any step), the evaluation order and
its weight-0 padding rows are those of the classification pipeline (`llmjax.data.pipeline`).
"""

from collections.abc import Iterator, Sequence
import dataclasses
import pathlib
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
import tokenizers

from llmjax import assets
from llmjax.data import files
from llmjax.data import pipeline
from llmjax.data import text as text_lib
from llmjax.data import tfds_sources
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Encoded:
  """One sentence, encoded: `ids` = [CLS] pieces [SEP]; `starts[j]` = the position of word j's first
  piece, for the words kept (a prefix of the sentence); `tags` their tag ids (-1: unknown, not
  scored; 0 for every word of a sentence to predict)."""
  ids: np.ndarray     # int32 [n]
  starts: np.ndarray  # int32 [words kept]
  tags: np.ndarray    # int32 [words kept]


class WordEncoder:
  """Words -> `Encoded` rows of at most `max_len` pieces, with the counts of what truncation and
  erased words changed."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, max_len: int):
    self.tokenizer = tokenizer
    self.max_len = max_len
    self._cls, self._sep = (tokenizer.token_to_id(t) for t in (tokenizers_lib.CLS,
                                                               tokenizers_lib.SEP))
    self.truncated_words = 0
    self.truncated_sentences = 0
    self.unk_words = 0

  def encode(self, sentences: Sequence[Sequence[str]],
             tags: Sequence[Sequence[int]] | None = None) -> list[Encoded]:
    """Encodes sentences of words with their tag ids; without tags (prediction) every word gets
    tag 0, so that the batch's weights mark each word's first piece."""
    # [CLS] and [SEP] are added here, after truncating whole words, not by the post-processor.
    encodings = self.tokenizer.encode_batch([list(s) for s in sentences], is_pretokenized=True,
                                            add_special_tokens=False)
    rows = []
    for i, (words, enc) in enumerate(zip(sentences, encodings)):
      starts = _first_pieces(enc.word_ids, len(words))
      if (starts < 0).any():
        erased = set(np.flatnonzero(starts < 0).tolist())
        self.unk_words += len(erased)
        words = [tokenizers_lib.UNK if j in erased else w for j, w in enumerate(words)]
        enc = self.tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        starts = _first_pieces(enc.word_ids, len(words))
      budget = self.max_len - 2
      ends = np.append(starts[1:], len(enc.ids))[:len(words)]  # word j: [starts[j], ends[j])
      kept = int(np.sum(ends <= budget))
      cut = int(ends[kept - 1]) if kept else min(budget, len(enc.ids))
      if not kept and len(words):
        kept = 1  # A first word longer than the budget: its first pieces still carry its tag.
      if kept < len(words):
        self.truncated_words += len(words) - kept
        self.truncated_sentences += 1
      row_tags = (np.zeros(kept, np.int32) if tags is None
                  else np.asarray(tags[i][:kept], np.int32))
      rows.append(Encoded(ids=np.array([self._cls, *enc.ids[:cut], self._sep], np.int32),
                          starts=starts[:kept] + 1, tags=row_tags))
    return rows


def _first_pieces(word_ids: Sequence[int | None], num_words: int) -> np.ndarray:
  """Position of each word's first piece (-1 for a word without pieces)."""
  starts = np.full(num_words, -1, np.int32)
  for position, word in reversed(list(enumerate(word_ids))):
    if word is not None:
      starts[word] = position
  return starts


class TaggingData:
  """A prepared token-classification dataset: tokenizer, tag set and batch iterators for one process.

  Attributes:
    tokenizer: the WordPiece tokenizer used for the batches.
    label_names: tag names, index = tag id.
    num_labels: number of tags.
    steps_per_epoch: global train batches per epoch (the remainder of the epoch is dropped).
    num_examples: sentences per configured split.
    truncated_words: words dropped by truncation per split (not scored).
  """

  def __init__(self, *, tokenizer: tokenizers.Tokenizer, label_names: Sequence[str],
               splits: dict[str, Sequence[tuple[Sequence[str], Sequence[int]]]], max_len: int,
               buckets: Sequence[int], batch_size: int, eval_batch_size: int, seed: int,
               process_index: int, process_count: int, text_key: str = 'tokens'):
    self.tokenizer = tokenizer
    self.label_names = list(label_names)
    self.num_labels = len(self.label_names)
    self._splits, self.truncated_words = {}, {}
    for name, sentences in splits.items():
      encoder, sentences = WordEncoder(tokenizer, max_len), list(sentences)
      self._splits[name] = encoder.encode([w for w, _ in sentences], [t for _, t in sentences])
      self.truncated_words[name] = encoder.truncated_words
      if encoder.truncated_words or encoder.unk_words:
        logging.warning('data %s: %d words of %d sentences dropped by truncation to max_len=%d '
                        '(not scored); %d words without pieces encoded as [UNK]', name,
                        encoder.truncated_words, encoder.truncated_sentences, max_len,
                        encoder.unk_words)
    self._encoder = WordEncoder(tokenizer, max_len)  # for predict_iter's inputs
    self.num_examples = {name: len(rows) for name, rows in self._splits.items()}
    self._text_key = text_key
    self._buckets = tuple(buckets)
    self._batch_size = batch_size
    self._eval_batch_size = eval_batch_size
    self._process_index = process_index
    self._process_count = process_count
    self._pad_id = tokenizer.token_to_id(tokenizers_lib.PAD)
    # Eval padding rows are an empty sentence, [CLS] [SEP]: a valid input with no word to score.
    self._filler = self._encoder.encode([[]])[0]
    self.steps_per_epoch = self.num_examples['train'] // batch_size
    if self.steps_per_epoch == 0:
      raise UserError(f'the train split has {self.num_examples["train"]} sentences, fewer than '
                      f'config.batch_size={batch_size}: lower the batch size or use more data')
    self._order_seed = pipeline._order_seed(seed)  # pylint: disable=protected-access

  def train_iter(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """The endless stream of this process's train batches, from global step start_step."""
    if start_step < 0:
      raise ValueError(f'start_step must be >= 0, got {start_step}')
    return pipeline.train_batches(self._splits['train'], self._batch_size, self._order_seed,
                                  start_step, lambda rows: self._collate(rows, self._batch_size))

  def eval_iter(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's batches of `split` in stored order; the last is padded with weight-0 rows."""
    if split not in self._splits:
      raise UserError(f'no split {split!r} is configured (have {sorted(self._splits)}): add it to '
                      'config.data.splits')
    return pipeline.eval_batches(self._splits[split], self._eval_batch_size,
                                 lambda rows: self._collate(rows, self._eval_batch_size))

  def predict_iter(self, path) -> Iterator[tuple[dict[str, np.ndarray], list[dict]]]:
    """Batches of the sentences in `path`, with each real row's input ({'tokens': words, ...}).

    `path` holds JSON lines with a list of words under the text key (other fields are kept), or
    plain text lines, split into words at whitespace. Blank lines are skipped.
    """
    inputs = read_word_inputs(path, self._text_key)
    for start in range(0, len(inputs), self._eval_batch_size):
      chunk = inputs[start:start + self._eval_batch_size]
      rows = self._encoder.encode([x['tokens'] for x in chunk])
      yield self._collate(rows, self._eval_batch_size), chunk

  def _collate(self, rows: list[Encoded], global_size: int) -> dict[str, np.ndarray]:
    """One global batch -> this process's rows, padded to a bucket length."""
    # Every process sees the whole global batch, so all pick the same bucket length.
    rows = rows + [self._filler] * (global_size - len(rows))
    longest = max(len(r.ids) for r in rows)
    length = next(b for b in self._buckets if b >= longest)  # rows are at most max_len long
    size = global_size // self._process_count
    lo = self._process_index * size
    batch = {
        'input_ids': np.full((size, length), self._pad_id, np.int32),
        'token_type_ids': np.zeros((size, length), np.int32),
        'attention_mask': np.zeros((size, length), np.int32),
        'labels': np.zeros((size, length), np.int32),
        'weights': np.zeros((size, length), np.float32),
    }
    for i, row in enumerate(rows[lo:lo + size]):
      batch['input_ids'][i, :len(row.ids)] = row.ids
      batch['attention_mask'][i, :len(row.ids)] = 1
      known = row.tags >= 0  # TFDS marks an unknown tag -1: kept for the shape, never scored
      batch['labels'][i, row.starts[known]] = row.tags[known]
      batch['weights'][i, row.starts[known]] = 1.0
    return batch


def read_word_inputs(path, text_key: str = 'tokens') -> list[dict]:
  """The sentences of a predict file, one per non-blank line, as {'tokens': words, ...}: a JSON
  object whose `text_key` is a list of words (or a string, split at whitespace; its other fields
  are kept), or a line of plain text, split at whitespace."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise UserError(f'--input={path}: no such file')
  lines, inputs = path.read_bytes().splitlines(), []
  for lineno, record, problem in files.read_records(path, 'jsonl'):
    where = f'{path}:{lineno}'
    if record is None:
      try:
        text = lines[lineno - 1].decode('utf-8')
      except UnicodeDecodeError:
        raise UserError(f'{where}: not UTF-8: save the file as UTF-8') from None
      if text.lstrip().startswith('{'):  # meant as JSON: never tag its punctuation as words
        raise UserError(f'{where}: {problem}: write one JSON object per line, or plain text')
      record = {text_key: text}
    words = record.pop(text_key, None)
    if isinstance(words, str):
      words = words.split()
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
      raise UserError(f'{where}: no list of words under {text_key!r}: write e.g. '
                      f'{{"{text_key}": ["New", "York"]}}')
    inputs.append({'tokens': words, **record})
  if not inputs:
    raise UserError(f'{path} holds no input lines')
  return inputs


class _Sentences:
  """A TFDS data source as a sequence of (words, tag ids); sentences whose word and tag counts
  differ are left out and counted, never aligned by guesswork."""

  def __init__(self, source: Sequence[Any], text_key: str, label_key: str, split: str):
    self._examples, skipped = [], 0
    for i in range(len(source)):
      ex = source[i]
      words = [text_lib.as_str(w) for w in ex[text_key]]
      tags = np.asarray(ex[label_key], np.int64)
      if len(words) != len(tags):
        skipped += 1
        continue
      self._examples.append((words, tags))
    if skipped:
      logging.warning('data %s: skipped %d of %d sentences whose numbers of words and tags differ',
                      split, skipped, len(source))

  def __len__(self) -> int:
    return len(self._examples)

  def __getitem__(self, index: int) -> tuple[list[str], np.ndarray]:
    return self._examples[index]


def build(config: ml_collections.ConfigDict, *, process_index: int = 0,
          process_count: int = 1) -> TaggingData:
  """Opens (preparing it on first use) the configured dataset and encodes its sentences."""
  data = config.data
  batch_size, eval_batch_size, buckets = pipeline.batching(config, process_index, process_count)
  text_keys = (data.text_keys,) if isinstance(data.text_keys, str) else tuple(data.text_keys)
  if len(text_keys) != 1:
    raise UserError(f'config.data.text_keys={text_keys} must name one feature, the words of each '
                    "sentence: e.g. ('tokens',)")
  sources = tfds_sources.open_splits(data.name, dict(data.splits),
                                     tfds_sources.resolve_data_dir(data))
  features = next(iter(sources.values())).dataset_info.features

  def sequence_of(key, kind, fix):
    feature = features[key] if key in features else None
    if not (isinstance(feature, tfds.features.Sequence) and isinstance(feature.feature, kind)):
      raise UserError(f'feature {key!r} of {data.name!r} is not a Sequence({kind.__name__}) '
                      f'(features: {sorted(features.keys())}): {fix}')
    return feature.feature

  sequence_of(text_keys[0], tfds.features.Text, 'set config.data.text_keys to the words')
  labels = sequence_of(data.label_key, tfds.features.ClassLabel,
                       'set config.data.label_key to the tags')
  if data.max_train_examples > 0:
    sources['train'] = pipeline._Prefix(sources['train'], data.max_train_examples)  # pylint: disable=protected-access
  tokenizer = tokenizers_lib.wordpiece(assets.resolve(config.tokenizer.vocab),
                                       lowercase=config.tokenizer.lowercase, max_len=data.max_len)
  tokenizer.no_truncation()  # TaggingData truncates whole words itself.
  result = TaggingData(
      tokenizer=tokenizer, label_names=labels.names,
      splits={name: _Sentences(src, text_keys[0], data.label_key, name)
              for name, src in sources.items()},
      max_len=data.max_len, buckets=buckets, batch_size=batch_size,
      eval_batch_size=eval_batch_size, seed=config.seed, process_index=process_index,
      process_count=process_count, text_key=text_keys[0])
  logging.info('data %s: %s sentences, %d tags %s, %d train steps per epoch', data.name,
               result.num_examples, result.num_labels, result.label_names, result.steps_per_epoch)
  return result
