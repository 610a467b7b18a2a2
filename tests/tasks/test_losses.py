"""Label smoothing: the training loss is cross-entropy against optax's smoothed targets, the
reported loss stays the NLL, and every task reads the setting from the config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from llmjax import config_lib, tasks
from llmjax.errors import UserError
from llmjax.tasks import losses


def test_smoothed_cross_entropy_is_optax_against_smoothed_labels():
  logits = jax.random.normal(jax.random.key(0), (3, 5, 11)) * 3
  labels = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
  plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  objective, nll = losses.cross_entropy(logits, labels)
  np.testing.assert_allclose(objective, plain, rtol=1e-6)
  np.testing.assert_allclose(nll, plain, rtol=1e-6)
  objective, nll = losses.cross_entropy(logits, labels, 0.1)
  smoothed = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(labels, 11), 0.1))
  np.testing.assert_allclose(objective, smoothed, rtol=1e-5)
  np.testing.assert_allclose(nll, plain, rtol=1e-6)


@pytest.mark.parametrize('select', [False, True])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_cross_entropy_gradient_is_autodiffs_of_the_optax_loss(label_smoothing, dtype, select,
                                                              monkeypatch):
  # The gradient is written out (softmax minus target); both outputs carry one, and a zero weight
  # (a padded position) gives a zero row. The label's term goes in by a scatter on a CPU and by a
  # select on an accelerator; bfloat16 logits get their gradient in bfloat16.
  assert not losses._label_term_by_select()  # These devices are CPUs.
  monkeypatch.setattr(losses, '_label_term_by_select', lambda: select)
  logits = (jax.random.normal(jax.random.key(0), (3, 5, 11)) * 3).astype(dtype)
  labels = jax.random.randint(jax.random.key(1), (3, 5), 0, 11)
  w_objective, w_nll = (jax.random.normal(jax.random.key(k), (3, 5)).at[0, 0].set(0.0)
                        for k in (2, 3))

  def reference(z):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, 11), label_smoothing)
    z = z.astype(jnp.float32)
    return optax.softmax_cross_entropy(z, targets), optax.softmax_cross_entropy_with_integer_labels(
        z, labels)

  def scalar(f):
    return lambda z: jnp.vdot(f(z)[0], w_objective) + jnp.vdot(f(z)[1], w_nll)

  ours = jax.grad(scalar(lambda z: losses.cross_entropy(z, labels, label_smoothing)))(logits)
  expected = jax.grad(scalar(reference))(logits)
  assert ours.dtype == expected.dtype == logits.dtype
  # Both are rounded once from float32: to within one bfloat16 step (2^-8 relative).
  atol = 1e-5 if dtype == 'float32' else 2.0 ** -8 * float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(np.float32(ours), np.float32(expected), atol=atol, rtol=0)
  assert not np.any(np.float32(ours[0, 0]))


def test_correct_predictions_are_the_argmax_ones():
  logits = jax.random.normal(jax.random.key(0), (4, 64, 101))
  labels = jax.random.randint(jax.random.key(1), (4, 64), 0, 101)
  labels = labels.at[:, ::3].set(jnp.argmax(logits, -1)[:, ::3])  # a third of them right
  weights = (jax.random.uniform(jax.random.key(2), (4, 64)) < 0.8).astype(jnp.float32)
  _, _, correct = losses.token_sums(logits, labels, weights)
  assert float(correct) == float(jnp.sum((jnp.argmax(logits, -1) == labels) * weights)) > 50
  # An exact tie with the label counts as correct (argmax would pick the first class).
  _, _, tied = losses.token_sums(jnp.zeros((1, 3)), jnp.array([2]), jnp.ones(1))
  assert float(tied) == 1.0


@pytest.mark.parametrize('name', ['bert_classify', 'gpt_lm', 't5_span'])
def test_tasks_train_on_the_smoothed_loss_and_report_the_nll(name):
  config = load_config(name, 'tiny')
  config.model.init_from = ''
  config.task.label_smoothing = 0.2
  smoothed = tasks.task_for(config)
  config.task.label_smoothing = 0.0
  plain = tasks.task_for(config)
  assert smoothed.label_smoothing == 0.2
  params = plain.init(jax.random.key(0), 8)
  ids = jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 50 + 3
  ones = jnp.ones((2, 8), jnp.int32)
  if name == 'bert_classify':
    batch = {'input_ids': ids, 'token_type_ids': ids * 0, 'attention_mask': ones,
             'label': jnp.array([0, 1]), 'weight': jnp.ones(2)}
  elif name == 'gpt_lm':
    batch = {'inputs': ids, 'targets': ids, 'segment_ids': ones, 'positions': ones * 0 + jnp.arange(8),
             'weights': jnp.ones((2, 8))}
  else:
    batch = {'inputs': ids, 'input_segment_ids': ones, 'input_positions': ones * 0 + jnp.arange(8),
             'targets': ids, 'decoder_inputs': ids, 'target_segment_ids': ones,
             'target_positions': ones * 0 + jnp.arange(8), 'weights': jnp.ones((2, 8))}
  plain_loss, plain_sums = plain.loss(params, batch, None)
  smoothed_loss, smoothed_sums = smoothed.loss(params, batch, None)
  assert abs(float(smoothed_loss) - float(plain_loss)) > 1e-5
  np.testing.assert_allclose(smoothed_sums['loss'], plain_sums['loss'], rtol=1e-6)
  np.testing.assert_allclose(plain_loss, plain_sums['loss'], rtol=1e-6)


def test_label_smoothing_out_of_range_is_a_user_error():
  config = load_config('gpt_lm', 'tiny')
  config.task.label_smoothing = 1.0
  with pytest.raises(UserError, match='task.label_smoothing=1.0 must be in'):
    config_lib.validate(config, num_devices=8)
