"""Parallelism presets: the rules they resolve to, the 1-device losses under each on 8 devices, FSDP's
per-device memory of parameters and optimizer state, and the one-line error for an unknown preset."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from conftest import tiny_config
from llmjax import config_lib, optim, sharding, tasks, train
from llmjax.errors import UserError

# The rules llmjax used before presets existed: the default preset must still give exactly these.
RECORDED_DEFAULT_RULES = {'batch': ('data', 'fsdp'), 'length': None, 'embed': 'fsdp',
                          'heads': 'tensor', 'kv': None, 'mlp': 'tensor', 'vocab': 'tensor',
                          'layers': None}
# Each preset's mesh on 8 devices: the default (data=2, fsdp=2, tensor=2), each alone, and all of them
# together with each layer rematerialised besides.
PRESETS = {'data+fsdp+tensor': dict(data=2, fsdp=2, tensor=2), 'data': dict(data=8),
           'fsdp': dict(fsdp=8), 'data+tensor': dict(data=4, tensor=2),
           'fsdp+tensor+sequence': dict(fsdp=4, tensor=2)}
REMAT = {'fsdp+tensor+sequence': 'full'}
ONE_DEVICE = dict(data=1, fsdp=1, tensor=1)
STEPS = 3


def _axes(parallelism, logical, **overrides):
  return nn.logical_to_mesh_axes(logical, sharding.rules(tiny_config(parallelism=parallelism,
                                                                     **overrides)))


def test_presets_resolve_to_their_rules():
  assert dict(sharding.rules(tiny_config())) == RECORDED_DEFAULT_RULES
  residual, qkv, mlp = ('batch', 'length', 'embed'), ('batch', 'length', 'heads', 'kv'), (
      'batch', 'length', 'mlp')
  assert _axes('data', residual) == PartitionSpec('data', None, None)
  # FSDP: parameters split along embed, activations along the batch only.
  assert _axes('fsdp', ('vocab', 'embed')) == PartitionSpec(None, 'fsdp')
  assert _axes('fsdp', residual) == PartitionSpec('fsdp', None, None)
  assert _axes('data+fsdp', residual) == PartitionSpec(('data', 'fsdp'), None, None)
  assert _axes('tensor', ('embed', 'heads', 'kv')) == PartitionSpec(None, 'tensor', None)
  # Sequence parallelism: positions split over tensor between blocks, heads and hidden units inside.
  for parallelism in ('tensor+sequence', 'sequence+tensor'):
    assert _axes(parallelism, residual) == PartitionSpec(None, 'tensor', None)
    assert _axes(parallelism, qkv) == PartitionSpec(None, None, 'tensor', None)
    assert _axes(parallelism, mlp) == PartitionSpec(None, None, 'tensor')
  # Explicit rules replace the presets' rule of the names they list, and only those.
  rules = sharding.rules(tiny_config(parallelism='fsdp+tensor', logical_rules=(('vocab', None),)))
  assert rules[0] == ('vocab', None)
  assert dict(rules) == {**RECORDED_DEFAULT_RULES, 'batch': 'fsdp', 'vocab': None}


def test_unknown_preset_or_logical_axis_is_one_line_error():
  with pytest.raises(UserError) as info:
    config_lib.validate(tiny_config(parallelism='fsdp+tensr'), num_devices=8)
  assert str(info.value) == ("config.parallelism='fsdp+tensr' names an unknown preset 'tensr': join "
                             'presets of data, fsdp, tensor, sequence with +, e.g. fsdp+tensor')
  with pytest.raises(UserError, match=r"names an unknown logical axis 'vocb': use one of batch, "):
    config_lib.validate(tiny_config(logical_rules=(('vocb', None),)), num_devices=8)


def _batch(config, seed, rows=16, length=16):
  rng = np.random.default_rng(seed)
  mask = (np.arange(length)[None] < rng.integers(4, length + 1, (rows, 1))).astype(np.int32)
  ids = rng.integers(5, config.model.vocab_size, (rows, length)).astype(np.int32) * mask
  return {'input_ids': ids, 'token_type_ids': np.zeros_like(ids), 'attention_mask': mask,
          'label': rng.integers(0, 2, rows).astype(np.int32), 'weight': np.ones(rows, np.float32)}


def _config(parallelism: str | None):
  """The tiny config, one layer deep (compiles faster), under a preset of PRESETS on its mesh, or
  (None) on 1 device."""
  return tiny_config(parallelism=parallelism or 'data+fsdp+tensor',
                     mesh={**ONE_DEVICE, **PRESETS.get(parallelism, {})},
                     **{'model.num_layers': 1, 'model.remat': REMAT.get(parallelism, 'none')})


@functools.cache
def _initial_state():
  """The tiny model's train state on the host: every mesh starts from these values."""
  config = _config(None)
  task, tx = tasks.task_for(config), optim.make(config.optim, 10)
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  return jax.device_get(train.create_train_state(task, tx, mesh, config, jax.random.key(0))[0])


@functools.cache
def _run(parallelism: str | None):
  """(mean loss of each step, compiled per-device bytes of the train state) of _config."""
  config = _config(parallelism)
  task, tx = tasks.task_for(config), optim.make(config.optim, 10)
  devices = jax.devices()[:int(np.prod(list(config.mesh.values())))]
  mesh = sharding.make_mesh(config, devices)
  abstract = train.abstract_train_state(task, tx, mesh, config, jax.random.key(0))
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  state = jax.device_put(_initial_state(), shardings)
  batches = [sharding.global_batch(_batch(config, seed), mesh, config) for seed in range(STEPS)]
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
    step = train.make_train_step(task, tx, config, mesh, shardings)
    step = step.lower(state, batches[0]).compile()  # Compiled once: run and measured.
  # The compiled step's arguments are the train state (parameters, optimizer state, step) and the
  # batch: what a device holds of the state is the rest.
  batch_bytes = sum(x.addressable_shards[0].data.nbytes for x in batches[0].values())
  state_bytes = step.memory_analysis().argument_size_in_bytes - batch_bytes
  losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']) / float(metrics['weight']))
  return losses, state_bytes


@pytest.mark.parametrize('parallelism', PRESETS)
def test_presets_give_the_one_device_losses(parallelism):
  one, _ = _run(None)
  eight, _ = _run(parallelism)
  assert len(set(one)) == STEPS  # The model trains: every step sees another loss.
  np.testing.assert_allclose(eight, one, rtol=1e-4)


def test_fsdp_holds_an_eighth_of_parameters_and_optimizer_state_per_device():
  _, one = _run(None)
  _, fsdp = _run('fsdp')
  # Parameters and Adam's two moments split 8 ways along embed; what stays whole on every device
  # (biases without an embed axis, the step counter) keeps the figure just above an eighth.
  assert one / 8 <= fsdp <= one / 6, (fsdp, one)
