"""LoRA and freezing: the adapted model starts as the base model, only adapters and the head train,
the optimizer holds state for them alone, merging computes the adapted model, and an end-to-end LoRA
run exports a model that transformers loads with our logits."""

import os

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: never touch the network

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from conftest import ONE, load_config, tiny_config
from llmjax import lora, model_info, optim, sharding, tasks, train
from llmjax.errors import UserError

MESH = dict(data=2, fsdp=2, tensor=2)
LORA = {'lora.rank': 4, 'lora.alpha': 8.0, 'lora.targets': r'attention/(q|v|out)/kernel$',
        'mesh': MESH}


def _flat(tree):
  return {optim.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _batch(config, rows=16, length=16, seed=0):
  rng = np.random.default_rng(seed)
  mask = (np.arange(length)[None] < rng.integers(4, length + 1, (rows, 1))).astype(np.int32)
  ids = rng.integers(5, config.model.vocab_size, (rows, length)).astype(np.int32) * mask
  return {'input_ids': ids,
          'token_type_ids': np.zeros((rows, length), np.int32), 'attention_mask': mask,
          'label': rng.integers(0, 2, rows).astype(np.int32), 'weight': np.ones(rows, np.float32)}


def _train(config, steps=3):
  """(state before, state after `steps` steps, task, tx) on an 8-device mesh."""
  task = tasks.task_for(config)
  tx = optim.make(config.optim, 10, lora.trainable(config))
  mesh = sharding.make_mesh(config)
  state, shardings = train.create_train_state(task, tx, mesh, config, jax.random.key(0))
  before = jax.device_get(state)
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
    step = train.make_train_step(task, tx, config, mesh, shardings)
    for i in range(steps):
      state, metrics = step(state, sharding.global_batch(_batch(config, seed=i), mesh, config))
  assert np.isfinite(float(metrics['grad_norm'])) and float(metrics['grad_norm']) > 0
  return before, jax.device_get(state), task, shardings


def _assert_moments_of(trainable, opt_state):
  """Adam's two moments exist for the `trainable` parameters only (plus scalar step counts)."""
  assert 2 * trainable <= sum(x.size for x in jax.tree.leaves(opt_state)) <= 2 * trainable + 8


@pytest.mark.parametrize('scan_layers', [False, True])
def test_only_adapters_and_head_train_and_the_optimizer_holds_only_them(scan_layers):
  config = tiny_config(**LORA, **{'model.scan_layers': scan_layers})
  before, after, _, shardings = _train(config)
  old, new = _flat(before.params), _flat(after.params)
  moved = {k for k in old if not np.array_equal(old[k], new[k])}
  layers = 'layers' if scan_layers else 'layer_1'
  adapters = {k for k in old if k.endswith(('/lora_a', '/lora_b'))}
  assert len(adapters) == 2 * 3 * (1 if scan_layers else 2)
  # Everything else is bitwise unchanged; B left zero at step 0, so A moves from step 2 on.
  assert moved == adapters | {'classifier/kernel', 'classifier/bias'}
  # The adapters shard like the kernel they adapt: q's A over its input (embed -> fsdp), B over
  # its heads (tensor), the output projection's the other way round; scan keeps 'layers'.
  lead = (None,) if scan_layers else ()
  spec = lambda name: _flat(jax.tree.map(lambda s: s.spec, shardings.params))[  # noqa: E731
      f'bert/{layers}/attention/{name}']
  assert spec('q/lora_a') == PartitionSpec(*lead, 'fsdp', None)
  assert spec('q/lora_b') == PartitionSpec(*lead, None, 'tensor', None)
  assert spec('out/lora_a') == PartitionSpec(*lead, 'tensor', None, None)
  assert spec('out/lora_b') == PartitionSpec(*lead, None, 'fsdp')
  trainable = sum(old[k].size for k in adapters | {'classifier/kernel', 'classifier/bias'})
  _assert_moments_of(trainable, after.opt_state)
  total = sum(x.size for x in old.values())
  assert lora.parameter_counts(after.params, config) == (trainable, total)


def test_step_0_is_the_base_model_and_merging_is_the_low_rank_update():
  config = tiny_config(**LORA)
  base = tasks.task_for(tiny_config(mesh=MESH))
  task = tasks.task_for(config)
  rng, batch = jax.random.key(3), _batch(config)
  params = nn.unbox(task.init(rng, 16))
  base_params = nn.unbox(base.init(rng, 16))
  # The base weights are those of the same seed without LoRA, and B = 0: the same logits, exactly.
  assert lora.merge(params, config).keys() == base_params.keys()
  jax.tree.map(np.testing.assert_array_equal, lora.merge(params, config), base_params)
  np.testing.assert_array_equal(jax.jit(task.logits)(params, batch),
                                jax.jit(base.logits)(base_params, batch))

  # With B != 0, the merged weight applies W x + alpha/r * B A x, the paper's forward pass.
  adapted = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.1 if optim.path_str(p).endswith('lora_b') else x, params)
  merged = lora.merge(adapted, config)
  attention = lambda tree: tree['bert']['layer_0']['attention']  # noqa: E731
  x = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
  q, w = attention(adapted)['q'], attention(merged)['q']['kernel']
  expected = (jnp.einsum('ne,ehk->nhk', x, q['kernel'])
              + 2.0 * jnp.einsum('nr,rhk->nhk', x @ q['lora_a'], q['lora_b']))
  np.testing.assert_allclose(jnp.einsum('ne,ehk->nhk', x, w), expected, atol=1e-5)
  heads = x.reshape(5, 4, 8)  # The output projection contracts (heads, kv).
  out, w = attention(adapted)['out'], attention(merged)['out']['kernel']
  expected = (jnp.einsum('nhk,hke->ne', heads, out['kernel'])
              + 2.0 * jnp.einsum('nhk,hkr,re->ne', heads, out['lora_a'], out['lora_b']))
  np.testing.assert_allclose(jnp.einsum('nhk,hke->ne', heads, w), expected, atol=1e-5)
  # The wrapped task runs the merged model, and the merged params alone give its logits.
  logits = task.logits(adapted, batch)
  assert np.abs(logits - base.logits(base_params, batch)).max() > 1e-4
  np.testing.assert_allclose(base.logits(merged, batch), logits, atol=1e-5)
  np.testing.assert_allclose(task.predict(adapted, batch)['probabilities'],
                             jax.nn.softmax(logits), atol=1e-6)


