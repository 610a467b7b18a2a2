"""`oanc_pos` builder tests: word/TAG tokens, skipped sentences, the split by text, real file."""

import pytest

import fakes
from llmjax import assets
from llmjax.data import local_builder
from llmjax.data import oanc_pos
from llmjax.data import tfds_sources

NUM = 300


def source(cache):
  return cache / 'assets' / 'oanc-pos' / oanc_pos.FILENAME


def check_stats(stats: dict):
  # The blank line is no sentence; every other line is one.
  assert stats['sentences'] == NUM + sum(fakes.FAKE_OANC_SKIPS.values())
  assert {k: stats[k] for k in fakes.FAKE_OANC_SKIPS} == fakes.FAKE_OANC_SKIPS
  assert stats['unknown_tags'] == {'VBG|NN': 1, 'XX': 1}
  assert stats['kept'] == sum(stats['per_split'].values()) == NUM
  assert stats['duplicate_text'] == fakes.FAKE_OANC_DUPLICATES


def test_tag_set():
  assert len(oanc_pos.TAGS) == len(set(oanc_pos.TAGS)) == 45
  assert set(oanc_pos.TAGS) >= set(fakes.POS_WORDS) | {'.', ','}


def test_parse_counts_skipped_sentences(fake_cache):
  examples, stats = oanc_pos.parse_tagged(source(fake_cache))
  check_stats(vars(stats))
  kept = {ex['id']: ex for items in examples.values() for ex in items}
  assert len(kept) == NUM
  tag_of = {w: tag for tag, words in fakes.POS_WORDS.items() for w in words}
  tag_of.update({'.': '.', '!': '.', ',': ',', 'The': 'DT', 'and/or': 'CC'})
  for ex in kept.values():
    assert [tag_of[w] for w in ex['tokens']] == ex['tags']
  # A slash inside the word: the tag is what follows the last one.
  first = kept['oanc-00001']
  assert first['tokens'][2] == 'and/or' and first['tags'][2] == 'CC'


def test_split_follows_the_text(fake_cache):
  examples, _ = oanc_pos.parse_tagged(source(fake_cache))
  for split, items in examples.items():
    assert all(local_builder.split_of(' '.join(ex['tokens'])) == split for ex in items)
  # The three lone '.' sentences share one split.
  assert sum(ex['tokens'] == ['.'] for ex in examples[local_builder.split_of('.')]) == 3


@pytest.mark.usefixtures('fake_cache')  # the source; the prepared data goes to tmp_path
def test_builder_writes_array_record_with_stats(tmp_path):
  data_dir = tmp_path / 'tfds'
  sources = tfds_sources.open_splits('oanc_pos', {s: s for s in oanc_pos.SPLITS}, data_dir)
  builder = oanc_pos.OancPos(data_dir=data_dir, file_format='array_record')
  check_stats(dict(builder.info.metadata))
  assert builder.info.features['tags'].feature.names == list(oanc_pos.TAGS)
  tokens = 0
  for split, rows in sources.items():
    assert len(rows) == builder.info.metadata['per_split'][split]
    tokens += sum(len(ex['tags']) for ex in rows)
  assert tokens == sum(builder.info.metadata['tokens'].values())


@pytest.mark.skipif(assets.cached('oanc-pos') is None,
                    reason='the real oanc-pos asset is not fetched (python -m llmjax.assets fetch)')
def test_real_file():
  examples, stats = oanc_pos.parse_tagged(assets.cached('oanc-pos') / oanc_pos.FILENAME)
  assert stats.sentences == 20000
  # Only the 4 sentences with a tag the annotators left ambiguous are skipped.
  assert stats.unknown_tags == {'VBG|NN': 2, 'NN|JJ': 1, 'NN|CD': 1}
  assert stats.unknown_tag == 4 and stats.kept == 19996
  assert sum(stats.tokens.values()) == 360418  # of 360,524 in the file
  assert set(stats.tag_counts) == set(oanc_pos.TAGS)
  assert {s: len(items) for s, items in examples.items()} == stats.per_split == {
      'train': 16115, 'validation': 2036, 'test': 1845}
