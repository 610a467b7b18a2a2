"""Shared layers: the mask builder, attention (fused vs explicit, GQA, rotary, KV cache), Mlp, norms."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import flax.linen as nn
import pytest

from llmjax.errors import UserError
from llmjax.models import layers


def test_mask_builder_causal_and_segments():
  seg = jnp.array([[1, 1, 2, 2, 0]])
  mask = layers.make_attention_mask(causal=True, query_segment_ids=seg, key_segment_ids=seg)[0, 0]
  expected = np.array([[1, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0],
                       [0, 0, 1, 0, 0],
                       [0, 0, 1, 1, 0],
                       [0, 0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(mask, expected)
  # Causal over cache slots: queries in slots 2, 3 of a 5-slot cache see only filled slots.
  mask = layers.make_attention_mask(causal=True, query_index=jnp.array([2, 3]),
                                    key_index=jnp.arange(5))
  assert mask.shape == (1, 1, 2, 5)
  np.testing.assert_array_equal(mask[0, 0], [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
  # Padding masks combine with causal.
  mask = layers.make_attention_mask(jnp.array([[1, 1, 0]]), jnp.array([[0, 1, 1]]), causal=True)
  np.testing.assert_array_equal(mask[0, 0], [[0, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_positions_restart_per_segment():
  seg = jnp.array([[0, 0, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(layers.positions_from_segment_ids(seg),
                                [[0, 1, 0, 1, 2, 0, 1], [0, 1, 2, 3, 4, 5, 6]])


@pytest.mark.parametrize('kv_heads', [4, 2, 1])
def test_fused_attention_equals_explicit(kv_heads):
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(kq, (2, 6, 4, 8))
  k = jax.random.normal(kk, (2, 7, kv_heads, 8))
  v = jax.random.normal(kv, (2, 7, kv_heads, 8))
  seg_q = jnp.array([[1, 1, 1, 2, 2, 2], [0, 1, 1, 1, 1, 1]])
  seg_k = jnp.array([[1, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 1, 1, 1]])
  mask = layers.make_attention_mask(causal=True, query_segment_ids=seg_q, key_segment_ids=seg_k)
  explicit = layers.dot_product_attention(q, k, v, mask)
  fused = jax.nn.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(fused, explicit, atol=1e-5, rtol=0)
  # GQA: the same as repeating each kv head for its group of query heads.
  repeat = lambda x: jnp.repeat(x, 4 // kv_heads, axis=2)
  np.testing.assert_allclose(layers.dot_product_attention(q, repeat(k), repeat(v), mask), explicit,
                             atol=1e-6)


@pytest.mark.parametrize('bias_batch,scale', [(None, True), (1, False), (2, True)])
def test_attention_gradient_is_autodiffs(bias_batch, scale):
  # Without dropout the gradient is written out (layers._attention); an identity dropout takes the
  # autodiff path. Packed segments, a padded query and a bias broadcast over the batch or not.
  kq, kk, kv, kb = jax.random.split(jax.random.key(4), 4)
  q, k, v = (jax.random.normal(key, (2, 6, 4, 8)) for key in (kq, kk, kv))
  bias = None if bias_batch is None else jax.random.normal(kb, (bias_batch, 4, 6, 6))
  seg = jnp.array([[0, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1]])
  mask = layers.make_attention_mask(causal=True, query_segment_ids=seg, key_segment_ids=seg)
  def loss(q, k, v, bias, dropout):
    out = layers.dot_product_attention(q, k, v, mask, bias=bias, scale=scale, dropout=dropout)
    return jnp.sum(jnp.sin(out))
  argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
  value, grads = jax.value_and_grad(loss, argnums)(q, k, v, bias, None)
  expected, expected_grads = jax.value_and_grad(loss, argnums)(q, k, v, bias, lambda p: p)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  for got, want in zip(grads, expected_grads):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize('block', [3, 4, 7])
def test_causal_blocks_attend_as_the_whole_square(block):
  # 7 tokens in blocks of 3 (a short last block), 4 and 7 (one block): values and gradients equal.
  kq, kk, kv, kb = jax.random.split(jax.random.key(2), 4)
  q, k, v = (jax.random.normal(key, (2, 7, 4, 8)) for key in (kq, kk, kv))
  bias = jax.random.normal(kb, (1, 4, 7, 7))
  seg = jnp.array([[1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 1]])
  mask = layers.make_attention_mask(causal=True, query_segment_ids=seg, key_segment_ids=seg)
  attention = lambda q, k, v, mask, bias: layers.dot_product_attention(q, k, v, mask, bias=bias)
  loss = lambda q, k, v, bias, block: jnp.sum(
      jnp.sin(layers.causal_blocks(attention, q, k, v, mask, bias, block)))
  value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(q, k, v, bias, block)
  expected, expected_grads = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(q, k, v, bias, 0)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  for got, want in zip(grads, expected_grads):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize('case', ['causal_segments_gqa', 'padding', 't5_bias'])
def test_cudnn_flash_call_attends_as_dot_product(case):
  # The call `cudnn_flash_attention` makes, run through XLA (implementation='xla'), against
  # `dot_product_attention`: values and gradients, for GPT's causal packed mask (with grouped kv
  # heads and `causal`), BERT's padding mask, and T5's bias with the mask folded in. A padded query
  # attends to nothing: uniform weights either way, but the gradients through its masked logits
  # differ, so the loss leaves out its output, as the training losses do.
  kq, kk, kv, kb = jax.random.split(jax.random.key(5), 4)
  kv_heads = 2 if case == 'causal_segments_gqa' else 4
  q = jax.random.normal(kq, (2, 6, 4, 8))
  k, v = (jax.random.normal(key, (2, 6, kv_heads, 8)) for key in (kk, kv))
  mask, bias, causal, real = None, None, False, jnp.ones((2, 6))
  if case == 'causal_segments_gqa':
    seg = jnp.array([[0, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1]])
    mask = layers.make_attention_mask(causal=True, query_segment_ids=seg, key_segment_ids=seg)
    causal = True
  elif case == 'padding':
    real = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    mask = layers.make_attention_mask(real, real)
  else:
    real = jnp.array([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    bias = layers.masked_bias(jax.random.normal(kb, (1, 4, 6, 6)),
                              layers.make_attention_mask(real, real, causal=True))
  scale = case != 't5_bias'

  def loss(attention, q, k, v, bias):
    out = attention(q, k, v, mask, bias=bias, scale=scale)
    return jnp.sum(jnp.sin(out) * real[:, :, None, None])
  flash = lambda *a, **kw: layers.cudnn_flash_attention(*a, causal=causal, implementation='xla',
                                                        **kw)
  argnums = (1, 2, 3) if bias is None else (1, 2, 3, 4)
  value, grads = jax.value_and_grad(loss, argnums)(flash, q, k, v, bias)
  expected, expected_grads = jax.value_and_grad(loss, argnums)(layers.dot_product_attention,
                                                               q, k, v, bias)
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  for got, want in zip(grads, expected_grads):
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_cudnn_flash_refuses_what_cudnn_cannot_run(monkeypatch):
  q = jnp.zeros((1, 4, 2, 8), jnp.bfloat16)
  with pytest.raises(UserError, match="needs an NVIDIA GPU.*attention_kernel='dot_product'"):
    layers.cudnn_flash_attention(q, q, q)
  monkeypatch.setattr(layers.jax, 'default_backend', lambda: 'gpu')
  with pytest.raises(UserError, match='no dropout on the attention probabilities'):
    layers.cudnn_flash_attention(q, q, q, dropout=lambda p: p)
  with pytest.raises(UserError, match='not float32: set model.dtype=bfloat16'):
    layers.cudnn_flash_attention(*(jnp.zeros((1, 4, 2, 8)),) * 3)
  with pytest.raises(UserError, match='multiple of 8 and at most 128, not 12'):
    layers.cudnn_flash_attention(*(jnp.zeros((1, 4, 2, 12), jnp.bfloat16),) * 3)
  odd = jnp.zeros((1, 5, 2, 8), jnp.bfloat16)
  with pytest.raises(UserError, match='even sequence lengths with a mask, not 5 queries'):
    layers.cudnn_flash_attention(odd, odd, odd, jnp.ones((1, 1, 5, 5), bool))


def test_the_platform_is_the_traced_meshs(monkeypatch):
  # A step compiled ahead of time for GPUs (`llmjax.plan`) is traced for them on a CPU: the mesh set
  # for tracing decides, JAX's default backend only where none is set.
  monkeypatch.setattr(layers.jax, 'default_backend', lambda: 'gpu')
  assert layers.traced_platform() == 'gpu'
  with jax.set_mesh(jax.sharding.Mesh(jax.devices()[:1], ('data',))):
    assert layers.traced_platform() == 'cpu'
    q = jnp.zeros((1, 4, 2, 8), jnp.bfloat16)
    with pytest.raises(UserError, match="needs an NVIDIA GPU, and this run's devices are cpu"):
      layers.cudnn_flash_attention(q, q, q)


def test_mask_folded_into_bias_attends_the_same():
  # A padded query (row 0's first) sees no key of its segment: uniform weights either way, no NaN.
  kq, kk, kv, kb = jax.random.split(jax.random.key(1), 4)
  q, k, v = (jax.random.normal(key, (2, 6, 4, 8)) for key in (kq, kk, kv))
  bias = jax.random.normal(kb, (1, 4, 6, 6))
  seg = jnp.array([[0, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1]])
  mask = layers.make_attention_mask(query_segment_ids=seg, key_segment_ids=seg)
  mask = mask & jnp.array([[False] + [True] * 5] + [[True] * 6] * 5)  # query 0 sees nothing
  folded = layers.masked_bias(bias, mask)
  assert folded.shape == (2, 4, 6, 6)
  expected = layers.dot_product_attention(q, k, v, mask, bias=bias, scale=False)
  np.testing.assert_allclose(layers.dot_product_attention(q, k, v, bias=folded, scale=False),
                             expected, atol=1e-5, rtol=0)
  np.testing.assert_allclose(jax.nn.dot_product_attention(q, k, v, bias=folded, scale=1.0),
                             expected, atol=1e-5, rtol=0)
  assert layers.masked_bias(bias, None) is bias


@pytest.mark.parametrize('shape,target', [
    ((5,), (3, 4, 5)),                  # a dense layer's bias over [B, L]
    ((1, 4, 5), (3, 4, 5)),             # position embeddings over the batch
    ((1, 2, 4, 4), (3, 2, 4, 4)),       # an attention bias over the batch
    ((3, 1, 4, 4), (3, 2, 4, 4)),       # ... over the heads
    ((1, 1, 4, 4), (3, 2, 4, 4)),
    ((3, 4, 5), (3, 4, 5))])
def test_broadcast_to_has_the_broadcasts_value_and_gradient(shape, target):
  kx, kd = jax.random.split(jax.random.key(3))
  x, dy = jax.random.normal(kx, shape), jax.random.normal(kd, target)
  np.testing.assert_array_equal(layers.broadcast_to(x, target), jnp.broadcast_to(x, target))
  ours = jax.grad(lambda x: jnp.vdot(layers.broadcast_to(x, target), dy))(x)
  ref = jax.grad(lambda x: jnp.vdot(jnp.broadcast_to(x, target), dy))(x)
  assert ours.shape == shape
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
  np.testing.assert_allclose(layers.sum_to(dy, shape), ref, atol=1e-5, rtol=0)


def test_masked_bias_gradient_is_autodiffs():
  kb, kd = jax.random.split(jax.random.key(3))
  bias = jax.random.normal(kb, (1, 4, 6, 6))
  mask = jax.random.bernoulli(kd, 0.7, (3, 1, 6, 6))
  dy = jax.random.normal(kd, (3, 4, 6, 6))
  ours = jax.grad(lambda b: jnp.vdot(layers.masked_bias(b, mask), dy))(bias)
  ref = jax.grad(lambda b: jnp.vdot(jnp.where(mask, b, -1e30), dy))(bias)
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('x_shape,kernel_shape,contract', [
    ((2, 5, 6), (6, 3, 4), 1),      # q/k/v: embed -> heads x kv
    ((2, 5, 3, 4), (3, 4, 6), 2),   # out: heads x kv -> embed
    ((7, 6), (6, 8), 1)])
def test_project_has_dot_generals_value_and_gradients(x_shape, kernel_shape, contract):
  kx, kk, ky = jax.random.split(jax.random.key(2), 3)
  x, kernel = jax.random.normal(kx, x_shape), jax.random.normal(kk, kernel_shape)
  dims = ((tuple(range(len(x_shape) - contract, len(x_shape))), tuple(range(contract))), ((), ()))
  y = jax.lax.dot_general(x, kernel, dims)
  np.testing.assert_allclose(layers.project(x, kernel, contract), y, atol=1e-5, rtol=0)
  dy = jax.random.normal(ky, y.shape)
  loss = lambda f: lambda x, k: jnp.vdot(f(x, k), dy)
  ours = jax.grad(loss(lambda x, k: layers.project(x, k, contract)), (0, 1))(x, kernel)
  ref = jax.grad(loss(lambda x, k: jax.lax.dot_general(x, k, dims)), (0, 1))(x, kernel)
  for a, b in zip(ours, ref):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize('x_shape,kernel_shape,contract,pads', [
    ((2, 200, 512), (512, 8, 64), 1, 3),  # q/k/v, 400 x 512 outputs: padded along kv
    ((400, 8, 64), (8, 64, 512), 2, 3),   # out: the product along embed, dx along kv
    ((2, 400, 512), (512, 8, 64), 1, 1),  # 800 rows: only the kernel's 512 x 512 gradient
    ((2, 200, 384), (384, 6, 64), 1, 0)])  # 384 columns: oneDNN runs it well as it is
def test_pad_products_pads_oneDNNs_slow_shapes_with_the_same_values(x_shape, kernel_shape,
                                                                    contract, pads):
  kx, kk, ky = jax.random.split(jax.random.key(4), 3)
  x, kernel = jax.random.normal(kx, x_shape), jax.random.normal(kk, kernel_shape)
  f = lambda x, k: layers.project(x, k, contract)
  dy = jax.random.normal(ky, jax.eval_shape(f, x, kernel).shape)
  # A new function for each trace: jax.jit caches traces by function, and the mode is read while
  # tracing (llmjax.train.jit_step sets it inside the function it compiles).
  step = lambda: jax.value_and_grad(lambda x, k: jnp.sum(f(x, k) * dy), (0, 1))
  text = lambda: jax.jit(step()).lower(x, kernel).as_text()
  with layers.pad_products():
    assert text().count('stablehlo.pad') == pads
    assert text().count('dot_general') == 3
    loss, grads = step()(x, kernel)
  assert 'stablehlo.pad' not in text()
  expected_loss, expected_grads = step()(x, kernel)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  for a, b in zip(grads, expected_grads):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-5)


def test_pad_products_pads_the_tied_heads_input_gradient():
  kx, ke = jax.random.split(jax.random.key(5))
  x, embedding = jax.random.normal(kx, (2, 200, 512)), jax.random.normal(ke, (1000, 512))
  grad = lambda: jax.grad(lambda x, e: jnp.sum(layers.unembed(x, e) ** 2), (0, 1))
  with layers.pad_products():
    # The input gradient [400, 512] is padded; the logits [400, 1000] and the embedding's
    # gradient [1000, 512], from x^T dy [512, 1000], are not.
    assert jax.jit(grad()).lower(x, embedding).as_text().count('stablehlo.pad') == 1
    padded = grad()(x, embedding)
  for a, b in zip(padded, grad()(x, embedding)):
    np.testing.assert_allclose(a, b, atol=1e-2, rtol=1e-5)


@pytest.mark.parametrize('n', [2, 3])
def test_project_shared_has_projects_values_and_gradients(n):
  keys = jax.random.split(jax.random.key(3), 2 * n + 1)
  x = jax.random.normal(keys[0], (2, 5, 6))
  kernels = tuple(jax.random.normal(k, (6, 3, 4)) for k in keys[1:n + 1])
  dys = [jax.random.normal(k, (2, 5, 3, 4)) for k in keys[n + 1:]]
  loss = lambda f: lambda x, ks: sum(jnp.vdot(y, dy) for y, dy in zip(f(x, ks), dys))
  separate = lambda x, ks: [layers.project(x, k, 1) for k in ks]
  for a, b in zip(layers.project_shared(x, kernels, 1), separate(x, kernels)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
  ours = jax.grad(loss(lambda x, ks: layers.project_shared(x, ks, 1)), (0, 1))(x, kernels)
  ref = jax.grad(loss(separate), (0, 1))(x, kernels)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize('x_shape', [(2, 5, 6), (7, 6)])
def test_unembed_is_x_times_the_embedding_transposed_with_its_gradients(x_shape):
  kx, ke, ky = jax.random.split(jax.random.key(3), 3)
  x, embedding = jax.random.normal(kx, x_shape), jax.random.normal(ke, (11, 6))
  np.testing.assert_allclose(layers.unembed(x, embedding), x @ embedding.T, atol=1e-5, rtol=0)
  dy = jax.random.normal(ky, x_shape[:-1] + (11,))
  loss = lambda f: lambda x, e: jnp.vdot(f(x, e), dy)
  ours = jax.grad(loss(layers.unembed), (0, 1))(x, embedding)
  ref = jax.grad(loss(lambda x, e: x @ e.T), (0, 1))(x, embedding)
  for a, b in zip(ours, ref):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_rotary_is_relative():
  x = jax.random.normal(jax.random.key(0), (1, 2, 1, 16))
  q, k = x[:, :1], x[:, 1:]

  def score(pq, pk):
    rq = layers.apply_rotary(q, jnp.array([[pq]]))
    rk = layers.apply_rotary(k, jnp.array([[pk]]))
    return float(jnp.sum(rq * rk))

  assert abs(score(3, 1) - score(10, 8)) < 1e-4  # depends on the offset only
  assert abs(score(3, 1) - score(3, 2)) > 1e-3
  np.testing.assert_allclose(layers.apply_rotary(q, jnp.array([[0]])), q)  # position 0: identity
  # Rotation keeps norms.
  np.testing.assert_allclose(jnp.linalg.norm(layers.apply_rotary(q, jnp.array([[7]]))),
                             jnp.linalg.norm(q), rtol=1e-5)


def test_sinusoidal_positions():
  table = layers.sinusoidal_positions(5, 8)
  pos, i = 3, 1  # column 2i = sin(pos / 10000^(2i/8)), 2i + 1 = cos
  np.testing.assert_allclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 8)), rtol=1e-5)
  np.testing.assert_allclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 8)), rtol=1e-5)
  np.testing.assert_array_equal(table[0], np.tile([0., 1.], 4))


def test_attention_kv_cache_equals_full():
  attn = layers.MultiHeadAttention(num_heads=4, num_kv_heads=2, rotary=True, use_bias=False)
  x = jax.random.normal(jax.random.key(1), (2, 6, 16))
  positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
  params = attn.init(jax.random.key(0), x, x, positions=positions, deterministic=True)['params']
  assert set(params) == {'q', 'k', 'v', 'out'} and set(params['q']) == {'kernel'}
  assert params['k']['kernel'].value.shape == (16, 2, 4)
  mask = layers.make_attention_mask(causal=True, query_index=jnp.arange(6), key_index=jnp.arange(6))
  full = attn.apply({'params': params}, x, x, mask, positions=positions, deterministic=True)

  cache = attn.init(jax.random.key(0), x, x, positions=positions, deterministic=True,
                    decode=True)['cache']
  assert int(cache['cache_index']) == 0 and cache['cached_key'].shape == (2, 6, 2, 4)
  outs = []
  for start, stop in ((0, 2), (2, 3), (3, 6)):  # a prefill chunk, then chunks of 1 and 3
    out, mutated = attn.apply({'params': params, 'cache': cache}, x[:, start:stop],
                              x[:, start:stop], positions=positions[:, start:stop],
                              deterministic=True, decode=True, mutable=['cache'])
    cache = mutated['cache']
    outs.append(out)
  assert int(cache['cache_index']) == 6
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


@pytest.mark.parametrize('activation,names', [('gelu_new', {'wi', 'wo'}),
                                              ('swiglu', {'wi_0', 'wi_1', 'wo'})])
def test_mlp_activations(activation, names):
  x = jax.random.normal(jax.random.key(1), (1, 3, 8))
  mlp = layers.Mlp(16, activation=activation)
  params = nn.unbox(mlp.init(jax.random.key(0), x))['params']
  assert set(params) == names
  y = mlp.apply({'params': params}, x)
  if activation == 'swiglu':
    h = jax.nn.silu(x @ params['wi_0']['kernel']) * (x @ params['wi_1']['kernel'])
  else:  # GPT-2's tanh approximation
    a = x @ params['wi']['kernel']
    h = 0.5 * a * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))
  np.testing.assert_allclose(y, h @ params['wo']['kernel'], atol=1e-5)
  with pytest.raises(UserError, match='unknown activation'):
    layers.Mlp(16, activation='gelu_old').init(jax.random.key(0), x)


def test_activations_by_name():
  x = jnp.linspace(-3, 3, 7)
  # The erf GELU against its exact value (float64), over the range activations take.
  wide = np.linspace(-10, 10, 20001, dtype=np.float32)
  exact = 0.5 * wide.astype(np.float64) * scipy.special.erfc(-wide.astype(np.float64) / np.sqrt(2))
  np.testing.assert_allclose(layers.ACTIVATIONS['gelu'](wide), exact, rtol=0, atol=1.5e-6)
  np.testing.assert_allclose(layers.ACTIVATIONS['relu'](x), np.maximum(x, 0))
  np.testing.assert_allclose(layers.ACTIVATIONS['silu'](x), x / (1 + np.exp(-x)), rtol=1e-5)
  assert np.abs(layers.gelu_new(x) - layers.gelu(x)).max() > 1e-5  # the two GELUs differ


# Run in a process with XLA's default flags: under the tests' compile-speed flags together
# (conftest.py: no LLVM optimisation and XLA:CPU's older emitters) the float32 gradient's error was
# 8.5e-6 against 3.5e-6, and the accuracy checked here is the one of the programs a user runs.
_TANH_GELU_ERRORS = """
import json
import jax, jax.numpy as jnp, numpy as np
from llmjax.models import layers
errors = {}
for dtype in ('float32', 'bfloat16'):
  x = (np.linspace(-8, 8, 4001) + 0.1234).astype(dtype)
  ours = jax.vmap(jax.grad(layers.gelu_new))(jnp.asarray(x))
  autodiff = jax.vmap(jax.grad(lambda z: jax.nn.gelu(z, approximate=True)))(jnp.asarray(x))
  with jax.enable_x64():
    exact = np.asarray(jax.vmap(jax.grad(lambda z: jax.nn.gelu(z, approximate=True)))(
        jnp.asarray(x.astype(np.float64))))
  errors[dtype] = {'dtype': str(ours.dtype),
                   'ours': float(np.abs(np.float64(ours) - exact).max()),
                   'autodiff': float(np.abs(np.float64(autodiff) - exact).max())}