def test_freezing_by_regex_alone():
  config = tiny_config(mesh=MESH, **{'optim.freeze': r'^bert/(embeddings|layer_0)/'})
  before, after, _, _ = _train(config, steps=2)
  old, new = _flat(before.params), _flat(after.params)
  frozen = {k for k in old if k.startswith(('bert/embeddings/', 'bert/layer_0/'))}
  for k in old:
    assert np.array_equal(old[k], new[k]) == (k in frozen), k
  _assert_moments_of(sum(old[k].size for k in old if k not in frozen), after.opt_state)
  # Regexes that select nothing are named with the fix.
  config.optim.freeze = r'^encoder/'
  with pytest.raises(UserError, match=r"optim.freeze='\^encoder/' matches no parameter"):
    _train(config, steps=1)
  config.optim.freeze = ''
  config.lora.update(rank=4, targets=r'attention/q/bias$')
  with pytest.raises(UserError, match='not a weight matrix'):
    _train(config, steps=1)


def test_lora_config_trains_few_parameters_of_minilm():
  config = load_config('bert_classify', 'lora')
  config.model.update(init_from='', hidden_size=384, num_layers=6, num_heads=12,
                      intermediate_size=1536)
  info = model_info.describe(config)
  per_layer = 4 * 8 * (384 + 384) + 2 * 8 * (384 + 1536)  # q, k, v, out; wi, wo
  adapters = 6 * per_layer + 8 * (384 + 384)  # and the pooler
  assert info['params'] == 22_713_216 + 384 * 2 + 2 + adapters
  assert info['trainable_params'] == adapters + 384 * 2 + 2
  assert info['trainable_params'] / info['params'] < 0.02


def test_lora_run_exports_merged_weights_that_transformers_loads(fake_cache, tmp_path):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  config = load_config('bert_classify', 'tiny,lora')
  config.update(num_train_steps=6)
  config.eval.every_steps = 6
  result = train.train_and_evaluate(config, tmp_path, devices=ONE)
  assert result['params']['trainable'] < 0.2 * result['params']['total']
  task = tasks.task_for(train.run_config(tmp_path))
  params, _, _ = train.restore_params(task, train.run_config(tmp_path), tmp_path)
  assert any(k.endswith('lora_b') for k in _flat(params))
  batch = _batch(config, rows=8)
  ours = np.asarray(jax.jit(task.logits)(params, batch))  # Jitted: faster than op by op.
  hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / 'hf_export').eval()
  with torch.no_grad():
    theirs = hf(**{k: torch.tensor(batch[k], dtype=torch.long)
                   for k in ('input_ids', 'token_type_ids', 'attention_mask')}).logits.numpy()
  np.testing.assert_allclose(theirs, ours, atol=1e-4)
  # The export holds the adapters' update: the base weights alone (flax ignores the adapters
  # beside them) compute something else.
  assert not np.allclose(jax.jit(task.task.logits)(params, batch), ours, atol=1e-4)
