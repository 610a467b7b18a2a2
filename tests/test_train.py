"""The training loop end to end on the tiny config and fake assets: gradient accumulation, early
stopping, pretrained initialisation, outputs, and the command's errors. The same losses on 1 and 8
devices are tests/test_parallelism.py's, resuming after SIGKILL tests/test_resume.py's."""

import json
import os
import platform
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

from conftest import ONE, REPO, fitted_tiny_config, override, tiny_config
from llmjax import bench, models, optim, sharding, train
from llmjax.errors import UserError
from llmjax.models import layers
from llmjax.tasks.classification import ClassificationTask

CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py'))


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_trains_through_its_tiny_variant(tiny_run, name):
  config, workdir, result = tiny_run(name)  # 2 steps, evaluated at 2 (conftest.py)
  assert result['steps'] == 2 and np.isfinite(result['test']['loss'])
  # Every architecture Hugging Face can hold is exported (the original Transformer's cannot be).
  exported = (workdir / 'hf_export' / 'model.safetensors').exists()
  assert exported == (models.export_unsupported(config.model) is None)


def _train_losses(workdir):
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['loss'] for r in rows if r['split'] == 'train'}


def test_dropout_rng_impl_draws_other_masks_deterministically(fake_cache, tmp_path):
  losses = {}
  for name, impl in [('threefry', 'threefry2x32'), ('rbg', 'rbg'), ('rbg_again', 'rbg')]:
    config = tiny_config(num_train_steps=3, log_every_steps=1, rng_impl=impl,
                         **{'model.num_layers': 1})  # One layer: compiles faster.
    train.train_and_evaluate(config, tmp_path / name, devices=ONE)
    losses[name] = [_train_losses(tmp_path / name)[s] for s in (1, 2, 3)]
  assert losses['rbg'] == losses['rbg_again']
  assert not np.allclose(losses['rbg'], losses['threefry'], rtol=1e-6)


def test_gradient_accumulation_matches_one_big_batch(fake_cache, tmp_path):
  losses = {}
  for accum in (1, 4):
    # Without dropout the microbatches see exactly what the whole batch sees.
    config = tiny_config(num_train_steps=4, log_every_steps=1, mesh=dict(data=1, fsdp=1, tensor=1),
                         **{'optim.grad_accum_steps': accum, 'model.hidden_dropout': 0.0,
                            'model.attention_dropout': 0.0, 'model.num_layers': 1})
    train.train_and_evaluate(config, tmp_path / str(accum), devices=ONE)
    losses[accum] = _train_losses(tmp_path / str(accum))
  np.testing.assert_allclose([losses[4][s] for s in range(1, 5)],
                             [losses[1][s] for s in range(1, 5)], rtol=1e-5)


def test_onednn_products_train_as_xlas(fake_cache, tmp_path):
  # oneDNN's products (cpu_dot_library='onednn', the CPU default) and XLA's own give the same
  # losses: GPT's causal attention and tied output layer, 3 steps.
  losses, compiled = {}, {}
  for library in ('onednn', 'xla'):
    config, _ = fitted_tiny_config('gpt_lm', tmp_path)
    override(config, {'num_train_steps': 3, 'log_every_steps': 1, 'cpu_dot_library': library,
                      'mesh': dict(data=1, fsdp=1, tensor=1)})
    train.train_and_evaluate(config, tmp_path / library, devices=ONE)
    losses[library] = [_train_losses(tmp_path / library)[s] for s in (1, 2, 3)]
    b = bench.StepBench(config, batches=1, devices=ONE)
    b.compile()
    compiled[library] = b.compiled.as_text()
  np.testing.assert_allclose(losses['onednn'], losses['xla'], rtol=1e-5)
  x86 = platform.machine().lower() in ('x86_64', 'amd64')  # oneDNN's products are x86 only.
  assert ('__onednn_fusion' in compiled['onednn']) == x86
  assert '__onednn_fusion' not in compiled['xla']


def test_compiler_options_only_for_onednn_on_cpu():
  cpu, gpu = (type('D', (), {'platform': p})() for p in ('cpu', 'gpu'))
  config = tiny_config(cpu_dot_library='onednn')
  assert (train.compiler_options(config, [cpu]) == train.ONEDNN_DOTS) == (
      platform.machine().lower() in ('x86_64', 'amd64'))
  assert train.compiler_options(config, [gpu]) is None
  config.cpu_dot_library = 'xla'
  assert train.compiler_options(config, [cpu]) is None


def test_steps_with_onednn_products_pad_the_products_it_runs_slowly():
  # jit_step traces a step within layers.pad_products exactly when its products are oneDNN's: a
  # 400 x 8 by 8 x 512 product (one of oneDNN's slow shapes) then has its kernel padded.
  # The persistent compilation cache (on in the tests) cannot store the oneDNN step, and llmjax
  # keeps JAX's warning that says so from repeating on every run.
  x, kernel = np.ones((400, 8), np.float32), np.ones((8, 512), np.float32)
  mesh = jax.sharding.Mesh(np.array(ONE), ('data',))
  for library in ('onednn', 'xla'):
    config = tiny_config()
    config.cpu_dot_library = library
    step = train.jit_step(lambda x, k: layers.project(x, k, 1), config, mesh)
    text = step.lower(x, kernel).as_text()
    padded = train.compiler_options(config, ONE) is not None
    assert text.count('stablehlo.pad') == padded, library
    with warnings.catch_warnings(record=True) as caught:
      np.testing.assert_array_equal(step(x, kernel), x @ kernel)
    assert not [w for w in caught if 'compilation cache' in str(w.message)], library


