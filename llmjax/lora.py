"""LoRA (Hu et al., 2021): low-rank adapters on any model family, without touching model code.

A targeted weight W (a kernel [in..., out...]) is trained as W + (alpha / r) * A B, with W frozen,
A [in..., r] and B [r, out...]. B starts at zero, so at step 0 the adapted model computes exactly
what the base model does; A starts Kaiming-uniform (bound 1/sqrt(fan_in)), as PEFT initialises it.

The adapters live in the train state's params next to the weight they adapt, so checkpoints,
resuming and sharding need nothing new:

  bert/layer_0/attention/q/kernel   [embed, heads, kv]     frozen
  bert/layer_0/attention/q/lora_a   [embed, r]             trains
  bert/layer_0/attention/q/lora_b   [r, heads, kv]         trains

A and B carry the kernel's logical axis names on their in and out sides (the rank axis is not
sharded), so they shard like the kernel; with `scan_layers` they keep its leading 'layers' axis. A
kernel's in-axes are its first axis, or (heads, kv) for the attention output projection, which
contracts both.

`wrap(task, config)` gives a task with the same interface whose loss, eval_outputs and predict run
the model on the merged weights W + (alpha / r) A B; `merge(params, config)` returns plain model
params (export, generation). What trains is a regex over '/'-joined parameter paths:
`trainable(config)` names the adapters and `config.lora.trainable` (a new task head, PEFT's
modules_to_save); `llmjax.optim` gives everything else no optimizer state and no gradient, and also
freezes `config.optim.freeze` with or without LoRA.
"""

import math
import re

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from llmjax import optim
from llmjax.errors import UserError

# The adapters' parameter names; `trainable` matches them.
A, B = 'lora_a', 'lora_b'
_ADAPTERS = rf'(^|/)({A}|{B})$'


