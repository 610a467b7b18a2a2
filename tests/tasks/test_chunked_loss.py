"""Losses that compute fewer logits: the chunked cross-entropy of causal LM and SFT
(`task.loss_chunk_size`) and the masked-LM head at the masked positions only
(`task.max_predictions_per_seq`) give the sums and gradients of the dense logits, on one device and
on a data x fsdp x tensor mesh, and the chunked loss never holds more than one chunk's logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from conftest import load_config
from llmjax import config_lib, sharding, tasks, train
from llmjax.errors import UserError
from llmjax.models import bert, gpt
from llmjax.tasks import losses, mlm
from llmjax.tasks.causal_lm import CausalLMTask
from llmjax.tasks.mlm import MaskedLMTask


def assert_close(actual, expected, rtol=1e-5, per_leaf=True):
  """Every leaf within rtol of the largest magnitude of its expected leaf (or of any leaf: the
  gradients of a key bias are rounding noise, summed in another order on a mesh)."""
  expected = [np.asarray(e, np.float64) for e in jax.tree.leaves(expected)]
  scale = max(np.abs(e).max() for e in expected)
  for a, e in zip(jax.tree.leaves(actual), expected, strict=True):
    assert np.shape(a) == e.shape
    atol = rtol * max(np.abs(e).max() if per_leaf else scale, 1e-6)
    np.testing.assert_allclose(np.asarray(a, np.float64), e, rtol=0, atol=atol)


def _largest_logits(jaxpr, vocab: int) -> int:
  """The most elements of any [B, positions, vocab] value in `jaxpr` and its sub-jaxprs."""
  largest = 0
  for eqn in jaxpr.eqns:
    for v in eqn.outvars:
      shape = getattr(v.aval, 'shape', ())
      if len(shape) == 3 and shape[-1] == vocab:
        largest = max(largest, int(np.prod(shape)))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)
        if isinstance(sub, jax.extend.core.Jaxpr):
          largest = max(largest, _largest_logits(sub, vocab))
  return largest


def test_chunked_cross_entropy_is_the_dense_sums_and_gradient():
  label_smoothing = 0.1
  rows, length, width, vocab = 3, 10, 8, 37
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (rows, length, width))
  head = jax.random.normal(keys[1], (vocab, width))
  labels = jax.random.randint(keys[2], (rows, length), 0, vocab)
  weights = (jax.random.uniform(keys[3], (rows, length)) < 0.7).astype(jnp.float32)
  project = lambda h, x: jnp.dot(x, h.T)
  dense = lambda h, x: losses.token_sums(project(h, x), labels, weights, label_smoothing)
  expected = dense(head, x)
  expected_grads = jax.grad(lambda h, x: dense(h, x)[0], (0, 1))(head, x)
  # 4 positions per chunk (the last chunk padded), and the whole row at once.
  for chunk_tokens in (12, 1000):
    chunked = lambda h, x: losses.chunked_cross_entropy(
        project, h, x, labels, weights, chunk_tokens=chunk_tokens, label_smoothing=label_smoothing)
    sums, grads = jax.jit(lambda h, x: (chunked(h, x), jax.grad(
        lambda h, x: chunked(h, x)[0], (0, 1))(h, x)))(head, x)
    assert_close((sums, grads), (expected, expected_grads))
  # The metrics leave without a gradient: they are never trained on.
  assert not np.asarray(jax.grad(lambda x: chunked(head, x)[1])(x)).any()
  # No logits outgrow one chunk of 4 positions, backward included; the dense loss holds them all.
  chunked = lambda h, x: losses.chunked_cross_entropy(project, h, x, labels, weights,
                                                      chunk_tokens=12)[0]
  jaxpr = jax.make_jaxpr(jax.grad(chunked, (0, 1)))(head, x).jaxpr
  assert _largest_logits(jaxpr, vocab) == rows * 4 * vocab
  dense_jaxpr = jax.make_jaxpr(jax.grad(lambda h, x: dense(h, x)[0], (0, 1)))(head, x).jaxpr
  assert _largest_logits(dense_jaxpr, vocab) == rows * length * vocab


def _causal_batch(rows, length, vocab, seed=0):
  rng = np.random.default_rng(seed)
  # Two packed documents per row, and padding (weight 0) at the end.
  segment_ids = np.where(np.arange(length) < length // 2, 1, 2) * (np.arange(length) < length - 2)
  segment_ids = np.tile(segment_ids, (rows, 1)).astype(np.int32)
  positions = np.where(segment_ids == 2, np.arange(length) - length // 2, np.arange(length))
  return {'inputs': rng.integers(0, vocab, (rows, length)).astype(np.int32),
          'targets': rng.integers(0, vocab, (rows, length)).astype(np.int32),
          'segment_ids': segment_ids, 'positions': (positions * (segment_ids > 0)).astype(np.int32),
          'weights': (segment_ids > 0).astype(np.float32)}


def _same_loss_and_gradient(variants, params, batch, rng):
  """Each task's (loss, sums), gradient and evaluation sums are the first task's; one jit."""
  outputs = jax.jit(lambda params, batch: [
      (jax.value_and_grad(t.loss, has_aux=True)(params, batch, rng), t.eval_outputs(params, batch))
      for t in variants])(params, batch)
  for output in outputs[1:]:
    assert_close(output, outputs[0])
  assert float(outputs[0][0][0][1]['weight']) == batch['weights'].sum()


@pytest.mark.parametrize('tie_embeddings', [True, False])
def test_causal_lm_chunked_loss_is_the_dense_loss(tie_embeddings):
  config = gpt.GPTConfig(vocab_size=61, max_position_embeddings=16, hidden_size=16, num_layers=1,
                         num_heads=2, intermediate_size=32, tie_embeddings=tie_embeddings)
  # Chunks of 2 rows x 4 positions, with and without label smoothing.
  model = gpt.GPT(config)
  variants = [CausalLMTask(model, 0.1), CausalLMTask(model, 0.1, loss_chunk_size=8),
              CausalLMTask(model), CausalLMTask(model, loss_chunk_size=8)]
  params = variants[0].init(jax.random.key(0), 14)
  assert ('lm_head' in params) != tie_embeddings
  batch = _causal_batch(2, 14, 61)
  # Dropout in the decoder: the same key draws the same masks either way.
  _same_loss_and_gradient(variants[:2], params, batch, jax.random.key(1))
  _same_loss_and_gradient(variants[2:], params, batch, None)


def _mlm_batch(rows, length, vocab, counts, seed=0):
  """Masked-LM rows with counts[i] masked positions in row i (never [CLS] at 0 nor [SEP] at -1)."""
  rng = np.random.default_rng(seed)
  weights = np.zeros((rows, length), np.float32)
  for row, count in enumerate(counts):
    weights[row, 1 + rng.choice(length - 2, count, replace=False)] = 1
  ids = rng.integers(5, vocab, (rows, length)).astype(np.int32)
  return {'input_ids': np.where(weights > 0, 4, ids), 'labels': ids,
          'token_type_ids': np.zeros_like(ids), 'segment_ids': np.ones_like(ids),
          'positions': np.tile(np.arange(length, dtype=np.int32), (rows, 1)), 'weights': weights}


def test_masked_lm_head_at_the_masked_positions_is_the_dense_loss():
  config = bert.BertConfig(vocab_size=43, hidden_size=16, num_layers=1, num_heads=2,
                           intermediate_size=32, max_position_embeddings=16)
  model = bert.BertForMaskedLM(config)
  # 5 slots hold every row's masked tokens; with 4, the row of 5 sends the batch to the dense head.
  variants = [MaskedLMTask(model, 0.1), MaskedLMTask(model, 0.1, max_predictions_per_seq=5),
              MaskedLMTask(model, 0.1, max_predictions_per_seq=4)]
  params = variants[0].init(jax.random.key(0), 16)
  # Dropout in the encoder: the same key draws the same masks either way.
  _same_loss_and_gradient(variants, params, _mlm_batch(4, 16, 43, counts=(3, 5, 0, 1)),
                          jax.random.key(1))


def test_gathered_head_computes_logits_only_at_the_slots():
  config = bert.BertConfig(vocab_size=43, hidden_size=16, num_layers=1, num_heads=2,
                           intermediate_size=32, max_position_embeddings=16)
  task = MaskedLMTask(bert.BertForMaskedLM(config), max_predictions_per_seq=3)
  params = task.init(jax.random.key(0), 16)
  batch = _mlm_batch(4, 16, 43, counts=(3, 2, 0, 1))
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: task.loss(p, batch, None)[0]))(params).jaxpr
  cond = [e for e in jaxpr.eqns if e.primitive.name == 'cond'][0]
  gathered, everywhere = (b.jaxpr for b in cond.params['branches'][::-1])
  assert _largest_logits(gathered, 43) == 4 * 3 * 43
  assert _largest_logits(everywhere, 43) == 4 * 16 * 43


def test_derived_max_predictions_bounds_the_masked_count():
  for length, rate in ((128, 0.15), (512, 0.15), (64, 0.3)):
    slots = mlm.derive_max_predictions(length, rate)
    # A row's masked count is Binomial(length - 2, rate): P(count > slots) <= 1e-4, and one slot
    # fewer would not do.
    tail = lambda k: scipy.stats.binom.sf(k, length - 2, rate)
    assert tail(slots) <= 1e-4 < tail(slots - 1)
  assert mlm.derive_max_predictions(128, 0.15) < 40  # far below the 128 dense positions


@pytest.mark.parametrize('name', ['gpt_lm', 'bert_mlm'])
def test_fewer_logits_train_the_same_on_an_8_device_mesh(name):
  config = load_config(name, 'tiny')
  config.model.init_from = ''
  config.model.update(vocab_size=64, num_layers=1)
  config.mesh = dict(data=2, fsdp=2, tensor=2)
  mesh = sharding.make_mesh(config)
  tx = optax.sgd(1.0)  # The step's update is minus the gradient.
  length = config.data.max_len
  if name == 'gpt_lm':
    key, on, batch = 'loss_chunk_size', 40, _causal_batch(8, length, 64)
  else:
    key, on = 'max_predictions_per_seq', -1
    batch = _mlm_batch(8, length, 64, counts=(4, 0, 7, 1, 2, 3, 5, 6))
  grads, metrics = [], []
  for value in (0, on):
    config.task[key] = value
    task = tasks.task_for(config)  # The config key reaches the task.
    assert getattr(task, key) == value
    state, shardings = train.create_train_state(task, tx, mesh, config, jax.random.key(0))
    params = jax.device_get(state.params)
    # As `train.train_and_evaluate` runs its steps.
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
      step = train.make_train_step(task, tx, config, mesh, shardings)
      state, step_metrics = step(state, sharding.global_batch(batch, mesh, config))
    grads.append(jax.tree.map(np.subtract, params, jax.device_get(state.params)))
    metrics.append(jax.device_get(step_metrics))
  assert_close(metrics[1], metrics[0])
  assert_close(grads[1], grads[0], per_leaf=False)


def test_fewer_logits_settings_are_validated():
  config = load_config('gpt_lm', 'tiny')
  config.task.loss_chunk_size = -1
  with pytest.raises(UserError, match='task.loss_chunk_size=-1 must be >= 0'):
    config_lib.validate(config, num_devices=8)
  config = load_config('bert_mlm', 'tiny')
  config.task.max_predictions_per_seq = -2
  with pytest.raises(UserError, match='task.max_predictions_per_seq=-2 must be >= -1'):
    config_lib.validate(config, num_devices=8)
