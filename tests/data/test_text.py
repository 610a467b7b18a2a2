"""`llmjax.data.text.open_text`: str documents per split from enwiki_sample and mocked corpora."""

import ml_collections
import pytest
import tensorflow_datasets as tfds

import fakes
from llmjax.data import enwiki_sample
from llmjax.data import text
from llmjax.errors import UserError


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_enwiki(tmp_path)
  return tmp_path


def data_config(name, splits, **extra):
  return ml_collections.ConfigDict({'name': name, 'data_dir': '', 'splits': splits, **extra})


def test_enwiki_sample(cache):
  sources = text.open_text(data_config('enwiki_sample',
                                       {'train': 'train', 'validation': 'validation'}))
  _, stats = enwiki_sample.parse_dump(cache / 'assets' / 'enwiki-sample' / fakes.ENWIKI_FILE)
  assert {s: len(src) for s, src in sources.items()} == stats.articles
  docs = [sources['train'][i] for i in range(len(sources['train']))]
  assert all(isinstance(d, str) and d for d in docs)
  assert fakes.ALPHA_TEXT in docs + [sources['validation'][i]
                                     for i in range(len(sources['validation']))]
  # Prepared into $LLMJAX_CACHE/tensorflow_datasets by default.
  assert (cache / 'tensorflow_datasets' / 'enwiki_sample').is_dir()


def test_enwiki_sample_lee_config_and_split_slices(cache):
  sources = text.open_text(data_config('enwiki_sample/lee', {'train': 'train[:10]'},
                                       text_key='text'))
  assert len(sources['train']) == 10 and isinstance(sources['train'][0], str)


@pytest.mark.parametrize('name, splits', [
    ('c4', {'train': 'train', 'validation': 'validation'}),
    ('lm1b', {'train': 'train[:50%]', 'test': 'test'}),
])
def test_standard_corpora_with_mock_data(tmp_path, monkeypatch, name, splits):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  with tfds.testing.mock_data(num_examples=12):
    sources = text.open_text(data_config(name, splits))
    assert set(sources) == set(splits)
    for source in sources.values():
      assert len(source) > 0
      assert all(isinstance(source[i], str) for i in range(len(source)))


def test_bad_text_key_and_non_text_feature(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(UserError, match="no feature 'body'.*config.data.text_key"):
      text.open_text(data_config('lm1b', {'train': 'train'}, text_key='body'))
    with pytest.raises(UserError, match="'label' of 'imdb_reviews' is not text"):
      text.open_text(data_config('imdb_reviews', {'train': 'train'}, text_key='label'))


def test_empty_splits_is_a_user_error():
  with pytest.raises(UserError, match='config.data.splits is empty'):
    text.open_text(data_config('c4', {}))
