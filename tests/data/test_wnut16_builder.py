"""`wnut16` builder tests: the tag set, skipped sentences, the split by text, the real file."""

import pytest

import fakes
from llmjax import assets
from llmjax.data import local_builder
from llmjax.data import tfds_sources
from llmjax.data import wnut16

NUM = 200


def source(cache):
  return cache / 'assets' / 'wnut16' / wnut16.FILENAME


def check_stats(stats: dict):
  assert stats['sentences'] == NUM + sum(fakes.FAKE_WNUT_SKIPS.values())
  assert {k: stats[k] for k in fakes.FAKE_WNUT_SKIPS} == fakes.FAKE_WNUT_SKIPS
  assert stats['unknown_tags'] == {'B-animal': 1}
  assert stats['kept'] == sum(stats['per_split'].values()) == NUM
  assert stats['duplicate_text'] == fakes.FAKE_WNUT_DUPLICATES


def test_tag_set():
  assert wnut16.TAGS[0] == 'O' and len(wnut16.TAGS) == 1 + 2 * 10
  assert wnut16.TAGS[1:3] == ('B-company', 'I-company')
  assert wnut16.TAGS[-2:] == ('B-tvshow', 'I-tvshow')


def test_parse_counts_skipped_sentences(fake_cache):
  examples, stats = wnut16.parse_conll(source(fake_cache))
  check_stats(vars(stats))
  kept = [ex for items in examples.values() for ex in items]
  assert len({ex['id'] for ex in kept}) == NUM
  # No bad sentence kept, nor a part of one (the skipped sentence with 'York' has no 'New').
  assert 'Rex' not in {w for ex in kept for w in ex['tokens']}
  assert all(ex['tokens'][i - 1] == 'New' for ex in kept for i, w in enumerate(ex['tokens'])
             if w == 'York')
  for ex in kept:
    assert len(ex['tokens']) == len(ex['tags']) and set(ex['tags']) <= set(wnut16.TAGS)
    for token, tag in zip(ex['tokens'], ex['tags']):
      # Entity words carry their type, the filler is O: what a model can learn.
      assert (tag == 'O') == (token.lower() not in fakes.LABELLED_WORDS)
  # The separator variants (a tab line, an empty line) both end a sentence.
  assert max(len(ex['tokens']) for ex in kept) <= 10 + 2 * 2


def test_split_follows_the_text(fake_cache):
  examples, _ = wnut16.parse_conll(source(fake_cache))
  by_text = {}
  for split, items in examples.items():
    for ex in items:
      assert local_builder.split_of(' '.join(ex['tokens'])) == split
      by_text.setdefault(' '.join(ex['tokens']), set()).add(split)
  assert len(by_text) == NUM - fakes.FAKE_WNUT_DUPLICATES
  assert all(len(splits) == 1 for splits in by_text.values())


@pytest.mark.usefixtures('fake_cache')  # the source; the prepared data goes to tmp_path
def test_builder_writes_array_record_with_stats(tmp_path):
  data_dir = tmp_path / 'tfds'
  sources = tfds_sources.open_splits('wnut16', {s: s for s in wnut16.SPLITS}, data_dir)
  builder = wnut16.Wnut16(data_dir=data_dir, file_format='array_record')
  check_stats(dict(builder.info.metadata))
  assert builder.info.features['tags'].feature.names == list(wnut16.TAGS)
  for split, rows in sources.items():
    assert len(rows) == builder.info.metadata['per_split'][split]
    ex = rows[0]
    # A data source row: tokens as a list of bytes, tags as a list of class ids.
    for token, tag in zip(ex['tokens'], ex['tags'], strict=True):
      assert (wnut16.TAGS[tag] == 'O') == (token.decode().lower() not in fakes.LABELLED_WORDS)
    assert ex['id'].decode().startswith('wnut16-train-')


@pytest.mark.skipif(assets.cached('wnut16') is None,
                    reason='the real wnut16 asset is not fetched (python -m llmjax.assets fetch)')
def test_real_file():
  examples, stats = wnut16.parse_conll(assets.cached('wnut16') / wnut16.FILENAME)
  assert stats.sentences == stats.kept == 2394
  assert sum(stats.tokens.values()) == 46469
  assert set(stats.tag_counts) == set(wnut16.TAGS)
  assert stats.per_split == {'train': 1921, 'validation': 231, 'test': 242}
  assert {s: len(items) for s, items in examples.items()} == stats.per_split
