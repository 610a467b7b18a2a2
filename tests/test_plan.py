"""The planning command: target names, the batch it builds without data, the figures of a step
planned on the test's CPU devices, and (where libtpu is installed) real plans for a TPU slice."""

import importlib.util
import json
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec

from conftest import REPO, load_config, tiny_config
from llmjax import lora, model_info, models, optim, plan, sharding, tasks, train
from llmjax.errors import UserError


@pytest.mark.parametrize('text, name, devices', [
    ('v5e:4x4', 'v5e:4x4', 16),
    ('V5E-16', 'v5e:4x4', 16),
    ('v5litepod-8', 'v5e:2x4', 8),
    ('v5e-256', 'v5e:16x16', 256),
    ('v5e-1', 'v5e:1x1', 1),
    ('v6e-64', 'v6e:8x8', 64),
    ('v4-8', 'v4:2x2x1', 4),  # v4 and v5p names count TensorCores, two per chip.
    ('v4-32', 'v4:2x2x4', 16),
    ('v4-128', 'v4:4x4x4', 64),
    ('v5p-256', 'v5p:4x4x8', 128),
    ('v4:2x2x2', 'v4:2x2x2', 8),
    ('8xH100', '8xH100', 8),
    ('16 x h100', '16xH100', 16),
])
def test_target_names(text, name, devices):
  target = plan.parse_target(text)
  assert (target.name, target.num_devices) == (name, devices)


def test_a_slice_knows_its_cloud_name_and_memory():
  assert plan.parse_target('v4:2x2x4').cloud_name == 'v4-32'
  assert plan.parse_target('v5e:4x4').cloud_name == 'v5litepod-16'
  assert plan.parse_target('v5e-16').hbm_bytes == 16 * 2 ** 30
  assert plan.parse_target('v5p-8').hbm_bytes == 95 * 2 ** 30
  assert plan.parse_target('8xH100').platform == 'cuda'


@pytest.mark.parametrize('text, says', [
    ('v9:4x4', 'v5e:4x4'),          # no such generation
    ('tpu', 'v5e:4x4'),
    ('v5e:4x4x2', 'v5e:2x2'),       # v5e slices are 2-D, v4 3-D
    ('v4:4x4', 'v4:2x2x2'),
    ('v4-31', 'multiple of 2'),     # an odd number of TensorCores
    ('v5e-12', 'give the topology'),
    ('12xH100', 'multiple of 8'),
    ('8xA100', 'v5e:4x4'),
])
def test_bad_targets_are_one_line_errors(text, says):
  with pytest.raises(UserError) as e:
    plan.parse_target(text)
  assert says in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('target, package, extra', [('v5e:4x4', 'libtpu', 'tpu'),
                                                    ('8xH100', 'jax_plugins', 'plan-cuda')])
def test_without_the_compiler_the_error_says_how_to_install_it(target, package, extra,
                                                                monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == package else find_spec(name, *a))
  with pytest.raises(UserError, match=rf"pip install -e '\.\[{extra}\]'"):
    plan.target_devices(plan.parse_target(target))


def test_a_fine_tuning_task_is_refused_before_any_compiler_loads():
  """Its rows come from its data, bucketed by length: nothing to build them from the config."""
  with pytest.raises(UserError, match=r"task.name='classification': llmjax.plan plans the packed"):
    plan.plan(tiny_config(), plan.parse_target('v5e-16'))


def _tiny(name, **overrides):
  config = load_config(name, 'tiny')
  # The fake corpus holds too few held-out articles for the config's own splits.
  config.data.splits = dict(train='train[:80%]', validation='train[80%:]', test='train[80%:]')
  for key, value in overrides.items():
    section, field = key.split('.')
    config[section][field] = value
  return config


