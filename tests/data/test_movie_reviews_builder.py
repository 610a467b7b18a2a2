"""`movie_reviews` builder tests on the fake asset: skipped lines, labels, splits, ArrayRecord."""

import collections
import random

import pytest

import fakes
from llmjax import assets
from llmjax.data import movie_reviews

NUM = 400
BAD_IDS = {f'{9001 + i}_1' for i in range(fakes.FAKE_NON_UTF8 + fakes.FAKE_MALFORMED +
                                          fakes.FAKE_ZERO_RATING)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_assets(tmp_path, num_sentences=NUM)
  return tmp_path


def source_file(cache):
  return cache / 'assets' / 'movie-reviews' / movie_reviews.FILENAME


def check_stats(stats: dict):
  assert stats['lines'] == NUM + len(BAD_IDS)
  assert stats['non_utf8'] == fakes.FAKE_NON_UTF8
  assert stats['malformed'] == fakes.FAKE_MALFORMED
  assert stats['zero_rating'] == fakes.FAKE_ZERO_RATING
  assert stats['duplicate_id'] == 0
  assert stats['labelled'] == NUM
  assert sum(stats['positive'].values()) == NUM // 2
  assert sum(stats['negative'].values()) == NUM // 2


def test_parse_counts_skipped_lines(cache):
  examples, stats = movie_reviews.parse_snippets(source_file(cache))
  check_stats(vars(stats))
  kept = [ex for split in examples.values() for ex in split]
  assert len(kept) == NUM
  # None of the bad lines got a label, not even the non-UTF-8 ones whose fields look fine.
  assert not {ex['id'] for ex in kept} & BAD_IDS
  for ex in kept:
    assert ex['label'] == int(ex['rating'] > 0) and ex['rating'] != 0


def test_split_is_a_function_of_the_id_only(cache):
  path = source_file(cache)
  examples, _ = movie_reviews.parse_snippets(path)
  lines = path.read_bytes().splitlines()
  random.Random(0).shuffle(lines)
  shuffled = cache / 'shuffled.txt'
  shuffled.write_bytes(b'\n'.join(lines))
  examples2, stats2 = movie_reviews.parse_snippets(shuffled)
  check_stats(vars(stats2))

  def assignment(exs):
    return {ex['id']: split for split, items in exs.items() for ex in items}

  assert assignment(examples) == assignment(examples2)
  for split, items in examples.items():
    assert all(movie_reviews.split_of(ex['id']) == split for ex in items)


def test_split_rule_proportions():
  counts = collections.Counter(movie_reviews.split_of(f'{i}') for i in range(20000))
  assert 0.78 < counts['train'] / 20000 < 0.82
  assert 0.09 < counts['validation'] / 20000 < 0.11
  assert 0.09 < counts['test'] / 20000 < 0.11


def test_builder_writes_array_record_with_stats(cache, monkeypatch):
  data_dir = cache / 'tfds'
  builder = movie_reviews.MovieReviews(data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(file_format='array_record')
  check_stats(dict(builder.info.metadata))
  assert builder.info.features['label'].names == ['negative', 'positive']
  assert list(data_dir.glob('movie_reviews/1.0.0/*.array_record-*'))

  seen = {}
  for split in movie_reviews.SPLITS:
    source = builder.as_data_source(split=split)
    assert len(source) == builder.info.metadata['positive'][split] + \
        builder.info.metadata['negative'][split]
    for ex in source:
      snippet_id = ex['id'].decode()
      assert snippet_id not in seen, 'splits overlap'
      seen[snippet_id] = split
      assert movie_reviews.split_of(snippet_id) == split
      assert ex['label'] == int(ex['rating'] > 0)
      assert ex['sentence'].decode().strip()
  assert len(seen) == NUM and not set(seen) & BAD_IDS

  # A second builder just opens the prepared data (the source is never read again) and still
  # carries the counts.
  def no_fetch(name):
    raise AssertionError(f'asset {name} fetched again')

  monkeypatch.setattr(assets, 'fetch', no_fetch)
  again = movie_reviews.MovieReviews(data_dir=data_dir, file_format='array_record')
  again.download_and_prepare(file_format='array_record')
  check_stats(dict(again.info.metadata))
  assert len(again.as_data_source(split='train')) == len(builder.as_data_source(split='train'))