print(json.dumps(errors))
"""


@functools.cache
def _tanh_gelu_errors() -> dict:
  """{dtype: errors} of `_TANH_GELU_ERRORS`, computed in one process for both dtypes."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  run = subprocess.run([sys.executable, '-c', _TANH_GELU_ERRORS], env=env, capture_output=True,
                       text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-3000:]
  return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize('dtype,atol', [('float32', 5e-6), ('bfloat16', 1.5e-2)])
def test_tanh_gelu_gradient_is_the_exact_one(dtype, atol):
  # gelu_new's written-out gradient (the tanh recomputed in float32) against autodiff's of
  # jax.nn.gelu in float64, at the same (rounded) inputs; autodiff's own in `dtype` is no closer.
  errors = _tanh_gelu_errors()[dtype]
  assert errors['dtype'] == dtype
  assert errors['ours'] <= atol
  assert errors['ours'] <= errors['autodiff']


def test_rms_norm():
  x = jax.random.normal(jax.random.key(0), (2, 3, 8)) + 1.0
  norm = layers.norm('rmsnorm', epsilon=1e-6)
  params = nn.unbox(norm.init(jax.random.key(0), x))['params']
  assert set(params) == {'scale'}
  expected = x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(norm.apply({'params': params}, x), expected, atol=1e-5)
  with pytest.raises(UserError, match='unknown norm'):
    layers.norm('batchnorm', epsilon=1e-6)
