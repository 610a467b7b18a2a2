"""`bbc_news` builder tests: skipped files, labels, the split by text, storage, the real corpus."""

import pytest

import fakes
from llmjax import assets
from llmjax.data import bbc_news
from llmjax.data import local_builder
from llmjax.data import tfds_sources

KEPT = len(fakes.TOPIC_WORDS) * fakes.FAKE_BBC_PER_TOPIC + fakes.FAKE_BBC_DUPLICATES
SKIPPED_IDS = {'tech/901', 'politics/902', 'business/903', 'tech/903', 'README', 'weather/001'}


def source(cache):
  return cache / 'assets' / 'bbc-news' / bbc_news.DATA_DIR


def check_stats(stats: dict):
  assert stats['files'] == KEPT + sum(fakes.FAKE_BBC_SKIPS.values())
  assert {k: stats[k] for k in fakes.FAKE_BBC_SKIPS} == fakes.FAKE_BBC_SKIPS
  assert stats['recoded'] == fakes.FAKE_BBC_RECODED
  assert stats['duplicate_text'] == fakes.FAKE_BBC_DUPLICATES
  assert stats['kept'] == KEPT
  per_topic = {name: sum(stats['per_split'][s][name] for s in bbc_news.SPLITS)
               for name in bbc_news.LABEL_NAMES}
  assert per_topic == {'business': fakes.FAKE_BBC_PER_TOPIC + fakes.FAKE_BBC_DUPLICATES,
                       **dict.fromkeys(bbc_news.LABEL_NAMES[1:], fakes.FAKE_BBC_PER_TOPIC)}


def test_parse_counts_skips_and_labels(fake_cache):
  examples, stats = bbc_news.parse_articles(source(fake_cache))
  check_stats(vars(stats))
  kept = {ex['id']: ex for split in examples.values() for ex in split}
  assert len(kept) == KEPT and not set(kept) & SKIPPED_IDS
  for ex in kept.values():
    folder = ex['id'].split('/')[0]
    assert bbc_news.LABEL_NAMES[ex['label']] == bbc_news.FOLDERS[folder]
    assert any(w in ex['text'] for w in fakes.TOPIC_WORDS[folder])
    assert '\n\n' not in ex['text'] and ex['text'].split('\n')[0][0].isupper()  # title first
  assert '\u00a315m' in kept['sports/001']['text']  # the cp1252 pound sign, read as '£'


def test_split_follows_the_text(fake_cache):
  examples, _ = bbc_news.parse_articles(source(fake_cache))
  split_of_id = {ex['id']: split for split, items in examples.items() for ex in items}
  for split, items in examples.items():
    assert all(local_builder.split_of(ex['text']) == split for ex in items)
  # The repeated article and its original share a split.
  assert split_of_id['business/904'] == split_of_id['business/002']


@pytest.mark.usefixtures('fake_cache')  # the source; the prepared data goes to tmp_path
def test_builder_writes_array_record_with_stats(tmp_path):
  data_dir = tmp_path / 'tfds'
  sources = tfds_sources.open_splits('bbc_news', {s: s for s in bbc_news.SPLITS}, data_dir)
  builder = bbc_news.BbcNews(data_dir=data_dir, file_format='array_record')
  check_stats(dict(builder.info.metadata))
  assert builder.info.features['label'].names == list(bbc_news.LABEL_NAMES)
  ids = set()
  for split, rows in sources.items():
    assert len(rows) == sum(builder.info.metadata['per_split'][split].values())
    for ex in rows:
      ids.add(ex['id'].decode())
      assert bbc_news.FOLDERS[ex['id'].decode().split('/')[0]] == \
          bbc_news.LABEL_NAMES[ex['label']]
      assert local_builder.split_of(ex['text'].decode()) == split
  assert len(ids) == KEPT


@pytest.mark.skipif(assets.cached('bbc-news') is None,
                    reason='the real bbc-news asset is not fetched (python -m llmjax.assets fetch)')
def test_real_corpus():
  examples, stats = bbc_news.parse_articles(assets.cached('bbc-news') / bbc_news.DATA_DIR)
  assert stats.files == stats.kept == 2225
  assert stats.recoded == 1 and stats.duplicate_text == 98
  per_topic = {name: sum(stats.per_split[s][name] for s in bbc_news.SPLITS)
               for name in bbc_news.LABEL_NAMES}
  # The class sizes of Greene & Cunningham's corpus.
  assert per_topic == {'business': 510, 'entertainment': 386, 'politics': 417, 'sport': 511,
                       'tech': 401}
  assert {s: len(items) for s, items in examples.items()} == {'train': 1767, 'validation': 235,
                                                              'test': 223}
