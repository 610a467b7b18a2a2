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


def test_hf_optimizer_mirrors_llmjax_decay_mask_and_schedule():
  import numpy as np
  bench = load_benchmark('gpt_vs_transformers')
  args = bench.parse_args(['--steps=20', '--layers=1', '--width=64', '--max_len=32', '--vocab=256'])
  config = bench.load_config(args)
  model = bench.build_hf_model(config, 0)
  opt, sched = bench.hf_optimizer(model, config)
  decay, no_decay = opt.param_groups
  names = {id(p): n for n, p in model.named_parameters()}
  assert sorted(names[id(p)] for p in no_decay['params']) == sorted(
      n for n in names.values() if n.endswith('.bias') or '.ln_' in n)
  assert {names[id(p)] for p in decay['params']} >= {'transformer.wte.weight',
                                                     'transformer.wpe.weight'}
  lrs = []
  for _ in range(20):
    lrs.append(opt.param_groups[0]['lr'])
    opt.step()
    sched.step()
  expected = bench.optim.learning_rate(config.optim, 20)(np.arange(20))
  np.testing.assert_allclose(lrs, expected, rtol=1e-6, atol=1e-9)
