"""The optimizer built from `config.optim`: which parameters get weight decay, the learning-rate
schedule's values at known steps, gradient clipping and decoupled weight decay in `optim.make`."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from llmjax import config_lib, optim


def _optim_config(**changes):
  config = config_lib.base_config().optim
  for key, value in changes.items():
    config[key] = value
  return config


def _bert_like_params():
  """A parameter tree with the path shapes of BERT's, tiny leaves."""
  leaf = lambda *shape: jnp.ones(shape, jnp.float32)  # noqa: E731
  return {
      'bert': {
          'embeddings': {
              'word': {'embedding': leaf(8, 4)},
              'position': {'embedding': leaf(6, 4)},
              'ln': {'scale': leaf(4), 'bias': leaf(4)},
          },
          'layer_0': {
              'attention': {
                  'q': {'kernel': leaf(4, 4), 'bias': leaf(4)},
                  'out': {'kernel': leaf(4, 4), 'bias': leaf(4)},
              },
              'attention_ln': {'scale': leaf(4), 'bias': leaf(4)},
              'mlp': {'wi': {'kernel': leaf(4, 8), 'bias': leaf(8)}},
          },
      },
      'classifier': {'kernel': leaf(4, 2), 'bias': leaf(2)},
  }


def test_path_str_joins_keys():
  paths = [optim.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(_bert_like_params())]
  assert 'bert/layer_0/attention/q/kernel' in paths
  assert 'classifier/bias' in paths


def test_decay_mask_decays_kernels_and_embeddings_not_biases_or_layernorm():
  mask = optim.decay_mask(_bert_like_params(), config_lib.base_config().optim.no_decay)
  flat = {optim.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
  decayed = {k for k, v in flat.items() if v}
  assert decayed == {
      'bert/embeddings/word/embedding', 'bert/embeddings/position/embedding',
      'bert/layer_0/attention/q/kernel', 'bert/layer_0/attention/out/kernel',
      'bert/layer_0/mlp/wi/kernel', 'classifier/kernel'}
  # The mask mirrors the parameter tree, as optax's `mask=` needs.
  assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(_bert_like_params())


def test_decay_mask_follows_the_regex():
  # The choice is data, not code: a regex that also excludes embeddings excludes them.
  mask = optim.decay_mask(_bert_like_params(), r'(bias|scale|embedding)$')
  assert not mask['bert']['embeddings']['word']['embedding']
  assert mask['classifier']['kernel']


def _lr_at(schedule, steps):
  return [float(schedule(s)) for s in steps]


def test_learning_rate_linear_warmup_then_linear_decay_to_zero():
  config = _optim_config(lr=1.0, warmup_frac=0.1, schedule='linear')
  schedule = optim.learning_rate(config, total_steps=100)  # 10 warmup steps, 90 decay steps
  np.testing.assert_allclose(_lr_at(schedule, [0, 5, 10, 55, 100]), [0.0, 0.5, 1.0, 0.5, 0.0],
                             atol=1e-6)
  # Past the end it stays at 0 rather than going negative.
  assert float(schedule(150)) == pytest.approx(0.0, abs=1e-7)


def test_learning_rate_cosine_after_warmup():
  config = _optim_config(lr=2.0, warmup_frac=0.2, schedule='cosine')
  schedule = optim.learning_rate(config, total_steps=50)  # 10 warmup, 40 cosine steps
  expected = [1.0, 2.0, 1.0 + math.cos(math.pi / 4), 1.0, 0.0]
  np.testing.assert_allclose(_lr_at(schedule, [5, 10, 20, 30, 50]), expected, atol=1e-5)


def test_learning_rate_constant_and_no_warmup():
  config = _optim_config(lr=0.5, warmup_frac=0.0, schedule='constant')
  np.testing.assert_allclose(_lr_at(optim.learning_rate(config, 100), [0, 50, 100]), [0.5] * 3)
  # warmup_frac=0 starts the linear decay at the full rate at step 0.
  config = _optim_config(lr=0.5, warmup_frac=0.0, schedule='linear')
  np.testing.assert_allclose(_lr_at(optim.learning_rate(config, 100), [0, 50, 100]),
                             [0.5, 0.25, 0.0], atol=1e-7)


def _one_update(config, params, grads):
  """The first update of `optim.make(config)`; jitted, since op-by-op dispatch is slower on CPU."""
  tx = optim.make(config, total_steps=10)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  return updates


@pytest.mark.parametrize('clip_norm, expected', [(1.0, 0.5), (0.0, 1.0)])
def test_clip_norm_bounds_a_huge_gradient(clip_norm, expected):
  # Adam's first step is lr * g / (|g| + eps) whatever g's scale, so clipping only shows against a
  # large eps: clipped, g=1 gives 1 / (1 + 1) = 0.5; unclipped, g=1e6 gives ~1.
  config = _optim_config(lr=1.0, warmup_frac=0.0, schedule='constant', eps=1.0, weight_decay=0.0,
                         clip_norm=clip_norm)
  params = {'w': {'bias': jnp.zeros((1,))}}
  updates = _one_update(config, params, {'w': {'bias': jnp.full((1,), 1e6)}})
  np.testing.assert_allclose(updates['w']['bias'], [-expected], rtol=1e-5)


def test_clip_norm_is_global_over_all_parameters():
  # Two gradients of norm 3 and 4 (global norm 5) are scaled together by 1/5, keeping their ratio.
  config = _optim_config(lr=1.0, warmup_frac=0.0, schedule='constant', eps=1.0, weight_decay=0.0,
                         clip_norm=1.0)
  params = {'a': {'bias': jnp.zeros((1,))}, 'b': {'bias': jnp.zeros((1,))}}
  updates = _one_update(config, params, {'a': {'bias': jnp.array([3.0])},
                                         'b': {'bias': jnp.array([4.0])}})
  # Adam's first step with clipped g: -g / (|g| + eps), g = 0.6 and 0.8.
  np.testing.assert_allclose(updates['a']['bias'], [-0.6 / 1.6], rtol=1e-5)
  np.testing.assert_allclose(updates['b']['bias'], [-0.8 / 1.8], rtol=1e-5)


@pytest.mark.parametrize('max_norm', [0.5, 100.0])
def test_clip_by_global_norm_is_optaxs(max_norm):
  # max_norm 0.5 is under the gradients' norm (about 8.0): both scale them; 100 is over it: both
  # leave them as they are.
  grads = {'a': jnp.arange(6.0).reshape(2, 3), 'b': {'c': jnp.array([-3.0, 0.25])}}
  ours, state = jax.jit(optim.clip_by_global_norm(max_norm).update)(grads, optax.EmptyState())
  expected, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), ours, expected)
  assert float(optax.tree.norm(ours)) == pytest.approx(min(max_norm, float(optax.tree.norm(grads))))
  # The same (empty) state as optax's, so checkpoints written before restore.
  assert state == optax.clip_by_global_norm(max_norm).init(grads)
  # An all-zero gradient stays zero (no 0/0).
  zeros, _ = optim.clip_by_global_norm(max_norm).update(jax.tree.map(jnp.zeros_like, grads), state)
  assert all(not np.any(leaf) and np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(zeros))


