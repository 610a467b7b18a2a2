"""BERT model tests: parameter layout and logical axes, HF-style init, masking, dropout, dtypes,
scan_layers and remat."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from llmjax.errors import UserError
from llmjax.models import bert, layers

CONFIG = bert.BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4,
                         intermediate_size=64, max_position_embeddings=64)
AXES = {'batch', 'length', 'embed', 'heads', 'kv', 'mlp', 'vocab'}
NO_DECAY = r'(bias|scale)$'


def make_inputs(batch=2, length=8, seed=0):
  """Random ids and token types; the second example is padded after 5 tokens."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, CONFIG.vocab_size, (batch, length), dtype=np.int32)
  types = (np.arange(length) >= length // 2).astype(np.int32)[None].repeat(batch, 0)
  mask = np.ones((batch, length), np.int32)
  mask[1, 5:] = 0
  return ids, types, mask


def init(model, seed=0):
  # One jitted computation compiles faster than the many small ones of an eager init.
  return jax.jit(model.init, static_argnames='deterministic')(
      jax.random.key(seed), *make_inputs(), deterministic=True)


def flat(tree):
  """{'a/b/kernel': leaf} with nn.Partitioned boxes kept as leaves."""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_box)[0]
  return {'/'.join(k.key for k in path): leaf for path, leaf in leaves}


def test_params_have_logical_axis_names():
  model = bert.BertForSequenceClassification(CONFIG, num_labels=3)
  variables = jax.eval_shape(lambda: init(model))  # abstract init: no FLOPs, no memory
  assert set(variables) == {'params'}
  assert set(variables['params']) == {'bert', 'classifier'}
  params = flat(variables['params'])
  for path, leaf in params.items():
    assert isinstance(leaf, nn.Partitioned), path
    assert len(leaf.names) == leaf.value.ndim, path
    named = [n for n in leaf.names if n is not None]
    assert set(named) <= AXES and len(set(named)) == len(named), (path, leaf.names)
  h, heads, kv = 32, 4, 8
  expected = {
      'bert/embeddings/word_embeddings/embedding': ((100, h), ('vocab', 'embed')),
      'bert/embeddings/position_embeddings/embedding': ((64, h), (None, 'embed')),
      'bert/embeddings/ln/scale': ((h,), ('embed',)),
      'bert/layer_1/attention/q/kernel': ((h, heads, kv), ('embed', 'heads', 'kv')),
      'bert/layer_1/attention/v/bias': ((heads, kv), ('heads', 'kv')),
      'bert/layer_1/attention/out/kernel': ((heads, kv, h), ('heads', 'kv', 'embed')),
      'bert/layer_1/mlp/wi/kernel': ((h, 64), ('embed', 'mlp')),
      'bert/layer_1/mlp/wo/kernel': ((64, h), ('mlp', 'embed')),
      'bert/layer_1/mlp_ln/bias': ((h,), ('embed',)),
      'bert/pooler/kernel': ((h, h), ('embed', 'mlp')),
      'classifier/kernel': ((h, 3), ('embed', None)),
      'classifier/bias': ((3,), (None,)),
  }
  for path, (shape, names) in expected.items():
    assert (params[path].value.shape, params[path].names) == (shape, names), path
  assert not any('layer_2' in p for p in params)
  assert len(params) == 5 + 2 * 16 + 2 + 2


def test_weight_decay_regex_selects_exactly_biases_and_layernorm():
  params = flat(jax.eval_shape(lambda: init(bert.BertForSequenceClassification(CONFIG, 2)))['params'])
  decayed = {p for p in params if not re.search(NO_DECAY, p)}
  assert {p.rsplit('/', 1)[1] for p in decayed} == {'kernel', 'embedding'}
  no_decay = set(params) - decayed
  assert all(p.endswith('/bias') or re.search(r'(^|/)(ln|\w+_ln)/scale$', p) for p in no_decay)