def test_run_writes_config_metrics_summary_and_learns(classifier_run):
  tmp_path, result, out = classifier_run  # tiny_config(num_epochs=4), trained once (conftest.py)
  resolved = json.loads((tmp_path / 'config.json').read_text())
  assert resolved['model']['hidden_size'] == 32 and resolved['optim']['lr'] == 5e-3
  splits = {json.loads(line)['split'] for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()}
  assert splits == {'train', 'validation', 'test'}
  assert list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
  assert json.loads((tmp_path / 'results.json').read_text())['test'] == result['test']
  exported = json.loads((tmp_path / 'hf_export' / 'config.json').read_text())
  assert exported['id2label'] == {'0': 'negative', '1': 'positive'}
  assert (tmp_path / 'hf_export' / 'model.safetensors').stat().st_size > 0
  # The fake sentences carry their label in their words: a working loop learns it.
  assert result['test']['accuracy'] > 0.9, result
  assert sorted(result['epoch_loss']) == [0, 1, 2, 3]
  assert result['epoch_loss'][3] < result['epoch_loss'][0]
  assert result['best_step'] in [e['step'] for e in result['validation']]
  assert 'epoch 4: train loss' in out and 'test (best checkpoint, step' in out


def test_early_stopping_and_best_checkpoint(fake_cache, tmp_path):
  # A learning rate too small to change the metric: the first evaluation stays the best.
  config = tiny_config(num_epochs=5, **{'optim.lr': 1e-12, 'eval.every_steps': 4,
                                        'eval.patience': 2, 'eval.metric': 'loss',
                                        'eval.mode': 'min'})
  config.optim.warmup_frac = 0.0
  result = train.train_and_evaluate(config, tmp_path, devices=ONE)
  assert result['stopped_early']
  assert result['steps'] == 12  # Evaluations at 4 (best), 8 and 12: two without improvement.
  assert result['best_step'] == 4
  assert (tmp_path / 'checkpoints' / '4').is_dir()
  # Started again, a run that stopped early does not train on; it reports the same result.
  again = train.train_and_evaluate(config, tmp_path, devices=ONE)
  assert again['steps'] == 12 and again['test'] == result['test']


def test_pretrained_weights_land_on_their_shards(tmp_path):
  """An HF directory's tensors replace the initial values, sharded over an 8-device mesh."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  hf = transformers.BertModel(transformers.BertConfig(
      vocab_size=98, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64))
  hf.save_pretrained(tmp_path / 'hf')
  config = tiny_config(mesh=dict(data=2, fsdp=2, tensor=2))
  config.model.init_from = str(tmp_path / 'hf')
  models.resolve(config)
  assert config.model.vocab_size == 98
  model = models.build(config.model, num_labels=2)
  tx = optim.make(config.optim, 10)
  mesh = sharding.make_mesh(config)
  task = ClassificationTask(model, ['negative', 'positive'])
  state, shardings = train.create_train_state(task, tx, mesh, config, jax.random.key(0))
  params = train.load_pretrained(state.params, models.pretrained(config.model))
  emb = params['bert']['embeddings']['word_embeddings']['embedding']
  np.testing.assert_array_equal(np.asarray(emb), hf.embeddings.word_embeddings.weight.detach().numpy())
  assert emb.sharding == shardings.params['bert']['embeddings']['word_embeddings']['embedding']
  assert not emb.sharding.is_fully_replicated
  # A checkpoint of another architecture is refused with one line.
  wrong = jax.tree.map(lambda x: np.zeros((3,) + x.shape[1:]), models.pretrained(config.model))
  with pytest.raises(UserError, match='has shape'):
    train.load_pretrained(state.params, wrong)
  # A vocabulary the mesh cannot split evenly is named, with the fix.
  config.model.vocab_size = 99
  with pytest.raises(UserError, match="dimension of 99 along logical axis 'vocab'.*map 'vocab' to None"):
    task = ClassificationTask(models.build(config.model, 2), ['a', 'b'])
    train.create_train_state(task, tx, mesh, config, jax.random.key(0))


def _main(workdir, cache, *extra):
  # The suite's environment (conftest.py): its compilation cache and how it compiles.
  env = {**os.environ, 'LLMJAX_CACHE': str(cache)}
  return subprocess.Popen(
      [sys.executable, '-m', 'llmjax.main', f'--config={REPO}/configs/bert_classify.py:tiny',
       f'--workdir={workdir}', '--config.num_epochs=4', *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finished_steps(workdir):
  ckpts = workdir / 'checkpoints'
  return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.exists() else []


def test_cli_reports_user_errors_in_one_line(fake_cache_dir, tmp_path):
  run = _main(tmp_path, fake_cache_dir, '--config.optim.lr=-1')
  out, _ = run.communicate(timeout=120)
  assert run.returncode == 2
  assert out.strip().splitlines()[-1] == (
      'llmjax: error: config.optim.lr=-1.0 must be > 0: pass e.g. --config.optim.lr=3e-5')
  # Found while the flags are parsed: an unknown argument after the config file's colon.
  run = subprocess.run(
      [sys.executable, '-m', 'llmjax.main', f'--config={REPO}/configs/bert_classify.py:epoch=1',
       f'--workdir={tmp_path}'], capture_output=True, text=True, timeout=120)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines() == [
      "llmjax: error: unknown config argument 'epoch': choose from tiny, epochs, max_len, batch, lr, "
      'lora']
