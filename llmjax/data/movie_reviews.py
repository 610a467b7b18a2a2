"""TFDS builder `movie_reviews`: Rotten Tomatoes review snippets labelled positive/negative.

Source: `movieReviewSnippets_GroundTruth.txt` from the VADER distribution (vaderSentiment 3.3.2
sdist, fetched as the `movie-reviews` asset). Each line is `id <TAB> mean_rating <TAB> sentence`:
10,605 sentence-level snippets of Rotten Tomatoes reviews (the sentence polarity data of Pang & Lee,
ACL 2005, "Seeing stars"; the VADER README attributes them to Pang & Lee 2004), each with the mean
of about 20 human sentiment ratings on a -4..+4 scale (Hutto & Gilbert, "VADER: A Parsimonious
Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM 2014).

Labels: `positive` iff mean rating > 0, `negative` iff < 0; ratings of exactly 0 carry no polarity
and are dropped. Lines that are not valid UTF-8, malformed lines (not exactly three tab-separated
fields, an empty id, a rating that is not a finite number in [-4, 4], or an empty sentence) and
repeats of an id already seen are skipped and counted, never guessed at. The counts are logged and
stored in `builder.info.metadata` (see `ParseStats`). On the vaderSentiment 3.3.2 file: 10,605
lines, none skipped, 37 with rating 0 dropped, 10,568 kept (5,242 positive, 5,326 negative).

Splits (80/10/10): an example's split depends only on its id, so it is deterministic and
independent of line order: `int(sha256(id.encode('utf-8')).hexdigest(), 16) % 10` is 0-7 for
train, 8 for validation, 9 for test.

Written as ArrayRecord so that no TensorFlow is needed:
  builder = MovieReviews(data_dir=..., file_format='array_record')
  builder.download_and_prepare(file_format='array_record')
  source = builder.as_data_source(split='train')   # or tfds.data_source('movie_reviews', ...)
"""

import dataclasses
import math
import pathlib

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from llmjax.data import local_builder

ASSET = 'movie-reviews'
FILENAME = 'movieReviewSnippets_GroundTruth.txt'
LABEL_NAMES = ['negative', 'positive']
SPLITS = ('train', 'validation', 'test')
MAX_ABS_RATING = 4.0


def split_of(snippet_id: str) -> str:
  """Returns the split of a snippet: sha256(id) mod 10 -> 0-7 train, 8 validation, 9 test."""
  return local_builder.split_of(snippet_id)


@dataclasses.dataclass
class ParseStats:
  """What happened to each line of the source file; `lines` = sum of all other line counts."""
  lines: int = 0
  non_utf8: int = 0          # skipped: not valid UTF-8
  malformed: int = 0         # skipped: field count, id, rating or sentence unusable
  duplicate_id: int = 0      # skipped: id already seen (its split would be ambiguous)
  zero_rating: int = 0       # dropped: mean rating exactly 0, no polarity
  labelled: int = 0          # kept
  positive: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
  negative: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))


def parse_snippets(path: pathlib.Path) -> tuple[dict[str, list[dict]], ParseStats]:
  """Reads the ground-truth file into labelled examples per split, and counts what was skipped."""
  examples = {s: [] for s in SPLITS}
  stats = ParseStats()
  seen = set()
  # Read bytes and decode line by line: a line that is not UTF-8 must neither take the whole file
  # down nor be decoded (e.g. as latin-1) into a sentence its raters never saw. (The vaderSentiment
  # 3.3.2 file has no such line; the check guards other copies.)
  for lineno, raw in enumerate(path.read_bytes().splitlines(), start=1):
    stats.lines += 1
    try:
      line = raw.decode('utf-8')
    except UnicodeDecodeError:
      stats.non_utf8 += 1
      logging.debug('%s:%d: not UTF-8, skipped', path.name, lineno)
      continue
    fields = line.split('\t')
    rating = math.nan
    if len(fields) == 3:
      snippet_id, rating_str, sentence = fields[0].strip(), fields[1].strip(), fields[2].strip()
      try:
        rating = float(rating_str)
      except ValueError:
        pass
    if (len(fields) != 3 or not snippet_id or not sentence or not math.isfinite(rating)
        or abs(rating) > MAX_ABS_RATING):
      stats.malformed += 1
      logging.debug('%s:%d: malformed, skipped: %r', path.name, lineno, line[:80])
      continue
    if snippet_id in seen:
      stats.duplicate_id += 1
      logging.debug('%s:%d: duplicate id %r, skipped', path.name, lineno, snippet_id)
      continue
    seen.add(snippet_id)
    if rating == 0:
      stats.zero_rating += 1
      continue
    label = int(rating > 0)
    split = split_of(snippet_id)
    examples[split].append({'id': snippet_id, 'sentence': sentence, 'rating': rating,
                            'label': label})
    stats.labelled += 1
    (stats.positive if label else stats.negative)[split] += 1
  return examples, stats


_CITATION = r"""
@inproceedings{hutto2014vader,
  title={VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media Text},
  author={Hutto, C. J. and Gilbert, Eric},
  booktitle={Proceedings of the International AAAI Conference on Web and Social Media (ICWSM)},
  year={2014}
}
@inproceedings{pang2005seeing,
  title={Seeing stars: Exploiting class relationships for sentiment categorization with respect to
         rating scales},
  author={Pang, Bo and Lee, Lillian},
  booktitle={Proceedings of ACL},
  year={2005}
}
"""


class MovieReviews(local_builder.LocalBuilder):
  """Rotten Tomatoes snippets with VADER mean ratings, binarised at 0 (see module docstring)."""

  ASSET = ASSET
  SPLITS = SPLITS
  DESCRIPTION = (
      'Rotten Tomatoes review snippets (Pang & Lee 2005) with mean human sentiment ratings from '
      'VADER (Hutto & Gilbert 2014), labelled positive iff the mean rating > 0 (ratings of 0 '
      'dropped). Split 80/10/10 by sha256(id) mod 10. Skipped-line counts are in info.metadata.')
  HOMEPAGE = 'https://github.com/cjhutto/vaderSentiment'
  CITATION = _CITATION
  SUPERVISED_KEYS = ('sentence', 'label')

  def features(self):
    return tfds.features.FeaturesDict({
        'id': tfds.features.Text(),
        'sentence': tfds.features.Text(),
        'rating': tfds.features.Scalar(dtype=np.float32),
        'label': tfds.features.ClassLabel(names=LABEL_NAMES),
    })

  def parse(self, asset_dir):
    return parse_snippets(asset_dir / FILENAME)
