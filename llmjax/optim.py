"""The optimizer and learning-rate schedule, built from `config.optim`.

Which parameters get weight decay is chosen by a regex over '/'-joined parameter paths
(`config.optim.no_decay`, by default biases and LayerNorm parameters, as in BERT), not by code.
So is what trains: `config.optim.freeze` names parameters that do not, and `make`'s `trainable`
(LoRA's adapters and head, `llmjax.lora.trainable`) narrows training to what it matches. Frozen
parameters get no optimizer state (`optax.multi_transform` gives them `set_to_zero`), and gradient
clipping sees only the trainable ones. Gradient accumulation lives in the train step, so one
optimizer update is one step.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

from llmjax.errors import UserError


def path_str(path) -> str:
  """'bert/layer_0/attention/q/kernel' for a tree path from `jax.tree_util`."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def decay_mask(params, no_decay: str):
  """True for parameters that get weight decay: those whose path does not match `no_decay`."""
  pattern = re.compile(no_decay)
  return jax.tree_util.tree_map_with_path(lambda p, _: not pattern.search(path_str(p)), params)


def trainable_mask(params, freeze: str = '', trainable: str = ''):
  """True for parameters that train: those `trainable` matches ('' = all) and `freeze` does not."""
  frozen = re.compile(freeze) if freeze else None
  kept = re.compile(trainable) if trainable else None
  paths = [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  trains = [(kept is None or bool(kept.search(p))) and not (frozen and frozen.search(p))
            for p in paths]
  # (optax also calls this on a leafless placeholder to find the params in its state.)
  if paths and frozen and not any(frozen.search(p) for p in paths):
    raise UserError(f'config.optim.freeze={freeze!r} matches no parameter: match paths such as '
                    f'{paths[0]!r}')
  if paths and not any(trains):
    raise UserError(f'nothing trains: config.optim.freeze={freeze!r} freezes every parameter '
                    f'left trainable by {trainable or "the model"!r}: loosen the regex')
  return jax.tree.unflatten(jax.tree.structure(params), trains)


def stop_frozen_gradients(params, freeze: str = '', trainable: str = ''):
  """`params` with the frozen ones behind `stop_gradient`: differentiating a loss of them then
  skips the frozen weights' gradient computations, and their gradients are exact zeros."""
  return jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params,
                      trainable_mask(params, freeze, trainable))


def learning_rate(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Warmup to `lr` (linear from 0, or constant at `lr`), then linear or cosine decay to 0 at
  `total_steps`, a constant, or 'rsqrt': lr * sqrt(warmup / step), the inverse square root decay of
  Vaswani et al. (2017; linear warmup) and of T5 (constant warmup: lr 0.01 for 10^4 steps gives
  1 / sqrt(max(step, 10^4))).
  """
  warmup = int(config.warmup_frac * total_steps)
  decay_steps = max(total_steps - warmup, 1)
  after = {
      'linear': optax.linear_schedule(config.lr, 0.0, decay_steps),
      'cosine': optax.cosine_decay_schedule(config.lr, decay_steps),
      'constant': optax.constant_schedule(config.lr),
      # join_schedules hands the steps since the warmup ended (negative before) to the schedule
      # after it.
      'rsqrt': lambda step: config.lr * jnp.sqrt(warmup / jnp.maximum(step + warmup, warmup)),
  }[config.schedule]
  if not warmup:
    return after
  ramp = (optax.linear_schedule(0.0, config.lr, warmup) if config.warmup_shape == 'linear'
          else optax.constant_schedule(config.lr))
  return optax.join_schedules([ramp, after], [warmup])


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales all gradients by min(1, max_norm / their global norm), as PyTorch's `clip_grad_norm_`.

  The same clipping as `optax.clip_by_global_norm` (to rounding) and the same empty state, but as
  one multiply that XLA fuses into the optimizer's per-parameter update. XLA:CPU wrote out optax's
  `select` between the gradient and its scaled copy, one more pass over every gradient: T5-small's
  AdamW update (benchmark case d, 60M parameters) took 86 ms with it and 67 ms with this.
  """
  def update(updates, state, params=None):
    del params
    norm = jnp.maximum(optax.tree.norm(updates), jnp.finfo(jnp.float32).tiny)  # 0 -> scale 1.
    scale = jnp.minimum(1.0, max_norm / norm)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make(config: ml_collections.ConfigDict, total_steps: int,
         trainable: str = '') -> optax.GradientTransformation:
  """AdamW (decoupled weight decay, Loshchilov & Hutter 2019) or Adafactor (Shazeer & Stern 2018,
  as T5 pre-trained: factored second moments, decay 0.8, update clipping at 1, steps scaled by the
  parameter's RMS, no momentum), behind global-norm clipping, for the parameters that train (see
  `trainable_mask`); the others get zero updates and no state."""
  chain = [clip_by_global_norm(config.clip_norm)] if config.clip_norm > 0 else []
  schedule = learning_rate(config, total_steps)
  if config.name == 'adafactor':
    chain.append(optax.adafactor(
        schedule, decay_rate=0.8, clipping_threshold=1.0, multiply_by_parameter_scale=True,
        weight_decay_rate=config.weight_decay or None,
        weight_decay_mask=lambda params: decay_mask(params, config.no_decay)))
  else:
    chain.append(optax.adamw(
        schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay,
        mask=lambda params: decay_mask(params, config.no_decay)))
  tx = optax.chain(*chain)
  freeze = config.get('freeze', '')  # A run's config.json from before freezing has no such key.
  if not (freeze or trainable):
    return tx  # Everything trains: the state has no partition to carry.
  return optax.multi_transform(
      {'train': tx, 'frozen': optax.set_to_zero()},
      lambda params: jax.tree.map(lambda t: 'train' if t else 'frozen',
                                  trainable_mask(params, freeze, trainable)))