# Translation's rows are span corruption's (llmjax.data.lm._seq2seq_format), at their own lengths.
@pytest.mark.parametrize('name', ['gpt_lm', 'bert_mlm', 't5_span', 'gpt_sft'])
def test_the_batch_built_without_data_is_the_pipelines(name, fake_cache, tmp_path):
  config = _tiny(name)
  if name == 'gpt_sft':  # Instruction data is a user's JSON lines files.
    lines = [json.dumps({'prompt': f'is {w} good ?', 'response': w}) for w in ('fun', 'dull')]
    (tmp_path / 'chat.jsonl').write_text('\n'.join(lines * 8) + '\n')
    config.data.update(name='jsonl', instruction='', splits={
        split: str(tmp_path / 'chat.jsonl') for split in ('train', 'validation', 'test')})
  config, data = train.prepare(config, jax.device_count())
  real = next(data.train_iter(0))
  mesh = sharding.make_mesh(config, jax.devices())
  built = plan.abstract_batch(config, mesh)
  assert {k: (v.shape, v.dtype) for k, v in built.items()} == {
      k: (v.shape, v.dtype) for k, v in real.items()}
  assert all(v.sharding == sharding.batch_sharding(mesh, config) for v in built.values())


def test_adafactor_state_is_sharded_where_shaped_like_its_parameter():
  """T5's Adafactor keeps factored row and column moments: replicated, the rest like the params."""
  config = _tiny('t5_span', **{'optim.name': 'adafactor', 'optim.weight_decay': 0.0})
  config.mesh.update(data=1, fsdp=-1)
  models.resolve(config)
  mesh = sharding.make_mesh(config, jax.devices())
  tx = optim.make(config.optim, 10, lora.trainable(config))
  state = train.abstract_train_state(tasks.task_for(config), tx, mesh, config, jax.random.key(0))
  params = {p: x for p, x in jax.tree_util.tree_leaves_with_path(state.params)}
  factored = sharded = 0
  for path, x in jax.tree_util.tree_leaves_with_path(state.opt_state):
    like = [p for p in params if path[-len(p):] == p]
    if not like:
      continue
    if x.shape == params[like[0]].shape:
      assert x.sharding == params[like[0]].sharding
      sharded += x.sharding.spec != PartitionSpec()
    else:
      assert x.sharding.is_fully_replicated
      factored += 1
  assert factored and sharded


@pytest.fixture(scope='module')
def cpu_plan():
  """The tiny GPT planned on the test's 8 CPU devices (fsdp=8) as if they were a v5e:2x4 slice."""
  config = _tiny('gpt_lm')
  config.mesh.update(data=1, fsdp=-1)
  return config, plan.plan(config, plan.parse_target('v5e:2x4'), devices=jax.devices())


def test_a_planned_step_reports_the_sharded_state_and_its_buffers(cpu_plan):
  config, r = cpu_plan
  params = model_info.describe(config)['params']
  assert r['params'] == params and r['num_devices'] == 8
  assert r['mesh'] == {'data': 1, 'fsdp': 8, 'tensor': 1}
  # Split 8 ways, except the leaves the rules leave whole (biases, norms): a few percent more.
  assert params * 4 / 8 <= r['param_bytes'] <= params * 4 / 8 * 1.2
  assert 0 <= r['optimizer_state_bytes'] - 2 * r['param_bytes'] <= 16  # AdamW: 2 moments, a count
  assert r['batch_bytes'] == 8 // 8 * 32 * 4 * 5  # 1 row per device: 4 int32 and 1 float32 rows
  assert r['temp_bytes'] > 0
  assert r['total_bytes'] >= r['argument_bytes'] + r['temp_bytes'] - r['alias_bytes']
  per_token = model_info.describe(config)['train_flops_per_token']
  assert r['flops_per_step'] == pytest.approx(8 * 32 * per_token)
  assert r['fits'] and r['verdict'] == 'FITS'
  table = plan.format_table(r)
  for text in ('v5e:2x4', 'data=1 fsdp=8 tensor=1', plan._gib(r['param_bytes']), 'FITS'):
    assert text in table


def test_a_gpu_step_that_exceeds_the_memory_does_not_fit(cpu_plan, monkeypatch):
  config, r = cpu_plan
  name, _, spec = plan.GPUS['h100']
  monkeypatch.setitem(plan.GPUS, 'h100', (name, r['total_bytes'] - 1, spec))
  small = plan.plan(config, plan.parse_target('8xH100'), devices=jax.devices())
  assert small['total_bytes'] == r['total_bytes']
  assert not small['fits'] and small['verdict'].startswith('DOES NOT FIT: ')
  fits, verdict = plan.gpu_verdict(r['total_bytes'], r['total_bytes'] + 1)
  assert fits and 'XLA_PYTHON_CLIENT_MEM_FRACTION' in verdict
  assert plan.gpu_verdict(r['total_bytes'], 2 * r['total_bytes']) == (True, 'FITS')