def _lora(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
  """config.lora when LoRA is on (a run's config.json from before LoRA has no such block)."""
  lora = config.get('lora')
  return lora if lora is not None and lora.rank > 0 else None


def trainable(config: ml_collections.ConfigDict) -> str:
  """The regex of the parameters that train ('' = all): with LoRA, the adapters and
  `config.lora.trainable`. `config.optim.freeze` freezes on top of it (see `llmjax.optim`)."""
  lora = _lora(config)
  if lora is None:
    return ''
  return '|'.join(f'(?:{r})' for r in (_ADAPTERS, lora.trainable) if r)


def parameter_counts(params, config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(trainable, total) numbers of parameters in `params`, adapters included (as PEFT counts)."""
  mask = optim.trainable_mask(params, config.optim.get('freeze', ''), trainable(config))
  sizes = [x.size for x in jax.tree.leaves(params)]
  return sum(n for n, t in zip(sizes, jax.tree.leaves(mask)) if t), sum(sizes)


def _in_axes(names: tuple, lead: int) -> int:
  """How many axes after the `lead` stacked-layer axes a kernel contracts: two for the attention
  output projection [heads, kv, embed], one for every other kernel ([in, out...])."""
  return 2 if tuple(names[lead:lead + 2]) == ('heads', 'kv') and len(names) - lead > 2 else 1


def add_adapters(params, config: ml_collections.ConfigDict, rng: jax.Array):
  """`params` (boxed with logical axis names, as `task.init` returns them) with lora_a and lora_b
  beside every weight that `config.lora.targets` matches."""
  lora = config.lora
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  pattern = re.compile(lora.targets)
  targets = [path for path in flat if pattern.search(path)]
  if not targets:
    raise UserError(f'config.lora.targets={lora.targets!r} matches no parameter of '
                    f'{config.model.name}: match paths such as {next(iter(flat))!r}')
  adapted = {}
  for i, path in enumerate(targets):
    module, _, name = path.rpartition('/')
    if module in adapted:
      raise UserError(f'config.lora.targets={lora.targets!r} matches {adapted[module]} and {path}, '
                      f'two weights of one module: match one per module, e.g. kernel$')
    adapted[module] = path
    leaf = flat[path]
    boxed = isinstance(leaf, nn.Partitioned)
    kernel = leaf.value if boxed else leaf
    names = tuple(leaf.names) if boxed else (None,) * kernel.ndim
    lead = next((j for j, n in enumerate(names) if n != 'layers'), len(names))
    if name not in ('kernel', 'embedding') or kernel.ndim - lead < 2:
      raise UserError(f'config.lora.targets={lora.targets!r} matches {path} of shape '
                      f'{kernel.shape}, not a weight matrix: match kernels (or embedding '
                      r"tables), e.g. r'attention/(q|v)/kernel$'")
    split = lead + _in_axes(names, lead)
    fan_in = math.prod(kernel.shape[lead:split])
    a_shape = kernel.shape[:split] + (lora.rank,)
    b_shape = kernel.shape[:lead] + (lora.rank,) + kernel.shape[split:]
    bound = 1.0 / math.sqrt(fan_in)
    a = jax.random.uniform(jax.random.fold_in(rng, i), a_shape, kernel.dtype, -bound, bound)
    b = jnp.zeros(b_shape, kernel.dtype)
    if boxed:
      a = leaf.replace(value=a, names=names[:split] + (None,))
      b = leaf.replace(value=b, names=names[:lead] + (None,) + names[split:])
    flat[f'{module}/{A}'] = a
    flat[f'{module}/{B}'] = b
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def _delta(a: jax.Array, b: jax.Array, shape: tuple[int, ...], scale: float) -> jax.Array:
  """scale * A B in the kernel's `shape`; leading axes that A and B share (scan's 'layers') are
  batch axes."""
  lead = a.ndim + b.ndim - 2 - len(shape)
  a = a.reshape(a.shape[:lead] + (-1, a.shape[-1]))
  b = b.reshape(b.shape[:lead + 1] + (-1,))
  # HIGHEST: on TPUs the default would round A and B to bfloat16 for a product that costs nothing.
  return (scale * jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)).reshape(shape)


def merge(params, config: ml_collections.ConfigDict):
  """Plain model params: every adapted weight W replaced by W + (alpha / r) A B, the adapters
  dropped. Params without adapters come back unchanged."""
  lora = _lora(config)
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  if lora is None or not any(path.endswith(f'/{A}') for path in flat):
    return params
  pattern = re.compile(lora.targets)
  scale = lora.alpha / lora.rank
  merged = {}
  for path, leaf in flat.items():
    module, _, name = path.rpartition('/')
    if name in (A, B):
      continue
    if pattern.search(path) and f'{module}/{A}' in flat:
      delta = _delta(flat[f'{module}/{A}'], flat[f'{module}/{B}'], leaf.shape, scale)
      leaf = (leaf + delta).astype(leaf.dtype)
    merged[path] = leaf
  return flax.traverse_util.unflatten_dict(merged, sep='/')


class LoraTask:
  """A task whose params hold adapters: init adds them, and every method that runs the model
  (loss, eval_outputs, predict) runs it on the merged weights. Everything else is the task's."""

  # The wrapped task's other methods that take params first: given adapters they would silently run
  # the base model (flax ignores params it does not use).
  _RUNS_MODEL = ('predict', 'logits')

  def __init__(self, task, config: ml_collections.ConfigDict):
    self.task = task
    self.config = config

  def init(self, rng, length: int):
    params = self.task.init(rng, length)
    # The base params are those of the same seed without LoRA; the adapters draw from their own key.
    return add_adapters(params, self.config, jax.random.fold_in(rng, 0x10A))

  def merge(self, params):
    return merge(params, self.config)

  def loss(self, params, batch, dropout_rng):
    return self.task.loss(self.merge(params), batch, dropout_rng)

  def eval_outputs(self, params, batch):
    return self.task.eval_outputs(self.merge(params), batch)

  def __getattr__(self, name):
    if name == 'task':  # Not set yet (e.g. while unpickling): no recursion.
      raise AttributeError(name)
    attr = getattr(self.task, name)
    if name in self._RUNS_MODEL:
      return lambda params, *args, **kwargs: attr(self.merge(params), *args, **kwargs)
    return attr


def wrap(task, config: ml_collections.ConfigDict):
  """`task` with LoRA adapters when config.lora.rank > 0, else `task` itself."""
  return task if _lora(config) is None else LoraTask(task, config)
