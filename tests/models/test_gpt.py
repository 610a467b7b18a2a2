"""GPT model tests: parameter count and tree, packing, KV-cache decoding, the modern variant, errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from llmjax.errors import UserError
from llmjax.models import gpt

AXES = {'batch', 'length', 'embed', 'heads', 'kv', 'mlp', 'vocab'}
TINY = gpt.GPTConfig(vocab_size=64, max_position_embeddings=32, hidden_size=16, num_layers=2,
                     num_heads=4, intermediate_size=32)
MODERN = dataclasses.replace(TINY, num_kv_heads=2, position='rotary', norm='rmsnorm',
                             activation='swiglu', tie_embeddings=False, use_bias=False)


def flat(tree):
  is_box = lambda x: isinstance(x, nn.Partitioned)
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)[0]
  return {'/'.join(k.key for k in path): leaf for path, leaf in leaves}


def abstract_params(config):
  ids = jnp.zeros((1, 8), jnp.int32)
  return jax.eval_shape(lambda: gpt.GPT(config).init(jax.random.key(0), ids,
                                                      deterministic=True))['params']


def test_gpt2_small_has_124m_params():
  # HF GPT2LMHeadModel with its tied head: sum(p.numel() for p in model.parameters()).
  params = nn.unbox(abstract_params(gpt.GPTConfig()))
  assert sum(x.size for x in jax.tree.leaves(params)) == 124_439_808


def test_param_tree_and_logical_axes():
  params = flat(abstract_params(TINY))
  for path, leaf in params.items():
    assert isinstance(leaf, nn.Partitioned), path
    named = [n for n in leaf.names if n is not None]
    assert set(named) <= AXES and len(leaf.names) == leaf.value.ndim, path
  expected = {
      'wte/embedding': ((64, 16), ('vocab', 'embed')),
      'wpe/embedding': ((32, 16), (None, 'embed')),
      'h_1/ln_1/scale': ((16,), ('embed',)),
      'h_1/attn/q/kernel': ((16, 4, 4), ('embed', 'heads', 'kv')),
      'h_1/attn/k/bias': ((4, 4), ('heads', 'kv')),
      'h_1/attn/out/kernel': ((4, 4, 16), ('heads', 'kv', 'embed')),
      'h_1/mlp/wi/kernel': ((16, 32), ('embed', 'mlp')),
      'h_1/mlp/wo/kernel': ((32, 16), ('mlp', 'embed')),
      'ln_f/bias': ((16,), ('embed',)),
  }
  for path, (shape, names) in expected.items():
    assert (params[path].value.shape, params[path].names) == (shape, names), path
  assert len(params) == 2 + 2 * 16 + 2  # no lm_head: tied

  modern = flat(abstract_params(MODERN))
  assert 'wpe/embedding' not in modern and not any(p.endswith('bias') for p in modern)
  assert modern['h_0/attn/k/kernel'].value.shape == (16, 2, 4)  # GQA: 2 kv heads
  assert {'h_0/mlp/wi_0/kernel', 'h_0/mlp/wi_1/kernel', 'h_0/ln_1/scale'} <= set(modern)
  assert modern['lm_head/kernel'].names == ('embed', 'vocab')


def test_residual_projections_use_scaled_init():
  config = dataclasses.replace(TINY, hidden_size=64, intermediate_size=256, num_layers=8)
  params = flat(nn.unbox(gpt.GPT(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32),
                                             deterministic=True)['params']))
  assert abs(float(jnp.std(params['h_0/mlp/wi/kernel'])) - 0.02) < 0.002
  assert abs(float(jnp.std(params['h_0/mlp/wo/kernel'])) - 0.02 / 4) < 0.0005  # 1/sqrt(2*8)


@pytest.mark.parametrize('config', [TINY, MODERN], ids=['gpt2', 'modern'])
def test_packed_rows_equal_separate_documents(config):
  model = gpt.GPT(config)
  rng = np.random.default_rng(0)
  a, b = rng.integers(0, 64, (1, 5)), rng.integers(0, 64, (1, 7))
  params = model.init(jax.random.key(0), a, deterministic=True)['params']
  apply = lambda ids, **kw: model.apply({'params': params}, ids, deterministic=True, **kw)
  packed = np.concatenate([a, b], axis=1)
  segments = np.array([[1] * 5 + [2] * 7])
  logits = apply(packed, segment_ids=segments)
  assert logits.dtype == jnp.float32 and logits.shape == (1, 12, 64)
  np.testing.assert_allclose(logits[:, :5], apply(a), atol=1e-5)
  np.testing.assert_allclose(logits[:, 5:], apply(b), atol=1e-5)  # positions restart too


@pytest.mark.parametrize('config', [TINY, MODERN], ids=['gpt2', 'modern'])
def test_kv_cache_decoding_equals_full_forward(config):
  model = gpt.GPT(config)
  ids = jax.random.randint(jax.random.key(1), (2, 9), 0, 64)
  params = model.init(jax.random.key(0), ids, deterministic=True)['params']
  full = model.apply({'params': params}, ids, deterministic=True)
  cache = model.init(jax.random.key(0), jnp.zeros((2, 12), jnp.int32), deterministic=True,
                     decode=True)['cache']
  outs = []
  for start, stop in ((0, 4), (4, 5), (5, 9)):
    out, mutated = model.apply({'params': params, 'cache': cache}, ids[:, start:stop],
                               deterministic=True, decode=True, mutable=['cache'])
    cache = mutated['cache']
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_sinusoidal_positions_variant():
  config = dataclasses.replace(TINY, position='sinusoidal')
  model = gpt.GPT(config)
  ids = jnp.arange(6)[None]
  variables = model.init(jax.random.key(0), ids, deterministic=True)
  assert 'wpe' not in variables['params']
  logits = model.apply(variables, ids, deterministic=True)
  shifted = model.apply(variables, ids, positions=ids + 3, deterministic=True)
  assert np.abs(logits - shifted).max() > 1e-4  # positions matter


def test_dropout_and_bfloat16():
  model = gpt.GPT(TINY)
  ids = jnp.arange(8)[None] % 64
  variables = model.init(jax.random.key(0), ids, deterministic=True)
  run = lambda seed: model.apply(variables, ids, deterministic=False,
                                 rngs={'dropout': jax.random.key(seed)})
  np.testing.assert_array_equal(run(1), run(1))
  assert np.abs(run(1) - run(2)).max() > 1e-4
  model16 = gpt.GPT(dataclasses.replace(TINY, dtype='bfloat16'))
  logits16 = model16.apply(variables, ids, deterministic=True)
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, model.apply(variables, ids, deterministic=True), atol=0.05)


@pytest.mark.parametrize('scan_layers,remat', [(True, 'none'), (False, 'full'), (True, 'dots')])
def test_scan_layers_and_remat_compute_the_same(scan_layers, remat):
  config = dataclasses.replace(TINY, num_layers=3, scan_layers=scan_layers, remat=remat)
  ids = jax.random.randint(jax.random.key(1), (2, 9), 0, 64)
  unrolled = gpt.GPT(dataclasses.replace(TINY, num_layers=3))
  params = nn.unbox(jax.jit(lambda: unrolled.init(jax.random.key(0), ids,
                                                  deterministic=True))()['params'])
  model = gpt.GPT(config)
  boxed = flat(jax.eval_shape(lambda: model.init(jax.random.key(0), ids,
                                                 deterministic=True))['params'])
  if scan_layers:
    q = boxed['layers/attn/q/kernel']
    assert (q.value.shape, q.names) == ((3, 16, 4, 4), ('layers', 'embed', 'heads', 'kv'))
    assert not any(p.startswith('h_') for p in boxed)
    ours = gpt.stack_layers(params, 3)
    jax.tree.map(np.testing.assert_array_equal, gpt.unstack_layers(ours, 3), params)
  else:
    ours = params

  # Each computation jitted whole: faster on CPU than op by op.
  def loss(model, params):
    return jnp.mean(model.apply({'params': params}, ids, deterministic=True) ** 2)

  np.testing.assert_allclose(jax.jit(lambda p: loss(model, p))(ours),
                             jax.jit(lambda p: loss(unrolled, p))(params), rtol=1e-6)
  grads = jax.jit(jax.grad(lambda p: loss(model, p)))(ours)
  expected = jax.jit(jax.grad(lambda p: loss(unrolled, p)))(params)
  if scan_layers:
    expected = gpt.stack_layers(expected, 3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, expected)
  # Decoding through the scanned cache (one stacked cache per layer variable).
  cache = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((2, 9), jnp.int32),
                                     deterministic=True, decode=True)['cache'])()
  decode = jax.jit(lambda cache, tokens: model.apply(
      {'params': ours, 'cache': cache}, tokens, deterministic=True, decode=True, mutable=['cache']))
  first, mutated = decode(cache, ids[:, :5])
  rest, _ = decode(mutated['cache'], ids[:, 5:])
  full = jax.jit(lambda p: unrolled.apply({'params': p}, ids, deterministic=True))(params)
  np.testing.assert_allclose(jnp.concatenate([first, rest], axis=1), full, atol=1e-5)


def test_causal_attention_blocks_compute_the_same():
  # Blocks of 4 queries over 10 tokens (4, 4, 2) against the whole square, with two documents packed
  # in a row: logits and gradients equal.
  ids = jax.random.randint(jax.random.key(3), (2, 10), 0, TINY.vocab_size)
  seg = jnp.array([[1] * 6 + [2] * 4, [1] * 10])
  blocked = gpt.GPT(dataclasses.replace(TINY, attention_block=4))
  whole = gpt.GPT(dataclasses.replace(TINY, attention_block=0))
  params = whole.init(jax.random.key(0), ids, deterministic=True)['params']
  def loss(model, params):
    logits = model.apply({'params': params}, ids, segment_ids=seg, deterministic=True)
    return jnp.sum(jax.nn.log_softmax(logits)[..., 0]), logits
  (value, logits), grads = jax.value_and_grad(loss, argnums=1, has_aux=True)(blocked, params)
  (value0, logits0), grads0 = jax.value_and_grad(loss, argnums=1, has_aux=True)(whole, params)
  np.testing.assert_allclose(logits, logits0, atol=1e-5, rtol=0)
  np.testing.assert_allclose(value, value0, rtol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_cudnn_flash_kernel_routes_attention(cudnn_stand_in):
  # attention_kernel='cudnn_flash' calls jax.nn.dot_product_attention(implementation='cudnn') once per
  # layer, causal, the mask of the packed documents given; here a stand-in GPU runs the call
  # through XLA. bfloat16 logits as the default kernel's; decoding keeps the default kernel.
  calls = cudnn_stand_in
  config = dataclasses.replace(TINY, num_heads=2, dtype='bfloat16', attn_dropout=0.0)  # heads of 8
  ids = jax.random.randint(jax.random.key(3), (2, 10), 0, TINY.vocab_size)
  seg = jnp.array([[1] * 6 + [2] * 4, [1] * 10])
  params = gpt.GPT(config).init(jax.random.key(0), ids, deterministic=True)['params']
  apply = lambda kernel, **kw: gpt.GPT(dataclasses.replace(config, attention_kernel=kernel)).apply(
      {'params': params}, ids, segment_ids=seg, **kw)
  flash = apply('cudnn_flash', deterministic=True)
  assert [(c['implementation'], c['is_causal'], c['mask']) for c in calls] == [
      ('cudnn', True, True)] * TINY.num_layers
  np.testing.assert_allclose(flash, apply('dot_product', deterministic=True), atol=0.05)
  with pytest.raises(UserError, match='no dropout on the attention probabilities'):
    gpt.GPT(dataclasses.replace(config, attention_kernel='cudnn_flash', attn_dropout=0.1)).apply(
        {'params': params}, ids, deterministic=False, rngs={'dropout': jax.random.key(1)})
  calls.clear()
  model = gpt.GPT(dataclasses.replace(config, attention_kernel='cudnn_flash'))
  cache = model.init(jax.random.key(0), jnp.zeros((2, 12), jnp.int32), deterministic=True,
                     decode=True)['cache']
  model.apply({'params': params, 'cache': cache}, ids[:, :4], deterministic=True, decode=True,
              mutable=['cache'])
  assert not calls


def test_user_errors():
  with pytest.raises(UserError, match='not divisible by num_heads'):
    gpt.GPTConfig(hidden_size=30, num_heads=4)
  with pytest.raises(UserError, match='num_kv_heads=5'):
    gpt.GPTConfig(num_kv_heads=5)
  with pytest.raises(UserError, match="norm='batchnorm'"):
    gpt.GPTConfig(norm='batchnorm')
  with pytest.raises(UserError, match="remat='some'"):
    gpt.GPTConfig(remat='some')
  with pytest.raises(UserError, match='attention_block=-1 is negative'):
    gpt.GPTConfig(attention_block=-1)
  with pytest.raises(UserError, match="attention_kernel='flash' is unknown"):
    gpt.GPTConfig(attention_kernel='flash')
  with pytest.raises(UserError, match='max_position_embeddings=32'):
    gpt.GPT(TINY).init(jax.random.key(0), jnp.zeros((1, 33), jnp.int32), deterministic=True)