def test_a_flash_attention_plan_without_cudnn_says_how_to_install_it(cpu_plan, monkeypatch):
  def no_cudnn(*args):
    raise RuntimeError('cuDNN not found.')  # What JAX raises while tracing cuDNN's attention.
  monkeypatch.setattr(train, 'abstract_train_state', no_cudnn)
  with pytest.raises(UserError, match='pip install nvidia-cudnn-cu13 .*attention_kernel=.dot_product'):
    plan.plan(cpu_plan[0], plan.parse_target('8xH100'), devices=jax.devices())


def _plan_command(tmp_path, *args):
  out = tmp_path / 'plan.json'
  run = subprocess.run([sys.executable, '-m', 'llmjax.plan', *args, f'--out={out}'],
                       capture_output=True, text=True, timeout=900, cwd=REPO)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'Traceback' not in run.stderr
  return run.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_bert_base_on_a_v5e_slice(tmp_path):
  """BERT-base's paper config (layers scanned: the compile's time and code stay those of one),
  compiled by the TPU compiler for 16 v5e chips with its state split 16 ways (fsdp=16)."""
  pytest.importorskip('libtpu')
  stdout, r = _plan_command(tmp_path, f'--config={REPO}/configs/bert_mlm.py:bert_base',
                            '--config.model.scan_layers=true', '--target=v5e-16',
                            '--config.mesh.data=1', '--config.mesh.fsdp=-1')
  config = load_config('bert_mlm', 'bert_base')
  info = model_info.describe(config)
  assert r['devices'] == '16 x TPU v5 lite' and r['params'] == info['params'] == 109_514_298
  # Split 16 ways, except the leaves the rules leave whole (biases, norms).
  assert info['params'] * 4 / 16 <= r['param_bytes'] <= info['params'] * 4 / 16 * 1.05
  assert 0 <= r['optimizer_state_bytes'] - 2 * r['param_bytes'] <= 16  # AdamW: 2 moments, a count
  assert r['batch_bytes'] == 256 // 16 * 128 * 4 * 6  # 16 rows per device: 5 int32, 1 float32
  assert r['padding_bytes'] >= 0
  assert r['temp_bytes'] > r['argument_bytes'] and r['code_bytes'] > 0
  assert r['fits'] and r['verdict'] == 'FITS' and r['total_bytes'] < r['hbm_bytes'] == 16 * 2 ** 30
  assert r['flops_per_step'] == pytest.approx(256 * 128 * info['train_flops_per_token'])
  for text in ('v5e:4x4', plan._gib(r['param_bytes']), plan._gib(r['total_bytes']), 'FITS'):
    assert text in stdout


@pytest.mark.slow
def test_cudnn_flash_attention_on_h100s(tmp_path):
  """The tiny GPT with cuDNN's flash attention, compiled by XLA's GPU compiler for 8 H100s: its
  init and step are traced for the target's GPUs, not for this machine's CPU."""
  pytest.importorskip('jax_plugins.xla_cuda13')
  pytest.importorskip('nvidia.cudnn')
  stdout, r = _plan_command(tmp_path, f'--config={REPO}/configs/gpt_lm.py:tiny', '--target=8xH100',
                            '--config.model.dtype=bfloat16', '--config.model.attn_dropout=0',
                            '--config.model.attention_kernel=cudnn_flash')
  assert r['compiled'] and r['fits'] and r['devices'] == '8 x NVIDIA H100 80GB HBM3'
  assert r['temp_bytes'] > 0 and 'FITS' in stdout


@pytest.mark.slow
def test_a_step_that_does_not_fit_is_one_line(tmp_path):
  """A million rows of the tiny GPT on a v5e:2x2: the TPU compiler's RESOURCE_EXHAUSTED."""
  pytest.importorskip('libtpu')
  stdout, r = _plan_command(tmp_path, f'--config={REPO}/configs/gpt_lm.py:tiny', '--target=v5e:2x2',
                            '--config.batch_size=1048576')
  assert not r['fits'] and not r['compiled']
  verdict = next(line for line in stdout.splitlines() if line.startswith('verdict'))
  assert 'DOES NOT FIT: ' in verdict and 'HBM' in verdict
