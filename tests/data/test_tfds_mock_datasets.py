"""Standard TFDS datasets through the pipeline, with `tfds.testing.mock_data` (never the network).

`mock_data` replaces `DatasetBuilder.as_data_source` and `download_and_prepare`, so
`tfds.data_source` returns random examples shaped by the real builder's features; it needs no
TensorFlow. (In TFDS 4.9.10 the mock's batched `__getitems__` is broken -- it is set as an unbound
attribute -- so only `source[i]` works; the pipeline reads sources one index at a time.)
"""

import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import fakes
from llmjax import data

NUM_EXAMPLES = 40


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_assets(tmp_path, num_sentences=10)
  return tmp_path


def make_config(name, text_keys, splits):
  return ml_collections.ConfigDict({
      'seed': 0,
      'batch_size': 8,
      'eval_batch_size': 16,
      'data': {
          'name': name,
          'data_dir': '',
          'splits': splits,
          'text_keys': text_keys,
          'label_key': 'label',
          'max_len': 32,
          'buckets': (16, 32),
          'max_train_examples': -1,
      },
      'tokenizer': {'vocab': 'asset:all-MiniLM-L6-v2/vocab.txt', 'lowercase': True},
  })


@pytest.mark.parametrize('name, text_keys, splits', [
    ('glue/sst2', ('sentence',), {'train': 'train[:90%]', 'validation': 'validation'}),
    ('glue/mrpc', ('sentence1', 'sentence2'), {'train': 'train', 'test': 'validation'}),
    ('imdb_reviews', ('text',), {'train': 'train', 'validation': 'test'}),
])
def test_standard_dataset(cache, name, text_keys, splits):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    d = data.build(make_config(name, text_keys, splits))
    train = list(itertools.islice(d.train_iter(), 6))
    evals = {split: list(d.eval_iter(split)) for split in splits if split != 'train'}

  assert d.num_labels == 2 and len(d.label_names) == 2
  assert d.num_examples == {split: NUM_EXAMPLES for split in splits}
  assert d.steps_per_epoch == NUM_EXAMPLES // 8
  for batch in train:
    assert batch['input_ids'].shape[0] == 8 and batch['input_ids'].shape[1] in (16, 32)
    assert set(np.unique(batch['label'])) <= {0, 1} and np.all(batch['weight'] == 1)
    types = batch['token_type_ids'][batch['attention_mask'] == 1]
    # Sentence pairs mark the second text with token type 1; single sentences never do.
    assert types.any() == (len(text_keys) == 2)
  for batches in evals.values():
    assert sum(b['weight'].sum() for b in batches) == NUM_EXAMPLES