def test_weight_decay_applies_to_masked_in_parameters_only():
  config = _optim_config(lr=0.1, warmup_frac=0.0, schedule='constant', weight_decay=0.5)
  params = _bert_like_params()
  # A zero gradient makes Adam's own update 0, so what remains is the decoupled decay alone.
  grads = jax.tree.map(jnp.zeros_like, params)
  updates = _one_update(config, params, grads)
  new = jax.tree.map(lambda p, u: p + u, params, updates)
  shrunk = 1.0 - 0.1 * 0.5
  np.testing.assert_allclose(new['classifier']['kernel'], shrunk, rtol=1e-6)
  np.testing.assert_allclose(new['bert']['layer_0']['attention']['q']['kernel'], shrunk, rtol=1e-6)
  np.testing.assert_allclose(new['bert']['embeddings']['word']['embedding'], shrunk, rtol=1e-6)
  np.testing.assert_array_equal(new['classifier']['bias'], 1.0)
  np.testing.assert_array_equal(new['bert']['embeddings']['ln']['scale'], 1.0)
  np.testing.assert_array_equal(new['bert']['layer_0']['attention_ln']['bias'], 1.0)


def test_learning_rate_rsqrt_is_t5s():
  # lr 0.01 for 10^4 steps, then 1/sqrt(step): T5's 1/sqrt(max(step, 10^4)).
  config = _optim_config(lr=0.01, warmup_frac=0.1, schedule='rsqrt', warmup_shape='constant')
  schedule = optim.learning_rate(config, total_steps=100_000)
  np.testing.assert_allclose(_lr_at(schedule, [0, 5000, 10_000, 40_000, 90_000]),
                             [0.01, 0.01, 0.01, 0.005, 1 / 300], rtol=1e-6)


def test_learning_rate_rsqrt_with_linear_warmup_is_vaswanis():
  # d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) with d_model 512 and 4000 warmup steps.
  peak = 512 ** -0.5 * 4000 ** -0.5
  config = _optim_config(lr=peak, warmup_frac=0.04, schedule='rsqrt')
  schedule = optim.learning_rate(config, total_steps=100_000)
  steps = [1000, 4000, 16_000, 64_000]
  expected = [512 ** -0.5 * min(s ** -0.5, s * 4000 ** -1.5) for s in steps]
  np.testing.assert_allclose(_lr_at(schedule, steps), expected, rtol=1e-5)


def test_adafactor_factors_the_second_moment_and_descends():
  config = _optim_config(name='adafactor', lr=0.1, warmup_frac=0.0, schedule='constant',
                         weight_decay=0.0, clip_norm=0.0)
  tx = optim.make(config, total_steps=10)
  target = jax.random.normal(jax.random.key(0), (256, 128))
  params = {'kernel': jnp.zeros((256, 128)) + 0.1}
  state = tx.init(params)
  # A factored second moment: one row and one column statistic, not one per entry.
  sizes = sum(x.size for x in jax.tree.leaves(state) if hasattr(x, 'size') and x.size > 1)
  assert sizes < 256 * 128 // 4
  loss = lambda p: jnp.mean((p['kernel'] - target) ** 2)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss)(p), s, p))
  before = loss(params)
  for _ in range(20):
    updates, state = step(params, state)
    params = jax.tree.map(jnp.add, params, updates)
  assert loss(params) < 0.9 * before
