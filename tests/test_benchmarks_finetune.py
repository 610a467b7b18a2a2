"""benchmarks/finetune_vs_transformers.py end to end on a tiny BERT and the fake movie reviews: both
frameworks train from the same weights on the same batches and report the same metrics (timings and
the size of the difference are not checked)."""

import json
import math

import pytest

import fakes
from conftest import REPO, load_benchmark

pytest.importorskip('torch')
pytest.importorskip('transformers')



@pytest.mark.parametrize('task', ['classification', 'regression'])
def test_both_frameworks_fine_tune_and_report_the_same_metrics(fake_cache, tmp_path, capsys, task):
  extra = ('  c.task.name, c.data.label_key, c.eval.metric = "classification", "label", "f1"\n'
           if task == 'classification' else '')
  config_file = fakes.tiny_pretrained_config(tmp_path, REPO / 'configs' / 'movie_rating.py', extra)
  out = tmp_path / 'figures.json'
  figures = load_benchmark('finetune_vs_transformers').main([f'--config={config_file}',
                                                             f'--out={out}', '--seed=3'])
  printed = capsys.readouterr().out
  ours, theirs = figures['llmjax'], figures['transformers']
  assert set(ours['test']) == set(theirs['test'])
  assert all(math.isfinite(v) for v in (*ours['test'].values(), *theirs['test'].values()))
  # Evaluated at the same steps: 2 and 4.
  assert [e['step'] for e in theirs['validation']] == [e['step'] for e in ours['validation']]
  metric = 'f1' if task == 'classification' else 'pearson'
  assert f'{ours["test"][metric]:.4f}' in printed and f'{theirs["test"][metric]:.4f}' in printed
  written = json.loads(out.read_text())
  assert written['transformers']['best_step'] == theirs['best_step']
  assert written['seed'] == 3


def test_padding_the_transformers_batches_changes_no_metric(fake_cache, tmp_path):
  # Without dropout: torch would draw its masks over the padded shape, a different random stream.
  no_dropout = '  c.model.hidden_dropout = c.model.attention_dropout = 0.0\n'
  config_file = fakes.tiny_pretrained_config(tmp_path, REPO / 'configs' / 'movie_rating.py',
                                             no_dropout)
  bench = load_benchmark('finetune_vs_transformers')
  workdir = tmp_path / 'llmjax'  # Trained by the first call, reused by the second.
  bucketed = bench.main([f'--config={config_file}', f'--llmjax_workdir={workdir}'])
  padded = bench.main([f'--config={config_file}', f'--llmjax_workdir={workdir}', '--hf_pad_to=64'])
  for name, value in bucketed['transformers']['test'].items():
    assert padded['transformers']['test'][name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