def test_init_like_hf():
  config = bert.BertConfig(vocab_size=1000, hidden_size=64, num_layers=1, num_heads=4,
                           intermediate_size=128, max_position_embeddings=64, initializer_range=0.05)
  params = flat(nn.unbox(init(bert.BertEncoder(config))['params']))
  for path, x in params.items():
    if path.endswith('bias'):
      assert not np.any(x), path
    elif path.endswith('scale'):
      assert np.all(x == 1), path
    elif x.size >= 4096:
      assert abs(float(jnp.std(x)) - 0.05) < 0.005, path


def test_forward_shapes_and_padding_invariance():
  encoder = bert.BertEncoder(CONFIG)
  variables = init(encoder)
  ids, types, mask = make_inputs()
  apply = jax.jit(encoder.apply, static_argnames='deterministic')
  seq, pooled = apply(variables, ids, types, mask, deterministic=True)
  assert seq.shape == (2, 8, 32) and pooled.shape == (2, 32)
  # Padded tokens are invisible to the real ones.
  ids2 = ids.copy()
  ids2[1, 5:] = (ids2[1, 5:] + 1) % CONFIG.vocab_size
  seq2, pooled2 = apply(variables, ids2, types, mask, deterministic=True)
  np.testing.assert_allclose(seq2[:, :5], seq[:, :5], atol=1e-6)
  np.testing.assert_allclose(pooled2, pooled, atol=1e-6)
  # The last layer at [CLS] alone gives the same pooled output, for classifiers.
  first, pooled_first = jax.jit(bert.BertEncoder(CONFIG, pooled_only=True).apply,
                                static_argnames='deterministic')(variables, ids, types, mask,
                                                                 deterministic=True)
  assert first.shape == (2, 1, 32)
  np.testing.assert_allclose(first, seq[:, :1], atol=1e-6)
  np.testing.assert_allclose(pooled_first, pooled, atol=1e-6)


def test_cudnn_flash_kernel_keeps_the_cls_layer_on_dot_product(cudnn_stand_in):
  # With attention_kernel='cudnn_flash' (a stand-in GPU runs jax's call through XLA), every layer
  # but the [CLS]-only last one of a classifier goes through jax.nn.dot_product_attention; the
  # pooled output is the default kernel's (bfloat16: within its rounding).
  config = dataclasses.replace(CONFIG, num_heads=2, dtype='bfloat16')  # heads of 16
  variables = init(bert.BertEncoder(config))
  pooled = lambda kernel: bert.BertEncoder(
      dataclasses.replace(config, attention_kernel=kernel), pooled_only=True).apply(
          variables, *make_inputs(), deterministic=True)[1]
  flash = pooled('cudnn_flash')
  assert [c['queries'] for c in cudnn_stand_in] == [8] * (CONFIG.num_layers - 1)
  np.testing.assert_allclose(flash, pooled('dot_product'), atol=0.05)


def test_dropout():
  model = bert.BertForSequenceClassification(dataclasses.replace(CONFIG, num_layers=1), num_labels=2)
  variables = init(model)
  inputs = make_inputs()

  apply = jax.jit(model.apply, static_argnames='deterministic')

  def run(deterministic, seed):
    rngs = {'dropout': jax.random.key(seed)}
    return apply(variables, *inputs, deterministic=deterministic, rngs=rngs)

  np.testing.assert_array_equal(run(True, 1), run(True, 2))
  np.testing.assert_array_equal(run(True, 1), apply(variables, *inputs, deterministic=True))
  np.testing.assert_array_equal(run(False, 1), run(False, 1))
  assert np.max(np.abs(run(False, 1) - run(False, 2))) > 1e-4
  assert np.max(np.abs(run(False, 1) - run(True, 1))) > 1e-4


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model32 = bert.BertForSequenceClassification(CONFIG, num_labels=2)
  model16 = bert.BertForSequenceClassification(
      dataclasses.replace(CONFIG, dtype='bfloat16'), num_labels=2)
  variables = init(model32)
  assert {x.dtype for x in jax.tree.leaves(init(model16))} == {jnp.dtype('float32')}
  logits16 = jax.jit(model16.apply, static_argnames='deterministic')(
      variables, *make_inputs(), deterministic=True)
  logits32 = jax.jit(model32.apply, static_argnames='deterministic')(
      variables, *make_inputs(), deterministic=True)
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, logits32, atol=0.02)


