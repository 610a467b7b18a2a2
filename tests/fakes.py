"""Small synthetic stand-ins for the downloadable assets, for fast tests without network access.

`make_fake_assets(cache_dir)` writes, in the layout of `llmjax.assets` (`<cache>/assets/<name>/`
with a `.complete` marker written last):
  * `movie-reviews`: a `movieReviewSnippets_GroundTruth.txt` of short synthetic sentences whose
    polarity is learnable from words like 'good'/'bad', plus a known number of bad lines
    (see the FAKE_* constants) that the builder must skip or drop.
  * `all-MiniLM-L6-v2`: only a tiny BERT-style `vocab.txt` covering those sentences.
Point `LLMJAX_CACHE` at `cache_dir` to use them.
"""

import json
import pathlib

import numpy as np

POSITIVE_WORDS = ('good', 'great', 'wonderful', 'fun', 'brilliant', 'moving', 'funny', 'best')
NEGATIVE_WORDS = ('bad', 'awful', 'boring', 'dull', 'terrible', 'worst', 'stupid', 'mess')
NEUTRAL_WORDS = ('the', 'a', 'movie', 'film', 'plot', 'story', 'actors', 'cast', 'director',
                 'script', 'is', 'was', 'and', 'but', 'this', 'it', 'very', 'quite', 'really',
                 'with', 'of', 'in', 'its', 'scenes', 'ending', 'music', 'time', 'too')
PUNCTUATION = ('.', ',', '!', '?', "'")
SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
# A continuation piece so that tests see WordPiece splitting ('movies' -> 'movie', '##s').
SUBWORDS = ('##s',)
VOCAB = SPECIAL_TOKENS + POSITIVE_WORDS + NEGATIVE_WORDS + NEUTRAL_WORDS + PUNCTUATION + SUBWORDS

# Lines added on top of the `num_sentences` labelled ones; the builder must not label any of them.
FAKE_NON_UTF8 = 2       # a latin-1 byte inside an otherwise fine line
FAKE_MALFORMED = 4      # two fields, unparsable rating, empty sentence, out-of-range rating
FAKE_ZERO_RATING = 1    # mean rating exactly 0

MOVIE_REVIEWS_FILE = 'movieReviewSnippets_GroundTruth.txt'


def _write_asset(cache_dir: pathlib.Path, name: str, files: dict[str, bytes]) -> pathlib.Path:
  asset_dir = pathlib.Path(cache_dir) / 'assets' / name
  asset_dir.mkdir(parents=True, exist_ok=True)
  for filename, data in files.items():
    (asset_dir / filename).write_bytes(data)
  # Written last: the asset cache treats a directory as present only once this marker exists.
  (asset_dir / '.complete').write_text(json.dumps({'name': name, 'fake': True,
                                                    'files': sorted(files)}))
  return asset_dir


def fake_sentence(rng: np.random.Generator, positive: bool) -> str:
  """A 5-15 word sentence with 1-2 polarity words of the given sign among neutral filler."""
  n = int(rng.integers(5, 16))
  words = list(rng.choice(NEUTRAL_WORDS, size=n))
  polar = POSITIVE_WORDS if positive else NEGATIVE_WORDS
  for _ in range(int(rng.integers(1, 3))):
    words[int(rng.integers(0, n))] = str(rng.choice(polar))
  return ' '.join(words) + ' ' + str(rng.choice(('.', '!')))


def fake_movie_review_lines(num_sentences: int = 400, seed: int = 0) -> list[bytes]:
  """The lines of the fake ground-truth file: `num_sentences` labelled ones plus the bad ones."""
  rng = np.random.default_rng(seed)
  lines = []
  for i in range(num_sentences):
    positive = bool(i % 2)  # balanced classes
    magnitude = round(float(rng.uniform(0.1, 4.0)), 3)
    rating = magnitude if positive else -magnitude
    lines.append(f'{i + 1}_1\t{rating}\t{fake_sentence(rng, positive)}'.encode())
  bad = [
      # Not UTF-8: latin-1 'é' (0xe9) and a stray 0xff byte.
      b'9001_1\t2.5\tthe film is a caf\xe9 of good scenes .',
      b'9002_1\t-1.5\tthe plot is \xff bad .',
      # Malformed.
      b'9003_1\t1.5',
      b'9004_1\tvery good\tthe movie is good .',
      b'9005_1\t-2.0\t   ',
      b'9006_1\t7.5\tthe movie is great .',
      # Exactly zero: no polarity, dropped.
      b'9007_1\t0.0\tthe movie is a movie .',
  ]
  assert len(bad) == FAKE_NON_UTF8 + FAKE_MALFORMED + FAKE_ZERO_RATING
  # Spread the bad lines through the file rather than leaving them all at the end.
  for j, line in enumerate(bad):
    lines.insert((j + 1) * len(lines) // (len(bad) + 1), line)
  return lines


def make_fake_assets(cache_dir: pathlib.Path, num_sentences: int = 400, seed: int = 0) -> None:
  """Writes fake `movie-reviews` and `all-MiniLM-L6-v2` (vocab.txt only) assets under cache_dir."""
  lines = fake_movie_review_lines(num_sentences, seed)
  _write_asset(cache_dir, 'movie-reviews', {MOVIE_REVIEWS_FILE: b'\n'.join(lines) + b'\n'})
  _write_asset(cache_dir, 'all-MiniLM-L6-v2', {'vocab.txt': ('\n'.join(VOCAB) + '\n').encode()})
