"""Standard TFDS datasets through the pipeline, with `tfds.testing.mock_data` (never the network).

`mock_data` replaces `DatasetBuilder.as_data_source` and `download_and_prepare`, so
`tfds.data_source` returns random examples shaped by the real builder's features; it needs no
TensorFlow. (In TFDS 4.9.10 the mock's batched `__getitems__` is broken -- it is set as an unbound
attribute -- so only `source[i]` works; the pipeline reads sources one index at a time.)
"""

import itertools
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

import fakes
from conftest import ONE, load_config
from llmjax import config_lib, data, tasks, train

NUM_EXAMPLES = 40


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  fakes.make_fake_assets(tmp_path, num_sentences=10)
  return tmp_path


def make_config(name, text_keys, splits):
  config = config_lib.base_config()
  config.batch_size = 8
  config.eval_batch_size = 16
  config.data.update(name=name, text_keys=text_keys, max_len=32, buckets=(16, 32))
  config.data.splits = splits
  return config


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


GLUE_TASKS = ['cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'mnli_mismatched', 'qnli', 'rte',
              'wnli']


@pytest.mark.parametrize('task', GLUE_TASKS)
def test_every_glue_config_reads_its_dataset(cache, task):
  config = load_config('glue', f'task={task},tiny')
  config_lib.validate(config, num_devices=8)
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    d = tasks.build_data(config, process_index=0, process_count=1)
    batch = next(d.train_iter())
    test, = itertools.islice(d.eval_iter('test'), 1)
  assert config.eval.metric in tasks.TASKS[config.task.name].metrics
  if task == 'stsb':
    assert d.label_names == [] and batch['label'].dtype == np.float32
  else:
    assert d.num_labels == (3 if task.startswith('mnli') else 2)
  pair = len(config.data.text_keys) == 2
  assert (batch['token_type_ids'].max() == 1) == pair
  assert test['input_ids'].shape[0] == config.eval_batch_size


def test_a_three_class_glue_task_trains_and_reports_its_metrics(cache, tmp_path):
  config = load_config('glue', 'task=mnli,tiny')
  config.num_train_steps = 2
  config.eval.every_steps = 2
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    result = train.train_and_evaluate(config, tmp_path, devices=ONE)
  assert set(result['test']) == set(tasks.TASKS['classification'].metrics)
  assert json.loads((tmp_path / 'hf_export' / 'config.json').read_text())['id2label'] == {
      '0': 'entailment', '1': 'neutral', '2': 'contradiction'}
