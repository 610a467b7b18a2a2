"""What llmjax's own TFDS builders share: a split by hash, the asset source, counts in metadata.

Each builder in `tfds_sources.LOCAL_BUILDERS` turns a file from the asset cache (`llmjax.assets`)
into ArrayRecord splits the same way:
  * a parse function reads the whole source, assigns each example to a split with `split_of` (a
    function of a key string only, so independent of file order), and counts every line or example
    it skips and why in a dataclass;
  * `LocalBuilder._split_generators` runs it, logs the counts and stores them in
    `builder.info.metadata` (saved as metadata.json next to the data, so a prepared dataset keeps
    them), and each split's examples are written keyed by their `id`.
Subclasses define `ASSET`, `SPLITS`, what `_info` says (`features()`, `DESCRIPTION`, `HOMEPAGE`,
`CITATION`, `SUPERVISED_KEYS`) and `parse(asset_dir)`; `VERSION` when their data changes.

The token-tagging builders (`wnut16`, `oanc_pos`) also share `TaggedStats` and `add_tagged`, which
validate one sentence against the tag set and count it.
"""

import abc
from collections.abc import Sequence
import dataclasses
import hashlib
import inspect
import pathlib
from typing import Any

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from llmjax import assets

# (split, share in tenths): sha256 mod 10 -> 0-7 train, 8 validation, 9 test.
TRAIN_VALIDATION_TEST = (('train', 8), ('validation', 1), ('test', 1))


def split_of(key: str, shares: Sequence[tuple[str, int]] = TRAIN_VALIDATION_TEST) -> str:
  """The split of an example: `int(sha256(key), 16) mod sum(shares)`, cut into `shares` in order.

  With the default shares bucket 0-7 is train, 8 validation, 9 test (80/10/10).
  """
  bucket = int(hashlib.sha256(key.encode('utf-8')).hexdigest(), 16) % sum(n for _, n in shares)
  for split, n in shares:
    if bucket < n:
      return split
    bucket -= n
  raise AssertionError('unreachable')


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose source is an llmjax asset, parsed at once into examples per split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  ASSET: str                 # the `llmjax.assets` name holding the source file(s)
  SPLITS: tuple[str, ...] = tuple(s for s, _ in TRAIN_VALIDATION_TEST)
  KEY = 'id'                 # the feature that keys each stored example (unique within the data)
  DESCRIPTION = ''
  HOMEPAGE = ''
  CITATION = ''
  SUPERVISED_KEYS: tuple[str, str] | None = None

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 finds a builder's source through `importlib_resources`, which fails for a builder
    # that lives in a package. The answer is just the subclass's own file (TFDS uses it to look for
    # a checksums.tsv, which we do not have).
    return epath.Path(inspect.getfile(cls))

  @abc.abstractmethod
  def features(self) -> tfds.features.FeaturesDict:
    """The features of one example."""

  @abc.abstractmethod
  def parse(self, asset_dir: pathlib.Path) -> tuple[dict[str, list[dict[str, Any]]], Any]:
    """Returns (examples per split, a dataclass of counts) read from the fetched asset."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION, features=self.features(),
        supervised_keys=self.SUPERVISED_KEYS, homepage=self.HOMEPAGE, citation=self.CITATION,
        # Filled with the parse counts during preparation; saved as metadata.json next to the data.
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # The source comes from llmjax's asset cache, not from a URL.
    # The sources are small (a few MB): parse all of it here so the counts are known before any
    # split is written and can go into the dataset's metadata.
    examples, stats = self.parse(assets.fetch(self.ASSET))
    logging.info('%s: %s', self.name, stats)
    self.info.metadata.update(dataclasses.asdict(stats))
    return {split: self._generate_examples(examples[split]) for split in self.SPLITS}

  def _generate_examples(self, examples):
    # Keyed by id: TFDS orders stored examples by a hash of the key, so the stored order does not
    # depend on the source's order either.
    for ex in examples:
      yield ex[self.KEY], ex


# --- Token tagging: sentences of (token, tag) pairs. ----------------------------------------------

@dataclasses.dataclass
class TaggedStats:
  """What happened to each sentence: `sentences` = kept + the skip counts.

  A skipped sentence is never partly kept: one bad token makes its tags untrustworthy.
  """
  sentences: int = 0
  non_utf8: int = 0          # skipped: a line of it is not valid UTF-8
  malformed: int = 0         # skipped: a token line or token that cannot be read as (token, tag)
  unknown_tag: int = 0       # skipped: a tag outside the tag set (see `unknown_tags`)
  invalid_bio: int = 0       # skipped: I-X not after B-X or I-X (BIO tag sets only)
  kept: int = 0
  duplicate_text: int = 0    # kept sentences whose tokens equal an earlier kept one's (same split)
  per_split: dict[str, int] = dataclasses.field(default_factory=dict)
  tokens: dict[str, int] = dataclasses.field(default_factory=dict)
  tag_counts: dict[str, int] = dataclasses.field(default_factory=dict)     # over kept sentences
  unknown_tags: dict[str, int] = dataclasses.field(default_factory=dict)   # tag -> occurrences


def new_tagged(splits: Sequence[str]) -> tuple[dict[str, list[dict]], TaggedStats, set[str]]:
  """Empty examples per split, stats and the set of texts seen, for `add_tagged`."""
  stats = TaggedStats(per_split=dict.fromkeys(splits, 0), tokens=dict.fromkeys(splits, 0))
  return {s: [] for s in splits}, stats, set()


def add_tagged(examples: dict[str, list[dict]], stats: TaggedStats, seen: set[str],
               sentence_id: str, tokens: list[str], tags: list[str], tag_set: Sequence[str],
               *, bio: bool = False) -> None:
  """Checks one read sentence against `tag_set` (and BIO order) and keeps or counts it.

  The split is a function of the sentence's text, so a sentence that occurs twice (a retweet, a
  repeated heading) lands in one split and the held-out splits never hold a copy of training text.
  """
  unknown = [t for t in tags if t not in tag_set]
  if unknown:
    stats.unknown_tag += 1
    for t in unknown:
      stats.unknown_tags[t] = stats.unknown_tags.get(t, 0) + 1
    logging.debug('%s: unknown tags %s, skipped', sentence_id, sorted(set(unknown)))
    return
  if bio and any(t.startswith('I-') and prev[2:] != t[2:]
                 for prev, t in zip(['O'] + tags[:-1], tags)):
    stats.invalid_bio += 1
    logging.debug('%s: I- tag without its B- tag, skipped', sentence_id)
    return
  text = ' '.join(tokens)
  if text in seen:
    stats.duplicate_text += 1
  seen.add(text)
  split = split_of(text)
  examples[split].append({'id': sentence_id, 'tokens': tokens, 'tags': tags})
  stats.kept += 1
  stats.per_split[split] += 1
  stats.tokens[split] += len(tokens)
  for t in tags:
    stats.tag_counts[t] = stats.tag_counts.get(t, 0) + 1


def tagged_features(tag_set: Sequence[str]) -> tfds.features.FeaturesDict:
  """id, tokens (one string per word) and tags (one class per word) of a tagged sentence.

  A data source row holds `tokens` as a list of bytes and `tags` as a list of class ids.
  """
  return tfds.features.FeaturesDict({
      'id': tfds.features.Text(),
      'tokens': tfds.features.Sequence(tfds.features.Text()),
      'tags': tfds.features.Sequence(tfds.features.ClassLabel(names=list(tag_set))),
  })