def _loss_and_grads(model):
  """Jitted (loss, its gradient) of `model`'s mean squared logits, deterministic or with dropout
  drawn from a key (compiled whole rather than op by op: faster on CPU)."""
  inputs = make_inputs()

  def loss(params, key=None):
    rngs = None if key is None else {'dropout': key}
    logits = model.apply({'params': params}, *inputs, deterministic=key is None, rngs=rngs)
    return jnp.mean(logits ** 2)

  return jax.jit(loss), jax.jit(jax.grad(loss))


@functools.cache
def _unrolled_reference():
  """(params, loss, gradient, loss with dropout, its gradient) of the unrolled 3-layer model: what
  every scanned or rematerialised variant must compute, computed once for the variants."""
  unrolled = bert.BertForSequenceClassification(dataclasses.replace(CONFIG, num_layers=3),
                                                num_labels=3)
  params = nn.unbox(init(unrolled)['params'])
  loss, grad = _loss_and_grads(unrolled)
  key = jax.random.key(3)
  return params, loss(params), grad(params), loss(params, key), grad(params, key)


@pytest.mark.parametrize('scan_layers,remat', [(True, 'none'), (False, 'full'), (True, 'dots')])
def test_scan_layers_and_remat_compute_the_same(scan_layers, remat):
  config = dataclasses.replace(CONFIG, num_layers=3, scan_layers=scan_layers, remat=remat)
  params, expected_loss, expected, dropout_loss, dropout_expected = _unrolled_reference()
  model = bert.BertForSequenceClassification(config, num_labels=3)
  boxed = jax.eval_shape(lambda: init(model))['params']
  if scan_layers:
    specs = flat(nn.get_partition_spec(boxed))
    assert specs['bert/layers/attention/q/kernel'] == jax.sharding.PartitionSpec(
        'layers', 'embed', 'heads', 'kv')
    assert specs['bert/layers/mlp_ln/scale'] == jax.sharding.PartitionSpec('layers', 'embed')
    assert flat(boxed)['bert/layers/mlp/wi/kernel'].value.shape == (3, 32, 64)
    assert not any('layer_' in p for p in flat(boxed))
    ours = bert.stack_layers(params, 3)
    jax.tree.map(np.testing.assert_array_equal, bert.unstack_layers(ours, 3), params)
    expected = bert.stack_layers(expected, 3)
  else:
    ours = params
  assert jax.tree.map(np.shape, ours) == jax.tree.map(np.shape, nn.unbox(boxed))

  loss, grad = _loss_and_grads(model)
  np.testing.assert_allclose(loss(ours), expected_loss, atol=1e-5, rtol=0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), grad(ours),
               expected)
  if not scan_layers:
    # Remat recomputes each layer with the same dropout masks.
    key = jax.random.key(3)
    np.testing.assert_allclose(loss(ours, key), dropout_loss, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0),
                 grad(ours, key), dropout_expected)


def test_make_attention_mask():
  mask = layers.make_attention_mask(jnp.array([[1, 1, 0]]), jnp.array([[True, False, True, True]]))
  assert mask.shape == (1, 1, 3, 4) and mask.dtype == jnp.bool_
  np.testing.assert_array_equal(mask[0, 0], [[1, 0, 1, 1], [1, 0, 1, 1], [0, 0, 0, 0]])


def test_user_errors():
  with pytest.raises(UserError, match='not divisible by num_heads'):
    bert.BertConfig(hidden_size=30, num_heads=4)
  with pytest.raises(UserError, match='max_position_embeddings=64'):
    ids = np.zeros((1, 65), np.int32)
    bert.BertEncoder(CONFIG).init(jax.random.key(0), ids, ids, ids + 1, deterministic=True)
  with pytest.raises(UserError, match="attention_kernel='flash' is unknown"):
    bert.BertConfig(attention_kernel='flash')
  with pytest.raises(UserError, match="remat='some'"):
    bert.BertConfig(remat='some')
  with pytest.raises(UserError, match='unknown dtype'):
    layers.dtype('float33')
