"""benchmarks/ner_vs_transformers.py end to end on a tiny BERT and the fake tweets: both frameworks
train from the same weights on the same batches and report the same metrics (timings and the size of
the difference are not checked)."""

import json
import math

import pytest

import fakes
from conftest import REPO, load_benchmark

pytest.importorskip('torch')
pytest.importorskip('transformers')


def test_both_frameworks_tag_and_report_the_same_metrics(fake_cache, tmp_path, capsys):
  config_file = fakes.tiny_pretrained_config(tmp_path, REPO / 'configs' / 'ner_wnut16.py')
  module = load_benchmark('ner_vs_transformers')
  out = tmp_path / 'figures.json'
  figures = module.main([f'--config={config_file}', f'--out={out}'])
  printed = capsys.readouterr().out
  ours, theirs = figures['llmjax'], figures['transformers']
  assert set(ours['test']) == set(theirs['test']) == {'loss', 'accuracy', 'precision', 'recall',
                                                      'f1'}
  assert all(math.isfinite(v) for v in (*ours['test'].values(), *theirs['test'].values()))
  # Evaluated at the same steps: 2 and 4.
  assert [e['step'] for e in theirs['validation']] == [e['step'] for e in ours['validation']]
  assert f'{ours["test"]["f1"]:.4f}' in printed and f'{theirs["test"]["f1"]:.4f}' in printed
  assert json.loads(out.read_text())['transformers']['best_step'] == theirs['best_step']
