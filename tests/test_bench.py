"""The benchmark command: the train step of a config timed on its own batches, with the analytical
FLOP count, peak, memory and input throughput figures it reports (no timing is asserted)."""

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO, load_config
from llmjax import bench, model_info


@pytest.fixture(autouse=True)
def small_peak_matmul(monkeypatch):
  # The CPU peak is a 4096^3 matmul in real use; a smaller one exercises the same code in a second.
  monkeypatch.setattr(bench, 'PEAK_MATMUL_SIZE', 512)


def _tiny(name):
  config = load_config(name, 'tiny')
  # The fake corpus holds too few held-out articles for the config's own splits.
  config.data.splits = dict(train='train[:80%]', validation='train[80%:]', test='train[80%:]')
  return config


def test_decoder_figures_follow_the_analytical_count(fake_cache):
  config = _tiny('gpt_lm')
  r = bench.measure(config, steps=2, warmup=1, batches=2, input_batches=3)
  assert (r['batch'], r['length'], r['target_length']) == (8, 32, 0)
  # At the config's own length, a step is the per-token count of model_info times its positions.
  per_token = model_info.describe(config)['train_flops_per_token']
  assert r['flops_per_step'] == pytest.approx(per_token * 8 * 32, rel=1e-9)
  assert r['tokens_per_s'] == pytest.approx(8 * 32 / r['step_s'])
  assert r['flops_per_s'] == pytest.approx(r['flops_per_step'] / r['step_s'])
  assert r['mfu'] == pytest.approx(r['flops_per_s'] / r['peak_flops_per_s'])
  assert 'measured float32 512^3 matmul' in r['peak_source']
  assert r['compile_s'] > 0 and r['input_tokens_per_s'] > 0
  assert r['memory']['temp_bytes'] > 0 and r['memory']['host_peak_bytes'] > 0


def test_encoder_decoder_counts_inputs_and_targets(fake_cache):
  config = _tiny('t5_span')
  b = bench.StepBench(config, batches=2)
  size, inputs, targets = b.batch_shape
  assert targets > 0 and b.tokens_per_step == size * (inputs + targets)
  per_token = model_info.describe(b.config)['train_flops_per_token']
  assert b.flops_per_step == pytest.approx(per_token * size * (inputs + targets), rel=1e-9)
  times = b.time_steps(2)  # Compiles on first use.
  assert len(times) == 2 and all(t > 0 for t in times)
  assert b.memory()['argument_bytes'] > 0


def test_bucketed_batches_time_their_most_common_shape(fake_cache):
  config = load_config('bert_classify', 'tiny')
  config.data.buckets = (8, 16, 32)
  b = bench.StepBench(config, batches=3)
  shapes = {model_info.batch_shape(batch) for batch in b.batches}
  assert len(shapes) == 1 and b.batch_shape[1] in (8, 16, 32)


def test_peak_of_an_accelerator_is_its_datasheet_figure():
  class Device:
    platform, device_kind = 'gpu', 'NVIDIA H200'

  config = load_config('gpt_lm', 'tiny')
  config.model.dtype = 'bfloat16'
  peak, source = bench.peak_flops(config, [Device()] * 8)
  assert peak == 8 * 989e12 and 'datasheet' in source
  peak, source = bench.peak_flops(config, [type('D', (), {'platform': 'gpu',
                                                          'device_kind': 'Unknown'})()])
  assert math.isnan(peak) and 'no datasheet peak' in source


def test_command_prints_the_table_and_writes_json(fake_cache, tmp_path):
  out = tmp_path / 'bench.json'
  run = subprocess.run(
      [sys.executable, '-m', 'llmjax.bench', f'--config={REPO}/configs/bert_classify.py:tiny',
       '--steps=1', '--warmup=0', '--input_batches=2', f'--out={out}',
       f'--profile={tmp_path / "profile"}', '--profile_steps=2'],
      capture_output=True, text=True, timeout=300, cwd=REPO)
  assert run.returncode == 0, run.stderr[-2000:]
  figures = json.loads(out.read_text())
  for label in ('compile', 'step (median)', 'tokens/s', 'MFU', 'input tokens/s'):
    assert label in run.stdout
  assert f'{figures["tokens_per_s"]:,.0f}' in run.stdout
  # The traced steps' operations, no more busy time than the steps took, traced to the model's
  # JAX operations.
  profile = figures['profile']
  assert 'profile: 2 steps traced' in run.stdout and profile['top'][0]['name'] in run.stdout
  assert sum(k['ms'] for k in profile['kinds'].values()) == pytest.approx(profile['busy_ms'])
  assert 0 < profile['busy_ms'] <= profile['step_ms'] * 1.05
  assert any('BertForSequenceClassification' in t['op_name'] for t in profile['top']), run.stdout
  assert 0 < profile['products']['ms'] < profile['busy_ms'] and profile['products']['flops'] > 0
