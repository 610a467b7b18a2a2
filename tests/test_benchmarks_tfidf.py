"""benchmarks/tfidf_baseline.py on the fake BBC News: the baseline sees exactly llmjax's splits, and
cross-validation tests every article once."""

import json

import pytest

from conftest import load_benchmark

pytest.importorskip('sklearn')


def test_baseline_on_the_configs_split_and_on_its_folds(fake_cache, tmp_path, capsys):
  bench = load_benchmark('tfidf_baseline')
  split = bench.main(['--config=configs/bbc_news.py:tiny'])
  out = tmp_path / 'folds.json'
  folds = bench.main(['--config=configs/bbc_news.py:tiny', '--folds=3', f'--out={out}'])
  printed = capsys.readouterr().out
  [whole] = split['runs']
  assert len(folds['runs']) == 3 and [r['fold'] for r in folds['runs']] == [0, 1, 2]
  # Every article is tested once over the folds; each fold trains on most of the rest.
  assert sum(r['test'] for r in folds['runs']) == sum(
      whole[split] for split in ('train', 'validation', 'test'))
  assert all(r['train'] > r['test'] for r in folds['runs'])
  for r in (*split['runs'], *folds['runs']):
    assert 0 <= r['f1_macro'] <= 1 and 0 <= r['accuracy'] <= 1
    assert f'{r["accuracy"]:.4f}' in printed
  # The fake topics have words of their own, so the baseline learns them well.
  assert whole['accuracy'] > 0.8
  assert json.loads(out.read_text())['accuracy'] == pytest.approx(folds['accuracy'])
