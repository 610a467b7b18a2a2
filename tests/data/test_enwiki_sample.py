"""`enwiki_sample` builder tests on a fake bz2 MediaWiki dump: cleaning, skips, splits, storage."""

import hashlib

import pytest

import fakes
from llmjax.data import enwiki_sample


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_enwiki(tmp_path)
  return tmp_path


def asset_file(cache, name):
  return cache / 'assets' / 'enwiki-sample' / name


def test_wikitext_to_text_removes_markup_and_keeps_prose():
  text = enwiki_sample.wikitext_to_text(fakes.ALPHA_WIKITEXT)
  assert text == fakes.ALPHA_TEXT
  assert enwiki_sample.clean_wikitext(fakes.ALPHA_WIKITEXT) == (text, fakes.ALPHA_MARKUP_LINES)
  for gone in ('Infobox', 'nested', 'Ref title', 'http', 'hidden comment', 'caption',
               'table cell', 'Header cell', 'Letters', 'de:', '[[', '{{', '==', "''", '<',
               'never closed', 'unclosed'):
    assert gone not in text


def test_interlanguage_links_with_text_are_kept_as_text():
  # A piped link to another wiki's page is prose; only bare language links are dropped.
  # (The space left before '.' stays: removing it in general would also glue e.g. 'the .NET'.)
  assert enwiki_sample.wikitext_to_text('See [[wikt:alpha|the word alpha]] and [[fr:Alpha]].') == (
      'See the word alpha and .')


def test_colon_links_are_visible_links():
  assert enwiki_sample.wikitext_to_text('See [[:Category:Letters|all letters]] here.') == (
      'See all letters here.')


def test_parse_dump_counts_every_page(cache):
  examples, stats = enwiki_sample.parse_dump(asset_file(cache, fakes.ENWIKI_FILE))
  for reason, count in fakes.FAKE_WIKI_SKIPS.items():
    assert getattr(stats, reason) == count, reason
  kept = fakes.FAKE_WIKI_ARTICLES + 1
  assert stats.kept == kept
  assert stats.markup_lines == fakes.ALPHA_MARKUP_LINES
  assert stats.pages == kept + sum(fakes.FAKE_WIKI_SKIPS.values())
  titles = [ex['title'] for split in examples.values() for ex in split]
  assert sorted(titles) == sorted(fakes.fake_wiki_titles())
  # The duplicate of 'Article 5' was skipped: the first page with the title is the one kept.
  assert len(set(titles)) == len(titles)
  alpha = next(ex for split in examples.values() for ex in split if ex['title'] == 'Alpha')
  assert alpha['text'] == fakes.ALPHA_TEXT
  for split, items in examples.items():
    assert stats.articles[split] == len(items)
    assert stats.words[split] == sum(len(ex['text'].split()) for ex in items)
    assert stats.chars[split] == sum(len(ex['text']) for ex in items)
    for ex in items:
      assert '{{' not in ex['text'] and '[[' not in ex['text']
      assert len(ex['text'].split()) >= enwiki_sample.MIN_WORDS


def test_split_rule():
  for title in ['Alpha', 'Article 1', 'Ünïcode title'] + [f't{i}' for i in range(200)]:
    bucket = int(hashlib.sha256(title.encode('utf-8')).hexdigest(), 16) % 20
    assert enwiki_sample.split_of(title) == ('validation' if bucket == 0 else 'train')
  share = sum(enwiki_sample.split_of(f'title {i}') == 'validation' for i in range(20000)) / 20000
  assert 0.04 < share < 0.06


def test_parse_lee(cache):
  examples, stats = enwiki_sample.parse_lee(asset_file(cache, fakes.LEE_FILE))
  assert stats.pages == fakes.FAKE_LEE_LINES
  assert (stats.no_text, stats.too_short, stats.kept) == (1, 1, fakes.FAKE_LEE_LINES - 2)
  for split, items in examples.items():
    assert all(enwiki_sample.split_of(ex['title']) == split for ex in items)
    assert all(ex['title'].startswith('lee-') for ex in items)


@pytest.mark.parametrize('config', ['wiki', 'lee'])
def test_builder_writes_array_record_with_stats(cache, config):
  builder = enwiki_sample.EnwikiSample(config=config, data_dir=cache / 'tfds',
                                       file_format='array_record')
  builder.download_and_prepare(file_format='array_record')
  path = fakes.ENWIKI_FILE if config == 'wiki' else fakes.LEE_FILE
  parse = enwiki_sample.parse_dump if config == 'wiki' else enwiki_sample.parse_lee
  examples, stats = parse(asset_file(cache, path))
  metadata = dict(builder.info.metadata)
  assert metadata['kept'] == stats.kept and metadata['articles'] == stats.articles
  for split in enwiki_sample.SPLITS:
    source = builder.as_data_source(split=split)
    assert len(source) == stats.articles[split]
    stored = {source[i]['title'].decode(): source[i]['text'].decode() for i in range(len(source))}
    assert stored == {ex['title']: ex['text'] for ex in examples[split]}
