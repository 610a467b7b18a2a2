"""benchmarks/gpt_vs_transformers.py end to end on a tiny shape and the fake corpus: both frameworks
train on the same batches and print finite validation losses (timings are not checked)."""

import json
import math

import pytest

from conftest import load_benchmark

pytest.importorskip('torch')
pytest.importorskip('transformers')



def test_both_frameworks_train_and_print_finite_losses(fake_cache, tmp_path, capsys):
  bench = load_benchmark('gpt_vs_transformers')
  out = tmp_path / 'figures.json'
  # The fake corpus holds too few held-out articles: train and score on slices of its train split.
  figures = bench.main(['--steps=3', '--layers=1', '--width=64', '--max_len=32', '--batch=8',
                        '--vocab=256', '--train_split=train[:80%]',
                        '--validation_split=train[80%:]', f'--out={out}'])
  printed = capsys.readouterr().out
  jx, hf = figures['llmjax']['val_loss'], figures['transformers']['val_loss']
  assert math.isfinite(jx) and math.isfinite(hf)
  assert f'{jx:.4f}' in printed and f'{hf:.4f}' in printed
  assert 'llmjax val loss' in printed and 'transformers val loss' in printed
  # Packed rows compute what their documents compute alone (the mask and positions are right).
  assert figures['transformers']['packing_max_abs_diff'] < 1e-4
  assert json.loads(out.read_text())['relative_diff'] == pytest.approx(figures['relative_diff'])
  # 3 steps from a near-uniform start: both are still close to log(vocab), far from diverging.
  assert abs(jx - hf) / hf < 0.1
