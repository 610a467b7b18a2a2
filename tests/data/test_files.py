"""A user's own CSV/TSV/JSONL files: columns, carving, label discovery, and bad rows by file:line."""

import json

import numpy as np
import pytest

import fakes
from llmjax import config_lib
from llmjax.data import files
from llmjax.data import pipeline
from llmjax.errors import UserError


def make_data_config(train, validation='', test='', text=('review',), label='sentiment'):
  c = config_lib.base_config().data
  c.name = train.suffix.lstrip('.')
  c.splits = dict(train=str(train), validation=str(validation or ''), test=str(test or ''))
  c.text_keys = text
  c.label_key = label
  return c


@pytest.mark.parametrize('suffix', ['.csv', '.tsv', '.jsonl'])
def test_every_format_reads_the_same_rows(tmp_path, suffix):
  path = fakes.write_reviews_file(tmp_path / f'reviews{suffix}', num_rows=300)
  splits, names = files.open_files(make_data_config(path), regression=False)
  assert names == ['neg', 'pos']
  sizes = {s: len(e) for s, e in splits.items()}
  assert sum(sizes.values()) == 300
  # 10% each carved out for validation and test (by hash: roughly).
  assert 15 <= sizes['validation'] <= 45 and 15 <= sizes['test'] <= 45
  reference, _ = files.open_files(make_data_config(
      fakes.write_reviews_file(tmp_path / 'reference.csv', num_rows=300)), regression=False)
  assert splits == reference


def test_carving_depends_on_the_text_not_the_row_order(tmp_path):
  path = fakes.write_reviews_file(tmp_path / 'a.jsonl', num_rows=200)
  lines = path.read_text().splitlines()
  shuffled = tmp_path / 'b.jsonl'
  shuffled.write_text('\n'.join(reversed(lines)) + '\n')
  a, _ = files.open_files(make_data_config(path), regression=False)
  b, _ = files.open_files(make_data_config(shuffled), regression=False)
  assert {s: sorted(e) for s, e in a.items()} == {s: sorted(e) for s, e in b.items()}


def test_split_files_pairs_numeric_labels_and_regression(tmp_path):
  train = fakes.write_reviews_file(tmp_path / 'train.csv', num_rows=100, seed=1)
  dev = fakes.write_reviews_file(tmp_path / 'dev.csv', num_rows=20, seed=2)
  test = fakes.write_reviews_file(tmp_path / 'test.csv', num_rows=30, seed=3)
  config = make_data_config(train, dev, test, text=('review', 'sentiment'), label='stars')
  splits, names = files.open_files(config, regression=False)
  assert {s: len(e) for s, e in splits.items()} == {'train': 100, 'validation': 20, 'test': 30}
  assert names == ['1', '2', '4', '5']  # Sorted as numbers, as written in the file.
  texts, label = splits['train'][0]
  assert len(texts) == 2 and names[label] in '1245'
  splits, names = files.open_files(config, regression=True)
  assert names == [] and all(isinstance(y, float) for _, y in splits['test'])


def test_bad_rows_are_named_by_file_and_line(tmp_path):
  good = fakes.write_reviews_file(tmp_path / 'train.csv', num_rows=50).read_text().splitlines()
  bad = good[:3] + ['"only one field"', good[3].rsplit(',', 1)[0] + ',', *good[4:]]
  path = tmp_path / 'bad.csv'
  path.write_text('\n'.join(bad) + '\n')
  with pytest.raises(UserError, match=r'^bad\.csv:4: 1 fields where the header has 3 \(and 1 '
                                      r'more\): fix or remove the bad rows'):
    files.open_files(make_data_config(path), regression=False)
  config = make_data_config(path)
  config.bad_rows = 'skip'
  splits, _ = files.open_files(config, regression=False)
  assert sum(len(e) for e in splits.values()) == 50 - 1  # Line 5 lost its label; line 4 was extra.

  jsonl = tmp_path / 'bad.jsonl'
  jsonl.write_text('{"review": "good", "sentiment": "pos"}\nnot json\n'
                   '{"review": "", "sentiment": "neg"}\n{"review": "ok"}\n')
  with pytest.raises(UserError, match=r"bad\.jsonl:2: not JSON .*\(and \d+ more\)"):
    files.open_files(make_data_config(jsonl), regression=False)
  rating = tmp_path / 'rating.jsonl'
  rating.write_text('{"review": "good", "sentiment": "4.5"}\n{"review": "bad", "sentiment": "n/a"}\n')
  with pytest.raises(UserError, match=r"rating\.jsonl:2: label 'n/a' is not a finite number"):
    files.open_files(make_data_config(rating, validation=rating, test=rating), regression=True)


def test_labels_unseen_in_train_and_changed_label_sets_are_refused(tmp_path):
  train = tmp_path / 'train.jsonl'
  train.write_text(''.join(json.dumps({'review': f'r{i}', 'sentiment': 'pos' if i % 2 else 'neg'})
                           + '\n' for i in range(10)))
  dev = tmp_path / 'dev.jsonl'
  dev.write_text('{"review": "x", "sentiment": "pos"}\n{"review": "y", "sentiment": "mixed"}\n')
  with pytest.raises(UserError, match=r"dev\.jsonl:2: label 'mixed' never occurs in the train file"):
    files.open_files(make_data_config(train, dev, dev), regression=False)
  config = make_data_config(train, train, train)
  config.label_names = ('neg', 'neutral', 'pos')  # Saved by an earlier run: kept, order and all.
  assert files.open_files(config, regression=False)[1] == ['neg', 'neutral', 'pos']
  config.label_names = ('pos',)
  with pytest.raises(UserError, match="label 'neg' is not one of the labels this run was started"):
    files.open_files(config, regression=False)


def test_pipeline_batches_a_users_file(fake_cache, tmp_path):
  config = config_lib.base_config()
  config.data = make_data_config(fakes.write_reviews_file(tmp_path / 'r.tsv', num_rows=120))
  config.data.update(max_len=32, buckets=(16, 32))
  config.batch_size = 8
  data = pipeline.build(config)
  assert data.label_names == ['neg', 'pos'] and data.num_labels == 2
  batch = next(data.train_iter())
  assert batch['input_ids'].shape[0] == 8 and batch['label'].dtype == np.int32
  config.task.name = 'regression'
  config.data.label_key = 'stars'
  data = pipeline.build(config)
  assert data.label_names == [] and next(data.train_iter())['label'].dtype == np.float32


def test_predict_inputs(tmp_path):
  path = tmp_path / 'in.txt'
  path.write_text('a fine film\n\n{"review": "as json", "id": 7}\n')
  assert files.read_inputs(path, ('review',)) == [{'review': 'a fine film'},
                                                  {'review': 'as json', 'id': 7}]
  with pytest.raises(UserError, match=r'in\.txt:1: not a JSON object with the fields'):
    files.read_inputs(path, ('premise', 'hypothesis'))


def test_the_files_config_names_what_it_needs():
  import importlib.util
  from conftest import REPO
  spec = importlib.util.spec_from_file_location('c', REPO / 'configs' / 'classify_files.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with pytest.raises(UserError, match='needs a train file: write configs/classify_files.py:train='):
    module.get_config(None)
  with pytest.raises(UserError, match=r'train=data\.xlsx must end in \.csv, \.tsv or \.jsonl'):
    module.get_config('train=data.xlsx')
  config = module.get_config('train=a.tsv,text=q+p,label=y,regression')
  assert (config.data.name, config.data.text_keys, config.task.name) == ('tsv', ('q', 'p'),
                                                                         'regression')
