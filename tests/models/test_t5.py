"""T5 and original-Transformer tests: relative position buckets and bias, unscaled/biased attention,
parameter counts and tree, cached decoding, encoder padding, dropout, bfloat16, scan_layers and remat,
errors.

HF agreement (logits, greedy generations, export) is in test_hf_t5.py.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from llmjax import decoding
from llmjax.errors import UserError
from llmjax.models import layers, t5

AXES = {'batch', 'length', 'embed', 'heads', 'kv', 'mlp', 'vocab'}
TINY = t5.T5Config(vocab_size=64, d_model=16, d_kv=6, d_ff=32, num_layers=2, num_decoder_layers=3,
                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                   dropout_rate=0.0)
V1_1 = dataclasses.replace(TINY, feed_forward='gated-gelu', tie_word_embeddings=False)
VASWANI = t5.transformer_base(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                              num_heads=4, max_position_embeddings=32, dropout_rate=0.0)


def flat(tree):
  is_box = lambda x: isinstance(x, nn.Partitioned)
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)[0]
  return {'/'.join(k.key for k in path): leaf for path, leaf in leaves}


def abstract_params(config):
  ids = jnp.zeros((1, 4), jnp.int32)
  return jax.eval_shape(lambda: t5.T5(config).init(jax.random.key(0), ids, ids,
                                                    deterministic=True))['params']


def count(config):
  return sum(x.size for x in jax.tree.leaves(nn.unbox(abstract_params(config))))


def test_relative_position_buckets():
  # T5's defaults (32 buckets, max distance 128); relative position = key - query.
  rel = jnp.array([0, -1, 1, -7, -8, -127, -128, -1000, 8, 1000])
  bidirectional = layers.relative_position_bucket(rel, bidirectional=True)
  # 16 buckets per sign: 0..7 exact, 8..15 log-spaced up to 128; positive distances offset by 16.
  np.testing.assert_array_equal(bidirectional, [0, 1, 17, 7, 8, 15, 15, 15, 24, 31])
  causal = layers.relative_position_bucket(rel, bidirectional=False)
  # Future keys (rel > 0) all share bucket 0; 32 buckets for the past: 0..15 exact, 16..31 log.
  np.testing.assert_array_equal(causal, [0, 1, 0, 7, 8, 31, 31, 31, 0, 0])


def test_relative_position_buckets_match_hf():
  torch = pytest.importorskip('torch')
  modeling_t5 = pytest.importorskip('transformers.models.t5.modeling_t5')
  rel = np.arange(-300, 301)
  for bidirectional in (True, False):
    for buckets, distance in ((32, 128), (8, 20)):
      expected = modeling_t5.T5Attention._relative_position_bucket(
          torch.tensor(rel), bidirectional=bidirectional, num_buckets=buckets, max_distance=distance)
      ours = layers.relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional,
                                             num_buckets=buckets, max_distance=distance)
      np.testing.assert_array_equal(ours, expected.numpy())


def test_relative_position_bias_module():
  module = layers.RelativePositionBias(num_heads=3, num_buckets=8, max_distance=20)
  variables = module.init(jax.random.key(0), jnp.arange(4), jnp.arange(5))
  table = variables['params']['rel_embedding']
  assert table.names == (None, 'heads') and table.value.shape == (8, 3)
  bias = module.apply(variables, jnp.arange(4), jnp.arange(5))  # [1, heads, Lq, Lk]
  assert bias.shape == (1, 3, 4, 5)
  buckets = layers.relative_position_bucket(jnp.arange(5)[None] - jnp.arange(4)[:, None],
                                            bidirectional=True, num_buckets=8, max_distance=20)
  np.testing.assert_array_equal(bias[0], table.value[buckets].transpose(2, 0, 1))
  # A query at position 3 (a decoding step) gets row 3 of the full bias.
  np.testing.assert_array_equal(module.apply(variables, jnp.array([3]), jnp.arange(5)),
                                bias[:, :, 3:4])


def test_attention_bias_and_no_scaling():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 5, 4, 8)), jnp.float32) for _ in range(3))
  bias = jnp.asarray(rng.normal(size=(1, 4, 5, 5)), jnp.float32)
  mask = layers.make_attention_mask(jnp.ones((2, 5)), jnp.array([[1] * 5, [1, 1, 1, 0, 0]]))
  scores = jnp.einsum('bqhd,bkhd->bhqk', q, k) + bias  # unscaled, as T5
  probs = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
  expected = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
  explicit = layers.dot_product_attention(q, k, v, mask, bias=bias, scale=False)
  np.testing.assert_allclose(explicit, expected, atol=1e-5)
  # The module's fused path (deterministic) and explicit path (dropout) agree on bias and scaling.
  x = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
  mha = layers.MultiHeadAttention(num_heads=4, head_dim=8, dropout_rate=1e-9, use_bias=False,
                                  scale_logits=False)
  variables = mha.init(jax.random.key(0), x, x, deterministic=True)
  fused = mha.apply(variables, x, x, mask, bias=bias, deterministic=True)
  with_dropout = mha.apply(variables, x, x, mask, bias=bias, deterministic=False,
                           rngs={'dropout': jax.random.key(1)})
  np.testing.assert_allclose(fused, with_dropout, atol=1e-5)
  scaled = layers.MultiHeadAttention(num_heads=4, head_dim=8, use_bias=False).apply(
      variables, x, x, mask, bias=bias, deterministic=True)
  assert np.abs(scaled - fused).max() > 1e-3 * np.abs(fused).max()


def test_mlp_hidden_dropout():
  x = jnp.ones((1, 3, 8))
  mlp = layers.Mlp(16, activation='geglu_tanh', dropout_rate=0.5)
  variables = mlp.init(jax.random.key(0), x)
  assert set(variables['params']) == {'wi_0', 'wi_1', 'wo'}
  plain = mlp.apply(variables, x)
  np.testing.assert_array_equal(mlp.apply(variables, x, deterministic=True), plain)
  dropped = mlp.apply(variables, x, deterministic=False, rngs={'dropout': jax.random.key(1)})
  assert np.abs(dropped - plain).max() > 1e-4


def test_param_counts():
  # HF T5ForConditionalGeneration('t5-small'): sum(p.numel() for p in model.parameters()).
  assert count(t5.T5Config()) == 60_506_624
  # google/t5-v1_1-small with its separate lm_head (transformers 4.x and the original checkpoints).
  assert count(t5.t5_v1_1()) == 76_961_152
  # Vaswani et al. (2017) base, 37000 shared BPE tokens, tied: the paper's Table 3 rounds to 65M.
  assert count(t5.transformer_base()) == 63_082_496


def test_param_tree_and_logical_axes():
  params = flat(abstract_params(TINY))
  for path, leaf in params.items():
    assert isinstance(leaf, nn.Partitioned), path
    named = [n for n in leaf.names if n is not None]
    assert set(named) <= AXES and len(leaf.names) == leaf.value.ndim, path
  expected = {
      'shared/embedding': ((64, 16), ('vocab', 'embed')),
      'encoder/block_0/relative_attention_bias/rel_embedding': ((8, 4), (None, 'heads')),
      'decoder/block_0/relative_attention_bias/rel_embedding': ((8, 4), (None, 'heads')),
      'encoder/block_1/self_attention_norm/scale': ((16,), ('embed',)),
      'encoder/block_1/self_attention/q/kernel': ((16, 4, 6), ('embed', 'heads', 'kv')),
      'decoder/block_2/cross_attention/out/kernel': ((4, 6, 16), ('heads', 'kv', 'embed')),
      'decoder/block_2/cross_attention_norm/scale': ((16,), ('embed',)),
      'decoder/block_2/mlp/wi/kernel': ((16, 32), ('embed', 'mlp')),
      'decoder/block_2/mlp/wo/kernel': ((32, 16), ('mlp', 'embed')),
      'encoder/final_norm/scale': ((16,), ('embed',)),
      'decoder/final_norm/scale': ((16,), ('embed',)),
  }
  for path, (shape, names) in expected.items():
    assert (params[path].value.shape, params[path].names) == (shape, names), path
  # Only block 0 of each stack owns the bias; no biases, no lm_head (tied).
  assert sum('relative_attention_bias' in p for p in params) == 2
  assert not any(p.endswith('/bias') for p in params) and 'lm_head/kernel' not in params
  # shared; 8 per encoder block, 13 per decoder block; 2 position biases; 2 final norms.
  assert len(params) == 1 + 8 * 2 + 13 * 3 + 2 + 2

  v1_1 = flat(abstract_params(V1_1))
  assert {'encoder/block_0/mlp/wi_0/kernel', 'encoder/block_0/mlp/wi_1/kernel'} <= set(v1_1)
  assert v1_1['lm_head/kernel'].names == ('embed', 'vocab')

  vaswani = flat(abstract_params(VASWANI))
  assert not any('relative_attention_bias' in p or 'final_norm' in p for p in vaswani)
  assert {'encoder/block_0/mlp_norm/bias', 'decoder/block_0/cross_attention/q/bias',
          'decoder/block_0/mlp/wo/bias'} <= set(vaswani)


def test_t5_init_scales():
  config = dataclasses.replace(TINY, d_model=64, d_kv=16, d_ff=256)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = flat(nn.unbox(t5.T5(config).init(jax.random.key(0), ids, ids,
                                             deterministic=True)['params']))
  std = lambda p: float(jnp.std(params[p]))
  assert abs(std('shared/embedding') - 1.0) < 0.05
  assert abs(std('encoder/block_0/self_attention/q/kernel') - (64 * 16) ** -0.5) < 0.003
  assert abs(std('encoder/block_0/self_attention/k/kernel') - 64 ** -0.5) < 0.01
  assert abs(std('encoder/block_0/mlp/wo/kernel') - 256 ** -0.5) < 0.005


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = jnp.asarray(rng.integers(2, 64, (2, 7)))
  mask = jnp.array([[1] * 7, [1] * 4 + [0] * 3])
  dec = jnp.asarray(rng.integers(2, 64, (2, 6)))
  return ids, mask, dec


@pytest.mark.parametrize('config', [TINY, V1_1, VASWANI], ids=['t5', 'v1_1', 'vaswani'])
def test_kv_cache_decoding_equals_full_forward(config):
  model = t5.T5(config)
  ids, mask, dec = inputs()
  variables = model.init(jax.random.key(0), ids, dec, input_mask=mask, deterministic=True)
  full = model.apply(variables, ids, dec, input_mask=mask, deterministic=True)
  encoded = model.apply(variables, ids, mask, deterministic=True, method='encode')
  # Room for 8 tokens; written as a 2-token chunk, then one at a time: the relative bias and the
  # sinusoid must use each query's cache slot, not 0.
  cache = model.init(jax.random.key(0), ids, jnp.zeros((2, 8), jnp.int32), input_mask=mask,
                     deterministic=True, decode=True)['cache']
  steps, chunks = [], [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
  for start, end in chunks:
    logits, updated = model.apply({**variables, 'cache': cache}, dec[:, start:end], encoded, mask,
                                  deterministic=True, decode=True, mutable=['cache'],
                                  method='decode')
    cache = updated['cache']
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


@functools.cache
def unrolled_reference(config):
  """(params, forward, logits, loss, gradients) of the unrolled model of `config` on inputs():
  `forward(params, decoder_inputs)` jitted, and what every scanned or rematerialised variant must
  compute, computed once for the variants (compiled whole rather than op by op: faster on CPU)."""
  ids, mask, dec = inputs()
  model = t5.T5(config)
  params = nn.unbox(model.init(jax.random.key(0), ids, dec, deterministic=True)['params'])
  forward = jax.jit(lambda params, dec: model.apply({'params': params}, ids, dec, input_mask=mask,
                                                    deterministic=True))
  loss = lambda params: jnp.mean(forward(params, dec) ** 2)
  return params, forward, forward(params, dec), loss(params), jax.jit(jax.grad(loss))(params)


@pytest.mark.parametrize('scan_layers,remat', [(True, 'none'), (False, 'full'), (True, 'dots')])
@pytest.mark.parametrize('config', [TINY, V1_1, VASWANI], ids=['t5', 'v1_1', 'vaswani'])
def test_scan_layers_and_remat_compute_the_same(config, scan_layers, remat):
  """Scanned (restacked weights) and rematerialised models compute the unrolled model's logits,
  loss and gradients; scanned, cached decoding (chunked, and greedy generation) too."""
  ids, mask, dec = inputs()
  params, unrolled, full, unrolled_loss, expected = unrolled_reference(config)
  ours_config = dataclasses.replace(config, scan_layers=scan_layers, remat=remat)
  model = t5.T5(ours_config)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, dec,
                                            deterministic=True))['params']
  spec = jax.sharding.PartitionSpec
  if scan_layers:
    specs = flat(nn.get_partition_spec(boxed))
    assert specs['decoder/layers/self_attention/q/kernel'] == spec('layers', 'embed', 'heads', 'kv')
    assert specs['encoder/layers/mlp/wo/kernel'] == spec('layers', 'mlp', 'embed')
    layer_shape = (config.decoder_layers, 4, config.d_kv, 16)
    assert flat(boxed)['decoder/layers/cross_attention/out/kernel'].value.shape == layer_shape
    assert not any('block_' in p for p in specs)
    if config.position == 'relative':  # one table per stack, outside the scanned blocks
      for stack in ('encoder', 'decoder'):
        table = flat(boxed)[f'{stack}/relative_attention_bias/rel_embedding']
        assert (table.value.shape, table.names) == ((8, 4), (None, 'heads'))
    else:
      assert not any('relative_attention_bias' in p for p in specs)
    ours = t5.stack_layers(params, config)
    jax.tree.map(np.testing.assert_array_equal, t5.unstack_layers(ours, config), params)
  else:
    ours = params
  assert jax.tree.map(np.shape, ours) == jax.tree.map(np.shape, nn.unbox(boxed))

  forward = jax.jit(lambda params: model.apply({'params': params}, ids, dec, input_mask=mask,
                                               deterministic=True))
  np.testing.assert_allclose(forward(ours), full, atol=1e-5, rtol=0)
  loss = lambda params: jnp.mean(forward(params) ** 2)
  np.testing.assert_allclose(loss(ours), unrolled_loss, atol=1e-5, rtol=0)
  grads = jax.jit(jax.grad(loss))(ours)
  if scan_layers:
    expected = t5.stack_layers(expected, config)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), grads, expected)
  if not scan_layers:
    return

  # Cached decoding through the scanned cache: per-block keys and values stacked [layers, ...],
  # the stack's cache_index and cached_decoder_mask unstacked.
  cache = jax.jit(lambda: model.init(jax.random.key(0), ids, jnp.zeros((2, 8), jnp.int32),
                                     input_mask=mask, deterministic=True,
                                     decode=True)['cache']['decoder'])()
  assert cache['layers']['self_attention']['cached_key'].shape == (
      config.decoder_layers, 2, 8, 4, config.d_kv)
  assert cache['cache_index'].shape == () and cache['cached_decoder_mask'].shape == (2, 8)
  encoded = jax.jit(lambda params: model.apply({'params': params}, ids, mask, deterministic=True,
                                               method='encode'))(ours)
  decode = jax.jit(lambda params, cache, tokens: model.apply(
      {'params': params, 'cache': cache}, tokens, encoded, mask, deterministic=True, decode=True,
      mutable=['cache'], method='decode'))
  cache, steps = {'decoder': cache}, []
  for start, end in [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6)]:
    logits, updated = decode(ours, cache, dec[:, start:end])
    cache = updated['cache']
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
  # Greedy generation through the scanned cache: each token is the teacher-forced argmax.
  tokens = decoding.seq2seq_generate(model, ours, ids, mask, max_new_tokens=5)
  dec_in = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), tokens[:, :-1]], axis=1)
  np.testing.assert_array_equal(tokens, jnp.argmax(unrolled(params, dec_in), axis=-1))


@pytest.mark.parametrize('config', [TINY, VASWANI], ids=['t5', 'vaswani'])
def test_encoder_padding_is_ignored(config):
  model = t5.T5(config)
  ids, mask, dec = inputs()
  variables = model.init(jax.random.key(0), ids, dec, deterministic=True)
  padded = model.apply(variables, ids, dec, input_mask=mask, deterministic=True)
  # Row 1 has 4 real tokens: the same as that row alone, unpadded, whatever the padding holds.
  alone = model.apply(variables, ids[1:, :4], dec[1:], deterministic=True)
  np.testing.assert_allclose(padded[1:], alone, atol=1e-5)
  other = model.apply(variables, ids.at[1, 4:].set(9), dec, input_mask=mask, deterministic=True)
  np.testing.assert_allclose(other, padded, atol=1e-6)


@pytest.mark.parametrize('config', [TINY, V1_1, VASWANI], ids=['t5', 'v1_1', 'vaswani'])
def test_packed_rows_equal_separate_examples(config):
  """Two (input, target) pairs packed into one row compute the logits of each pair alone."""
  model = t5.T5(config)
  rng = np.random.default_rng(1)
  pairs = [(rng.integers(2, 64, n), rng.integers(2, 64, m)) for n, m in ((5, 3), (4, 4))]
  ids, dec = np.zeros((1, 11), np.int32), np.zeros((1, 8), np.int32)
  ids[0, :9] = np.concatenate([pairs[0][0], pairs[1][0]])
  dec[0, :7] = np.concatenate([pairs[0][1], pairs[1][1]])
  packed = dict(input_segment_ids=np.array([[1] * 5 + [2] * 4 + [0] * 2]),
                input_positions=np.array([list(range(5)) + list(range(4)) + [0, 0]]),
                decoder_segment_ids=np.array([[1] * 3 + [2] * 4 + [0]]),
                decoder_positions=np.array([[0, 1, 2, 0, 1, 2, 3, 0]]))
  variables = model.init(jax.random.key(0), ids, dec, deterministic=True)
  logits = model.apply(variables, ids, dec, **packed, deterministic=True)
  for (source, target), (lo, hi) in zip(pairs, ((0, 3), (3, 7))):
    alone = model.apply(variables, source[None], target[None], deterministic=True)
    np.testing.assert_allclose(logits[:, lo:hi], alone, atol=1e-5)


def test_decoder_is_causal_and_masks_decoder_padding():
  model = t5.T5(TINY)
  ids, _, dec = inputs()
  variables = model.init(jax.random.key(0), ids, dec, deterministic=True)
  full = model.apply(variables, ids, dec, deterministic=True)
  changed = model.apply(variables, ids, dec.at[:, 4:].set(3), deterministic=True)
  np.testing.assert_allclose(changed[:, :4], full[:, :4], atol=1e-6)
  assert np.abs(changed[:, 4:] - full[:, 4:]).max() > 1e-4
  # A masked decoder key is invisible to later queries: masking token 2 equals zeroing its column.
  dmask = jnp.ones((2, 6), jnp.int32).at[:, 2].set(0)
  masked = model.apply(variables, ids, dec, decoder_mask=dmask, deterministic=True)
  assert np.abs(masked[:, 3:] - full[:, 3:]).max() > 1e-4
  np.testing.assert_allclose(masked[:, :2], full[:, :2], atol=1e-6)


def test_logit_scaling_and_tied_head():
  model = t5.T5(TINY)
  ids, _, dec = inputs()
  variables = model.init(jax.random.key(0), ids, dec, deterministic=True)
  scaled = model.apply(variables, ids, dec, deterministic=True)
  unscaled = t5.T5(dataclasses.replace(TINY, scale_decoder_outputs=False)).apply(
      variables, ids, dec, deterministic=True)
  np.testing.assert_allclose(scaled, unscaled * 16 ** -0.5, atol=1e-5)


def test_dropout_and_bfloat16():
  config = dataclasses.replace(TINY, dropout_rate=0.1)
  model = t5.T5(config)
  ids, mask, dec = inputs()
  variables = model.init(jax.random.key(0), ids, dec, deterministic=True)
  run = lambda seed: model.apply(variables, ids, dec, input_mask=mask, deterministic=False,
                                 rngs={'dropout': jax.random.key(seed)})
  np.testing.assert_array_equal(run(1), run(1))
  assert np.abs(run(1) - run(2)).max() > 1e-4
  exact = model.apply(variables, ids, dec, input_mask=mask, deterministic=True)
  model16 = t5.T5(dataclasses.replace(config, dtype='bfloat16'))
  logits16 = model16.apply(variables, ids, dec, input_mask=mask, deterministic=True)
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, exact, atol=0.1)


def test_cudnn_flash_kernel_routes_attention(cudnn_stand_in):
  # attention_kernel='cudnn_flash' calls jax.nn.dot_product_attention(implementation='cudnn') in every
  # self- and cross-attention, T5's relative bias (the padding mask folded in) passed in bfloat16;
  # here a stand-in GPU runs the call through XLA. The logits are the default kernel's.
  config = dataclasses.replace(TINY, d_kv=8, dtype='bfloat16')
  rng = np.random.default_rng(0)
  ids, dec = jnp.asarray(rng.integers(2, 64, (2, 8))), jnp.asarray(rng.integers(2, 64, (2, 6)))
  mask = jnp.array([[1] * 8, [1] * 4 + [0] * 4])
  variables = t5.T5(config).init(jax.random.key(0), ids, dec, input_mask=mask, deterministic=True)
  logits = lambda kernel: t5.T5(dataclasses.replace(config, attention_kernel=kernel)).apply(
      variables, ids, dec, input_mask=mask, deterministic=True)
  flash = logits('cudnn_flash')
  # Encoder and decoder self-attention with the bias, cross-attention with the padding mask.
  calls = sorted((c['implementation'], c['bias'], c['mask']) for c in cudnn_stand_in)
  assert calls == sorted([('cudnn', True, False)] * 5 + [('cudnn', False, True)] * 3)
  np.testing.assert_allclose(flash, logits('dot_product'), atol=0.05)


def test_user_errors():
  for field, value in (('feed_forward', 'tanh'), ('position', 'rotary'), ('norm', 'batchnorm'),
                       ('norm_position', 'sandwich'), ('attention_kernel', 'flash')):
    with pytest.raises(UserError, match=field):
      dataclasses.replace(TINY, **{field: value})
  with pytest.raises(UserError, match='num_heads'):
    dataclasses.replace(TINY, num_heads=0)
  with pytest.raises(UserError, match='relative_attention_num_buckets'):
    dataclasses.replace(TINY, relative_attention_num_buckets=2)
  with pytest.raises(UserError, match='even'):
    dataclasses.replace(VASWANI, d_model=15)
  with pytest.raises(UserError, match="remat='some'"):
    dataclasses.replace(TINY, remat='some')
  ids = jnp.zeros((1, 40), jnp.int32)
  with pytest.raises(UserError, match='max_position_embeddings'):
    t5.T5(VASWANI).init(jax.random.key(0), ids, ids[:, :4], deterministic=True)


@pytest.mark.parametrize('config', [TINY, VASWANI], ids=['t5', 'vaswani'])
def test_seq2seq_generate_greedy_equals_teacher_forcing(config):
  model = t5.T5(config)
  ids, mask, dec = inputs()
  params = model.init(jax.random.key(0), ids, dec, deterministic=True)['params']
  tokens = decoding.seq2seq_generate(model, params, ids, mask, max_new_tokens=5)
  # Feeding [start, tokens[:-1]] in one pass, each position's argmax is the next generated token.
  dec_in = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), tokens[:, :-1]], axis=1)
  logits = model.apply({'params': params}, ids, dec_in, input_mask=mask, deterministic=True)
  np.testing.assert_array_equal(tokens, jnp.argmax(logits, axis=-1))


def test_seq2seq_generate_eos_sampling_and_errors():
  model = t5.T5(TINY)
  ids, mask, dec = inputs()
  params = model.init(jax.random.key(0), ids, dec, deterministic=True)['params']
  greedy = decoding.seq2seq_generate(model, params, ids, mask, max_new_tokens=4)
  # With the first greedy token of row 0 as EOS, row 0 stops there and is padded with pad_id.
  eos = int(greedy[0, 0])
  stopped = decoding.seq2seq_generate(model, params, ids, mask, max_new_tokens=4, eos_id=eos,
                                      pad_id=63)
  assert int(stopped[0, 0]) == eos and (stopped[0, 1:] == 63).all()
  sample = lambda seed: decoding.seq2seq_generate(
      model, params, ids, mask, jax.random.key(seed), max_new_tokens=4, temperature=1.0, top_k=8)
  np.testing.assert_array_equal(sample(1), sample(1))
  assert sample(1).shape == (2, 4) and ((0 <= sample(1)) & (sample(1) < 64)).all()
  with pytest.raises(UserError, match='PRNG key'):
    decoding.seq2seq_generate(model, params, ids, mask, max_new_tokens=4, temperature=1.0)
  with pytest.raises(UserError, match='max_new_tokens'):
    decoding.seq2seq_generate(model, params, ids, mask, max_new_tokens=0)
  vaswani = t5.T5(VASWANI)
  params = vaswani.init(jax.random.key(0), ids, dec, deterministic=True)['params']
  with pytest.raises(UserError, match='max_position_embeddings'):
    decoding.seq2seq_generate(vaswani, params, ids, mask, max_new_tokens=40)


def test_sharded_on_a_mesh_equals_unsharded():
  """The logical axis names place every param on a (data, fsdp, tensor) mesh of the 8 fake devices,
  and the sharded forward computes the same logits."""
  mesh = jax.make_mesh((2, 2, 2), ('data', 'fsdp', 'tensor'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rules = (('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('heads', 'tensor'), ('mlp', 'tensor'),
           ('vocab', 'tensor'), ('kv', None), ('length', None))
  model = t5.T5(V1_1)
  ids, mask, dec = (jnp.tile(x, (2, 1)) for x in inputs())  # batch 4, split over data x fsdp
  init = lambda: model.init(jax.random.key(0), ids, dec, deterministic=True)
  specs = nn.get_partition_spec(jax.eval_shape(init))
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  variables = jax.jit(init, out_shardings=shardings)()
  q = variables['params']['decoder']['block_1']['self_attention']['q']['kernel'].value
  assert q.sharding.spec == jax.sharding.PartitionSpec('fsdp', 'tensor', None)

  @jax.jit
  def forward(variables):
    with nn.logical_axis_rules(rules):
      return model.apply(variables, ids, dec, input_mask=mask, deterministic=True)

  with jax.set_mesh(mesh):
    sharded = forward(variables)
  unsharded = model.apply(jax.device_get(variables), ids, dec, input_mask=mask, deterministic=True)
  np.testing.assert_allclose(sharded, unsharded, atol=1e-5)
