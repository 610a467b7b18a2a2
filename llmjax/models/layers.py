"""Transformer building blocks shared by the models: attention, MLP, dense/embed/LayerNorm factories.

Every parameter is created with logical axis names (`nn.with_logical_partitioning`) and the main
activations are constrained with `nn.with_logical_constraint`, so a model built from these pieces is
sharded on any device mesh by choosing rules that map logical names to mesh axes, never by editing
model code. The logical axis names are:

  batch   examples in a batch
  length  sequence positions
  embed   the model width (the residual stream)
  heads   attention heads
  kv      the per-head width of queries, keys and values
  mlp     the hidden width of a feed-forward layer (also used for other hidden projections)
  vocab   token ids

Parameters keep flax's default names (`kernel`, `embedding`, `bias`, LayerNorm `scale` and `bias`), so
the optimizer excludes exactly biases and LayerNorm parameters from weight decay with the regex
`(bias|scale)$` over '/'-joined parameter paths.

Compute `dtype` (activations, matmuls) and `param_dtype` (stored weights) are separate everywhere:
e.g. bfloat16 compute with float32 parameters.

There is one attention (`MultiHeadAttention`, for encoders and decoders alike) and one mask builder
(`make_attention_mask`: padding, causal and packed-segment masks, ANDed).

Autoregressive decoding keeps each attention layer's keys and values in flax's 'cache' collection
(`cached_key`, `cached_value`, `cache_index`): an `init` with `decode=True` on a [B, max_len] dummy
creates it, and each later `apply(..., decode=True, mutable=['cache'])` writes its tokens at
`cache_index` and attends to everything written so far.
"""

import contextlib
import contextvars
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from llmjax.errors import UserError

Dtype = Any
Initializer = Callable[..., jax.Array]

# N(0, 0.02^2), the BERT / GPT-2 initialisation; models pass their own `initializer_range`.
default_init = nn.initializers.normal(stddev=0.02)

# config.model.remat (the same names in every family) -> the jax.checkpoint policy (None: no remat).
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}

# config.model.attention_kernel (the same names in every family): what computes attention in
# training and evaluation. 'dot_product' is `dot_product_attention`, on any device; 'cudnn_flash' is
# cuDNN's flash attention through jax.nn.dot_product_attention (`cudnn_flash_attention`: NVIDIA GPUs,
# bfloat16 or float16 compute, no dropout on the attention probabilities), as MaxText's
# attention='cudnn_flash_jax'.
ATTENTION_KERNELS = ('dot_product', 'cudnn_flash')


def dtype(name: str | Dtype) -> jnp.dtype:
  """'float32', 'bfloat16', ... (or a dtype) -> the jnp dtype."""
  try:
    return jnp.dtype(name)
  except TypeError:
    raise UserError(f'unknown dtype {name!r}: use float32 or bfloat16') from None


def dtypes(config) -> dict:
  """A model config's compute and parameter dtypes, as keyword arguments for the layers here."""
  return dict(dtype=dtype(config.dtype), param_dtype=dtype(config.param_dtype))


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, Hendrycks & Gimpel (2016): what BERT and HF's hidden_act='gelu' use.

  Written as x/2 (1 + erf(x/sqrt 2)), as PyTorch computes it, rather than through erfc as
  jax.nn.gelu does: XLA's erf is a rational polynomial and its erfc needs an exp, so on CPU this
  runs the forward and backward pass in half the time, within 1.1e-6 of the exact value.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


@jax.custom_vjp
def gelu_new(x: jax.Array) -> jax.Array:
  """The tanh approximation of GELU: GPT-2's activation (HF hidden_act / activation_function 'gelu_new').

  Its gradient is written out and recomputes the tanh from x: differentiated by JAX, the forward
  pass also wrote the tanh for the backward, a second array of the MLP's width (GPT-2 small at
  bfloat16, 32 x 1,024, compiled for an H100: 201 MB a layer written and read again).
  """
  return jax.nn.gelu(x, approximate=True)


def _gelu_new_fwd(x):
  return jax.nn.gelu(x, approximate=True), x


def _gelu_new_bwd(x, dy):
  # gelu(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). In float32: for bfloat16 x
  # that is also what keeps XLA from merging this tanh with the forward pass's and saving it.
  x32 = x.astype(jnp.float32)
  c = np.sqrt(2 / np.pi)
  t = jnp.tanh(c * (x32 + 0.044715 * x32 ** 3))
  du = c * (1 + 3 * 0.044715 * x32 ** 2)
  dx = dy.astype(jnp.float32) * (0.5 * (1 + t) + 0.5 * x32 * (1 - t * t) * du)
  return (dx.astype(x.dtype),)


gelu_new.defvjp(_gelu_new_fwd, _gelu_new_bwd)


# Mlp activations by name. The gated ones (Shazeer, 2020) multiply activation(wi_0 x) by wi_1 x.
ACTIVATIONS = {'relu': jax.nn.relu, 'gelu': gelu, 'gelu_new': gelu_new, 'silu': jax.nn.silu}
# 'geglu_tanh' gates with the tanh GELU: T5 v1.1's 'gated-gelu' (HF maps it to gelu_new).
GATED_ACTIVATIONS = {'geglu': gelu, 'geglu_tanh': gelu_new, 'swiglu': jax.nn.silu}


def traced_platform() -> str:
  """The platform ('cpu', 'gpu', 'tpu') of the mesh being traced for (`jax.set_mesh`), or of JAX's
  default devices where none is set: a step compiled ahead of time for devices this machine lacks
  (`llmjax.plan`) is traced for theirs."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  return device.platform if device is not None else jax.default_backend()


def make_attention_mask(query_mask: jax.Array | None = None, key_mask: jax.Array | None = None, *,
                        causal: bool = False,
                        query_segment_ids: jax.Array | None = None,
                        key_segment_ids: jax.Array | None = None,
                        query_index: jax.Array | None = None,
                        key_index: jax.Array | None = None) -> jax.Array:
  """Pairwise attention mask: the AND of padding, causal and same-segment masks.

  Args:
    query_mask: [B, Lq] int or bool, 1 or True = real token; None = all real.
    key_mask: [B, Lk] likewise.
    causal: query i may attend only to keys j with key_index[j] <= query_index[i].
    query_segment_ids: [B, Lq] int; with key_segment_ids, a query attends only to keys of its own
      segment, so documents packed into one row never see each other.
    key_segment_ids: [B, Lk] int.
    query_index: [Lq] or [B, Lq] int, each query's place in the sequence for `causal`; default
      0..Lq-1. In decoding it is the query's slot in the KV cache.
    key_index: [Lk] or [B, Lk] int, default 0..Lk-1.

  Returns:
    [B or 1, 1, Lq, Lk] bool, True where query i may attend to key j; the size-1 axis broadcasts over
    heads (and over the batch when only `causal` is given).
  """
  def length(*xs):
    return next(x.shape[-1] for x in xs if x is not None)

  lq = length(query_mask, query_segment_ids, query_index)
  lk = length(key_mask, key_segment_ids, key_index)
  mask = jnp.ones((1, 1, lq, lk), bool)
  if query_mask is not None:
    mask = mask & query_mask.astype(bool)[:, None, :, None]
  if key_mask is not None:
    mask = mask & key_mask.astype(bool)[:, None, None, :]
  if causal:
    q = jnp.arange(lq) if query_index is None else query_index
    k = jnp.arange(lk) if key_index is None else key_index
    mask = mask & (jnp.atleast_2d(q)[:, None, :, None] >= jnp.atleast_2d(k)[:, None, None, :])
  if (query_segment_ids is None) != (key_segment_ids is None):
    raise ValueError('pass both query_segment_ids and key_segment_ids, or neither')
  if query_segment_ids is not None:
    mask = mask & (query_segment_ids[:, None, :, None] == key_segment_ids[:, None, None, :])
  return mask


def masked_bias(bias: jax.Array, mask: jax.Array | None) -> jax.Array:
  """An additive attention bias with the mask folded in: the most negative float where `mask` is
  False (what `dot_product_attention` writes over masked logits, and exp turns into exactly 0).

  bias [B or 1, heads, Lq, Lk], mask [B or 1, 1 or heads, Lq, Lk] bool or None -> their broadcast
  shape.
  T5 adds one bias to the logits of every layer of a stack; folded once, as HF T5 adds its mask to
  `position_bias`, the layers need no mask, and the bias's gradient is summed over the layers before
  it is reduced over the batch: once per stack instead of once per layer (XLA:CPU's reductions over
  that non-minor batch axis took about 4% of a T5-small training step on a loaded CPU), and by
  `sum_to`, a product: T5-small's step (benchmark case d) took 2.623 s instead of 2.669 s with a
  reduction (A/B alternating in one process, 6 rounds of 5 steps, 2 AVX2 cores).
  """
  if mask is None:
    return bias
  bias = broadcast_to(bias, jnp.broadcast_shapes(bias.shape, mask.shape))
  return jnp.where(mask, bias, jnp.finfo(bias.dtype).min)


def broadcast_to(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """jnp.broadcast_to(x, shape), its gradient summed back to x's shape by `sum_to`: a bias, position
  embedding or attention bias broadcast over the tokens or the batch."""
  in_shape = x.shape
  if in_shape == tuple(shape):
    return x

  @jax.custom_vjp
  def broadcast(x):
    return jnp.broadcast_to(x, shape)

  broadcast.defvjp(lambda x: (broadcast(x), None), lambda _, dy: (sum_to(dy, in_shape),))
  return broadcast(x)


def sum_to(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """x summed to `shape`, which broadcasts to x's (the transpose of that broadcast).

  The leading axes summed are contracted with a vector of ones, a product: XLA:CPU's reductions over
  leading axes slow down with the size of what is left, and took 96 ms for BERT's MLM output bias
  (1,120 x 30,522 -> 30,522), 42 ms for 464 x 32,128 and 11 ms for T5-small's attention bias (16 x 8
  x 128 x 128 -> 8 x 128 x 128), where the products took 3.6, 1.3 and 0.3 ms; the dense layers'
  biases of benchmark cases a-d took 0.17-0.77 ms as products and 0.19-1.38 ms reduced (slower only
  for 2,048 x 384: 0.25 against 0.19 ms; timed alone, 2 AVX2 cores). In A/Bs of the training steps
  alternating in one process, BERT MLM's (case b) took 1.151 s instead of 1.294 s, MiniLM's (a)
  1.012 s instead of 1.022 s and GPT-2's (c) 4.776 s instead of 4.817 s. A product also contracts a
  batch axis sharded over devices with one all-reduce; HIGHEST precision keeps TPUs from rounding
  the summands to bfloat16. Other axes are reduced as usual.
  """
  shape = tuple(shape)
  full = (1,) * (x.ndim - len(shape)) + shape
  lead = 0
  while lead < x.ndim and full[lead] == 1:
    lead += 1
  rows = math.prod(x.shape[:lead])
  if rows > 1:
    x = jnp.tensordot(jnp.ones((rows,), x.dtype), x.reshape((rows,) + x.shape[lead:]),
                      axes=(0, 0), precision=jax.lax.Precision.HIGHEST)
  else:
    x = x.reshape(x.shape[lead:])
  full = full[lead:]
  axes = tuple(i for i, n in enumerate(full) if n == 1 and x.shape[i] != 1)
  return jnp.sum(x, axis=axes, keepdims=True).reshape(shape)


def positions_from_segment_ids(segment_ids: jax.Array) -> jax.Array:
  """[B, L] segment ids -> [B, L] positions that restart at 0 wherever the segment id changes."""
  length = segment_ids.shape[-1]
  index = jnp.arange(length)
  starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                            segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  # The index of the latest segment start at or before each token.
  start_index = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
  return index - start_index


def sinusoidal_positions(length: int, features: int, max_timescale: float = 10_000.) -> jax.Array:
  """The fixed position table of Vaswani et al. (2017), [length, features] float32.

  Interleaved as in the paper: column 2i holds sin(pos / max_timescale^(2i / features)) and column
  2i + 1 the cosine of the same angle.
  """
  if features % 2:
    raise UserError(f'sinusoidal positions need an even width, got {features}: use an even hidden_size')
  pos = jnp.arange(length, dtype=jnp.float32)[:, None]
  inv_freq = max_timescale ** -(jnp.arange(0, features, 2, dtype=jnp.float32) / features)
  angles = pos * inv_freq[None, :]  # [length, features / 2]
  return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(length, features)


def apply_rotary(x: jax.Array, positions: jax.Array, theta: float = 10_000.) -> jax.Array:
  """Rotary position embedding (Su et al., 2021) of x [B, L, heads, D] at positions [B, L].

  Pairs dimension i with i + D/2 ("rotate half"), as GPT-NeoX, LLaMA and HF do, rather than the
  paper's interleaved pairs (2i, 2i + 1): checkpoints from those models then load without permuting
  q/k columns. q k^T of rotated vectors depends on positions only through their difference.
  """
  d = x.shape[-1]
  if d % 2:
    raise UserError(f'rotary embeddings need an even head width, got {d}: change hidden_size/num_heads')
  inv_freq = theta ** -(jnp.arange(0, d, 2, dtype=jnp.float32) / d)  # [D/2]
  angles = positions.astype(jnp.float32)[:, :, None] * inv_freq  # [B, L, D/2]
  cos = jnp.cos(angles)[:, :, None, :]  # [B, L, 1, D/2], broadcast over heads
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool,
                             num_buckets: int = 32, max_distance: int = 128) -> jax.Array:
  """T5's bucket (Raffel et al., 2020) of each key_position - query_position, int32 in [0, num_buckets).

  Half the buckets (of each sign, when bidirectional) hold the exact distances 0..n/2-1, the other half
  logarithmically wider bins up to `max_distance`; farther keys share the last bucket. Causal (not
  bidirectional) attention only sees keys at or before the query, so only distances <= 0 get buckets.
  """
  buckets = 0
  n = num_buckets
  if bidirectional:
    n //= 2
    buckets = (relative_position > 0).astype(jnp.int32) * n
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = n // 2
  is_small = distance < max_exact
  # max(distance, 1) keeps log finite in the branch `where` discards (small distances).
  log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(
      max_distance / max_exact)
  large = max_exact + (log_ratio * (n - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, n - 1)
  return buckets + jnp.where(is_small, distance, large).astype(jnp.int32)


class RelativePositionBias(nn.Module):
  """T5's learned relative position bias: one scalar per (bucket, head), added to attention logits.

  T5 computes it once, in the first layer of each stack, and every layer of that stack reuses it.
  Parameter: `rel_embedding` [num_buckets, heads], logical axes (None, 'heads').
  """
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  bidirectional: bool = True  # encoder True; causal decoder False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  embedding_init: Initializer = default_init

  @nn.compact
  def __call__(self, query_index: jax.Array, key_index: jax.Array) -> jax.Array:
    """query_index [Lq], key_index [Lk] int positions -> additive bias [1, heads, Lq, Lk].

    In cached decoding query_index is the queries' cache slots (cache_index + 0..Lq-1), so each new
    token gets the bias of its true position.
    """
    buckets = relative_position_bucket(key_index[None, :] - query_index[:, None],
                                       bidirectional=self.bidirectional,
                                       num_buckets=self.num_buckets, max_distance=self.max_distance)
    table = self.param('rel_embedding',
                       nn.with_logical_partitioning(self.embedding_init, (None, 'heads')),
                       (self.num_buckets, self.num_heads), self.param_dtype)
    values = jnp.asarray(table, self.dtype)[buckets]  # [Lq, Lk, heads]
    return jnp.transpose(values, (2, 0, 1))[None]


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
                          bias: jax.Array | None = None, scale: bool = True,
                          dropout: Callable[[jax.Array], jax.Array] | None = None,
                          dtype: Dtype = jnp.float32) -> jax.Array:
  """softmax(q k^T / sqrt(D) + bias, masked) v, per head.

  q [B, Lq, heads, D], k and v [B, Lk, kv_heads, D] with heads a multiple of kv_heads (query head h
  reads kv head h // (heads / kv_heads), as HF's repeat_kv), mask [B or 1, 1 or heads, Lq, Lk] bool
  -> [B, Lq, heads, D]. `bias` [B or 1, heads, Lq, Lk] is added to the logits (T5's relative
  positions); `scale` False skips the 1/sqrt(D) (T5 folds it into the q initialisation).
  `dropout` maps the probabilities [B, heads, Lq, Lk]. Without dropout and with as many kv heads as
  query heads, the gradient is the one written out in `_attention` (equal to autodiff's, tested).
  """
  if dropout is None and k.shape[2] == q.shape[2]:
    swap = lambda x: jnp.swapaxes(x, 1, 2)  # [B, L, heads, D] <-> [B, heads, L, D]
    factor = 1 / np.sqrt(q.shape[-1]) if scale else 1.0
    return swap(_attention(swap(q), swap(k), swap(v), mask, bias, factor, jnp.dtype(dtype)))
  b, lq, heads, d = q.shape
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  # Scaling q rather than the scores costs Lq*D instead of Lq*Lk multiplies per head.
  if scale:
    q = q / jnp.sqrt(d).astype(q.dtype)
  q = q.reshape(b, lq, kv_heads, groups, d)
  scores = jnp.einsum('bqkgd,bskd->bkgqs', q, k).reshape(b, heads, lq, -1)  # [B, heads, Lq, Lk]
  probs = _softmax(scores, mask, bias).astype(dtype)
  if dropout is not None:
    probs = dropout(probs)
  probs = probs.reshape(b, kv_heads, groups, lq, -1)
  x = jnp.einsum('bkgqs,bskd->bqkgd', probs, v)
  return x.reshape(b, lq, heads, d)


def _softmax(scores, mask, bias):
  """The attention probabilities, float32, of the logits `scores` [B, heads, Lq, Lk] plus `bias`
  where `mask` is True."""
  # Softmax in float32: in bfloat16 the exponentials of a long row lose the small probabilities.
  scores = scores.astype(jnp.float32)
  if bias is not None:
    scores = scores + broadcast_to(bias.astype(jnp.float32), scores.shape)
  if mask is not None:
    # The most negative finite float, as HF uses: exp underflows to exactly 0, and a row with every
    # key masked (a padded query) becomes uniform instead of NaN.
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
  return jax.nn.softmax(scores, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(q, k, v, mask, bias, factor, dtype):
  """Attention without dropout in [B, heads, L, D] layout, with its gradient written out.

  Backward as FlashAttention's (Dao et al., 2022): dS = P * (dP - rowsum(dO * O)), a reduction over
  D instead of over the keys; dV and dK are taken transposed, [B, heads, D, Lk], so that the
  probabilities are read as they are stored. Differentiated by XLA, jax.nn.dot_product_attention's
  form copied transposes of the [B, heads, Lq, Lk] probabilities and their gradient on XLA:CPU; with
  this one the steps of benchmark cases c and d took a few percent less time (see the README).
  """
  return _attention_fwd(q, k, v, mask, bias, factor, dtype)[0]


def _attention_fwd(q, k, v, mask, bias, factor, dtype):
  scores = jnp.einsum('bnqd,bnkd->bnqk', q * jnp.asarray(factor, q.dtype), k)
  probs = _softmax(scores, mask, bias)
  out = jnp.einsum('bnqk,bnkd->bnqd', probs.astype(dtype), v)
  return out, (q, k, v, mask, bias, probs, out)


def _attention_bwd(factor, dtype, residuals, dout):
  q, k, v, mask, bias, probs, out = residuals
  dv = jnp.einsum('bndq,bnqk->bndk', jnp.swapaxes(dout, 2, 3), probs.astype(dtype))
  dprobs = jnp.einsum('bnqd,bnkd->bnqk', dout, v).astype(jnp.float32)
  delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  dscores = probs * (dprobs - delta)
  dq = jnp.einsum('bnqk,bnkd->bnqd', dscores.astype(dtype), k) * jnp.asarray(factor, q.dtype)
  dk = jnp.einsum('bndq,bnqk->bndk', jnp.swapaxes(q, 2, 3) * jnp.asarray(factor, q.dtype),
                  dscores.astype(dtype))
  dbias = None
  if bias is not None:  # Summed over the axes the bias broadcasts along.
    dbias = sum_to(dscores, bias.shape).astype(bias.dtype)
  return (dq.astype(q.dtype), jnp.swapaxes(dk, 2, 3).astype(k.dtype),
          jnp.swapaxes(dv, 2, 3).astype(v.dtype), None, dbias)


_attention.defvjp(_attention_fwd, _attention_bwd)


def cudnn_flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
                          bias: jax.Array | None = None, scale: bool = True, causal: bool = False,
                          dropout: Callable[[jax.Array], jax.Array] | None = None,
                          implementation: str = 'cudnn') -> jax.Array:
  """`dot_product_attention`'s result (same arguments, and `causal`: whether the mask is causal) as
  cuDNN's flash attention computes it, through jax.nn.dot_product_attention: the [B, heads, Lq, Lk]
  probabilities are never held, and with `causal` the key blocks after each query block are
  skipped. `implementation='xla'` makes the same call through XLA, on any device (the tests compare
  it with `dot_product_attention`)."""
  if implementation == 'cudnn':
    fix = "set model.attention_kernel='dot_product'"
    if (platform := traced_platform()) != 'gpu':
      raise UserError(f"model.attention_kernel='cudnn_flash' needs an NVIDIA GPU, and this run's "
                      f"devices are {platform}: {fix}")
    if dropout is not None:
      raise UserError(f"model.attention_kernel='cudnn_flash' takes no dropout on the attention "
                      f"probabilities: set the model's attention dropout to 0, or {fix}")
    if q.dtype not in (jnp.bfloat16, jnp.float16):
      raise UserError(f"model.attention_kernel='cudnn_flash' computes in bfloat16 or float16, not "
                      f"{q.dtype}: set model.dtype=bfloat16, or {fix}")
    if q.shape[-1] % 8 or q.shape[-1] > 128:
      raise UserError(f"model.attention_kernel='cudnn_flash' needs a head width that is a multiple "
                      f"of 8 and at most 128, not {q.shape[-1]}: change the number of heads, or {fix}")
    if (mask is not None or bias is not None) and (q.shape[1] % 2 or k.shape[1] % 2):
      raise UserError(f"model.attention_kernel='cudnn_flash' needs even sequence lengths with a mask, "
                      f"not {q.shape[1]} queries and {k.shape[1]} keys: pad to an even data.max_len, "
                      f"or {fix}")
  if bias is not None:
    # Masked logits at jax's value for a boolean mask (-2^15 in float16, -2^41 otherwise) rather than
    # float32's most negative number (T5's mask), which is -inf in bfloat16: cuDNN mishandles the
    # difference of two larger negative numbers.
    masked = -2.0 ** (15 if q.dtype == jnp.float16 else 41)
    bias = jnp.maximum(bias, masked).astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=None if scale else 1.0,
                                      is_causal=causal, implementation=implementation)


def causal_blocks(attention: Callable[..., jax.Array], q: jax.Array, k: jax.Array, v: jax.Array,
                  mask: jax.Array | None, bias: jax.Array | None, block: int) -> jax.Array:
  """Causal self-attention computed in blocks of `block` queries, each attending only to the keys up
  to its own end, as FlashAttention skips the blocks above the diagonal (Dao et al., 2022).

  `attention(q, k, v, mask, bias)` is any of this module's attention computations; q, k, v
  [B, L, heads, D] and mask, bias [B or 1, 1 or heads, L, L] as it takes them. The mask must be
  causal (no query attends to a later key): then the keys a block leaves out are masked anyway, and
  the result is the same, for about (n + 1) / 2n of the scores and products of the whole square
  (n blocks). GPT-2 6 x 384 at 256 tokens (benchmark case c) took 4% less step time in blocks of 128
  on 2 CPU cores. `block` 0, or at least L, computes the square at once.
  """
  length = q.shape[1]
  if not block or length <= block:
    return attention(q, k, v, mask, bias)
  rows = lambda a, start, end: None if a is None else a[..., start:end, :end]
  return jnp.concatenate(
      [attention(q[:, start:start + block], k[:, :start + block], v[:, :start + block],
                 rows(mask, start, start + block), rows(bias, start, start + block))
       for start in range(0, length, block)], axis=1)


def dense(features: int, kernel_axes: tuple[str | None, str | None], *, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32, kernel_init: Initializer = default_init,
          name: str | None = None) -> 'DenseGeneral':
  """A Dense layer: kernel [in, out] named `kernel_axes`, zero-initialised bias [out] named by out
  (flax's nn.Dense's parameters; its products and bias gradient are `DenseGeneral`'s)."""
  return DenseGeneral((features,), kernel_axes, kernel_axes[-1:], dtype=dtype,
                      param_dtype=param_dtype, kernel_init=kernel_init, name=name)


def embed(num_embeddings: int, features: int, axes: tuple[str | None, str | None], *,
          dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
          embedding_init: Initializer = default_init, name: str | None = None) -> nn.Embed:
  """A lookup table [num_embeddings, features] named `axes`, e.g. ('vocab', 'embed') for tokens."""
  return nn.Embed(
      num_embeddings, features, dtype=dtype, param_dtype=param_dtype,
      embedding_init=nn.with_logical_partitioning(embedding_init, axes), name=name)


def layer_norm(*, epsilon: float, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               name: str | None = None) -> nn.LayerNorm:
  """LayerNorm over 'embed' with `scale` = 1 and `bias` = 0 at init."""
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
      # Two-pass variance, E[(x - mean)^2], as PyTorch computes it: the one-pass E[x^2] - mean^2
      # loses precision when |mean| >> std, and with BERT's eps of 1e-12 nothing absorbs that error.
      use_fast_variance=False,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ('embed',)),
      name=name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def project(x: jax.Array, kernel: jax.Array, contract: int) -> jax.Array:
  """x [..., *in] @ kernel [*in, *out] -> [..., *out], `in` being the last `contract` axes of x.

  The same product and gradients as `jax.lax.dot_general`, but the kernel's gradient x^T dy is taken
  over x and dy flattened to two dimensions, [tokens, in] and [tokens, out]. Asked for it over the
  [batch, length] axes, XLA:CPU first copies a transpose of one of them (an activation: up to a
  [tokens, d_ff] array in an MLP) so that its YNNPACK kernels see the contracted axis last; a 2-D
  product contracting the leading axes runs as it is. T5-small's step (case d) took 6% less time
  and MiniLM's (case a) 6% less than with dy^T x and a transposed result, the form before.
  Within `pad_products`, the products oneDNN runs slowly are padded.
  """
  return _contract(x, kernel, tuple(range(x.ndim - contract, x.ndim)), tuple(range(contract)))


# oneDNN's slow products (`pad_products`): SLOW_COLUMNS output columns and fewer than
# SLOW_ROWS_BELOW rows. They are computed with at least COLUMN_PAD more columns, sliced off after.
SLOW_COLUMNS = 512
SLOW_ROWS_BELOW = 544
COLUMN_PAD = 16
_pad_products = contextvars.ContextVar('pad_products', default=False)


@contextlib.contextmanager
def pad_products(enabled: bool = True):
  """Within it, `project`, its gradients and `unembed`'s input gradient compute a product with
  exactly 512 output columns and fewer than 544 rows with zero columns added to its right-hand
  operand, and slice them off the result: the same values.

  For XLA:CPU's oneDNN products (`llmjax.train.compiler_options`). On 2 AVX2 cores oneDNN's gemm:jit
  ran 64-520 x 2,048 by 2,048 x 512 at 87-117 GFLOP/s, but 544 x 2,048 by 2,048 x 512 at 170, and
  464 rows by 416, 480, 544, 640 or 1,024 columns at 176-186; the same products given 528 columns
  ran at 145-173 (counting the 512 columns only). T5-small's step at 16 x 29 targets (benchmark case
  d, whose decoder and weight gradients have these shapes) took 2.600 s instead of 2.718 s as they
  are, and 2.598 s instead of 2.707 s with them split into two of 256 columns each, the form before
  (A/Bs alternating in one process).

  The mode is read while a function is traced, and jax.jit keeps one trace per function: set it
  inside the function compiled, as `llmjax.train.jit_step` does.
  """
  token = _pad_products.set(enabled)
  try:
    yield
  finally:
    _pad_products.reset(token)


def _slow(rows: int, columns: int) -> bool:
  """Whether `pad_products` pads a product of this output shape."""
  return _pad_products.get() and columns == SLOW_COLUMNS and rows < SLOW_ROWS_BELOW


def _contract(a, b, a_axes, b_axes):
  """jax.lax.dot_general of a and b over a's axes `a_axes` and b's `b_axes`, no batch axes: [a's
  other axes, b's other axes]. Under `pad_products`, b's last other axis is padded when the output
  is one of oneDNN's slow shapes."""
  dims = ((a_axes, b_axes), ((), ()))
  free = [i for i in range(b.ndim) if i not in b_axes]
  rows = math.prod(n for i, n in enumerate(a.shape) if i not in a_axes)
  columns = math.prod(b.shape[i] for i in free)
  if not (free and _slow(rows, columns)):
    return jax.lax.dot_general(a, b, dims)
  last = b.shape[free[-1]]
  padding = [(0, 0)] * b.ndim
  padding[free[-1]] = (0, -(-COLUMN_PAD * last // columns))  # >= COLUMN_PAD columns in all
  return jax.lax.dot_general(a, jnp.pad(b, padding), dims)[..., :last]


def _project_fwd(x, kernel, contract):
  return project(x, kernel, contract), (x, kernel)


def _project_dx(dy, kernel, n_batch, contract):
  """dx [..., *in] = dy [..., *out] . kernel [*in, *out] over the out axes."""
  return _contract(dy, kernel, tuple(range(n_batch, dy.ndim)), tuple(range(contract, kernel.ndim)))


def _kernel_grad(x, dy, contract):
  """x^T dy over the tokens, [in, everything else of dy]: x and dy flattened to two dimensions
  (see `project`), `in` being the last `contract` axes of x."""
  x2 = x.reshape(-1, math.prod(x.shape[x.ndim - contract:]))
  return _contract(x2, dy.reshape(x2.shape[0], -1), (0,), (0,))


def _project_bwd(contract, residuals, dy):
  x, kernel = residuals
  n_batch = x.ndim - contract
  dx = _project_dx(dy, kernel, n_batch, contract)
  dkernel = _kernel_grad(x, dy, contract).reshape(kernel.shape)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


project.defvjp(_project_fwd, _project_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def project_shared(x: jax.Array, kernels: tuple[jax.Array, ...], contract: int) -> tuple[jax.Array, ...]:
  """`project(x, kernel, contract)` for each of several kernels of one shape, on one input: the
  query, key and value projections of self-attention, or the key and value ones of cross-attention.

  The same products and gradients, but the kernels' gradients are one product, x^T [dy_1 ... dy_n]
  over the tokens with the dy stacked on an axis of their own (so that a kernel sharded on its
  output axes needs no resharding), then split. Three 2,048 x 512 by 512 x 512 gradients took
  27.7 ms as three oneDNN products and 19.4 ms as one (timed alone, 2 cores, AVX2). The input
  gradient is one product too, of the same stacked dy and the kernels stacked likewise: the dy,
  which attention's backward pass leaves in its own layouts, are then rearranged once, not once
  for each product.
  """
  return tuple(project(x, kernel, contract) for kernel in kernels)


def _project_shared_fwd(x, kernels, contract):
  return project_shared(x, kernels, contract), (x, kernels)


def _project_shared_bwd(contract, residuals, dys):
  x, kernels = residuals
  n_batch = x.ndim - contract
  # [batch..., n, out...] and [in..., n, out...]: the dy and the kernels on an axis of their own.
  dy = jnp.stack(dys, axis=n_batch)
  dx = _project_dx(dy, jnp.stack(kernels, axis=contract), n_batch, contract)
  # [in, n x out].
  dkernels = _kernel_grad(x, dy, contract)
  dkernels = dkernels.reshape(dkernels.shape[0], len(kernels), -1)
  return dx.astype(x.dtype), tuple(dkernels[:, i].reshape(kernel.shape).astype(kernel.dtype)
                                   for i, kernel in enumerate(kernels))


project_shared.defvjp(_project_shared_fwd, _project_shared_bwd)


@jax.custom_vjp
def unembed(x: jax.Array, embedding: jax.Array) -> jax.Array:
  """x [..., E] @ embedding [vocab, E]^T -> logits [..., vocab]: a tied output layer (Press & Wolf,
  2017).

  The embedding's gradient dy^T x is taken over dy and x flattened to [tokens, vocab] and
  [tokens, E], as `project` takes its kernel's, and as the transpose of x^T dy (see below).
  Differentiated through x @ embedding.T, XLA:CPU first copied a transpose of the logits' gradient
  (823 MB for GPT-2 at 16 x 256 tokens).
  """
  return jax.lax.dot_general(x, embedding, (((x.ndim - 1,), (1,)), ((), ())))


def _unembed_fwd(x, embedding):
  return unembed(x, embedding), (x, embedding)


def _unembed_bwd(residuals, dy):
  x, embedding = residuals
  dx = _contract(dy, embedding, (dy.ndim - 1,), (0,))
  dy2, x2 = dy.reshape(-1, embedding.shape[0]), x.reshape(-1, embedding.shape[1])
  # x^T dy [E, vocab], then transposed: oneDNN ran GPT-2's 384 x 4096 by 4096 x 50257 product at
  # 272 GFLOP/s and the same product as dy^T x [vocab, E] at 212, and the transposed copy (77 MB) costs
  # less than the difference. The barrier keeps XLA from folding the transpose into the product.
  dembedding = jax.lax.optimization_barrier(
      jax.lax.dot_general(x2, dy2, (((0,), (0,)), ((), ())))).T
  return dx.astype(x.dtype), dembedding.astype(embedding.dtype)


unembed.defvjp(_unembed_fwd, _unembed_bwd)


class DenseGeneral(nn.Module):
  """A dense layer contracting the last `contract` input axes into the axes `features`.

  Flax's nn.DenseGeneral initialises a flat 2-D kernel and reshapes it, so under a mesh its logical
  constraint meets the flat shape and fails; this one creates the kernel in its final shape.
  """
  features: tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  bias_axes: tuple[str | None, ...]
  contract: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_init

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel, bias = self.weights(x.shape[x.ndim - self.contract:])
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return self.add_bias(project(x, kernel, self.contract), bias)

  @nn.compact
  def weights(self, in_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array | None]:
    """(kernel [*in_shape, *features], bias [*features] or None), created on first use."""
    kernel = self.param('kernel', nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                        tuple(in_shape) + tuple(self.features), self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                             self.bias_axes),
                        tuple(self.features), self.param_dtype)
    return kernel, bias

  def add_bias(self, y: jax.Array, bias: jax.Array | None) -> jax.Array:
    return y if bias is None else y + broadcast_to(jnp.asarray(bias, self.dtype), y.shape)


def project_all(x: jax.Array, layers: list[DenseGeneral]) -> list[jax.Array]:
  """[layer(x) for layer in layers], for dense layers of one shape on one input: their kernels'
  gradients as one product (`project_shared`)."""
  contract = layers[0].contract
  weights = [layer.weights(x.shape[x.ndim - contract:]) for layer in layers]
  x, *kernels = nn.dtypes.promote_dtype(x, *(kernel for kernel, _ in weights), dtype=layers[0].dtype)
  ys = project_shared(x, tuple(kernels), contract)
  return [layer.add_bias(y, bias) for layer, y, (_, bias) in zip(layers, ys, weights)]


class MultiHeadAttention(nn.Module):
  """Multi-head scaled dot-product attention (Vaswani et al., 2017), with the decoder's extras.

  q, k and v are projected to [B, L, heads, kv]; softmax(q k^T / sqrt(kv)) weights the values per head,
  with dropout on the attention probabilities as in BERT and GPT-2; the heads are then projected back
  to the input width. Self-attention passes the same array as `inputs_q` and `inputs_kv`.

  - Grouped-query attention (Ainslie et al., 2023): `num_kv_heads` < `num_heads` key/value heads, each
    shared by num_heads / num_kv_heads query heads; num_kv_heads=1 is multi-query attention.
  - Rotary embeddings: with `rotary`, q and k are rotated by `positions` before the dot product.
  - T5: `scale_logits` False drops the 1/sqrt(kv) (T5 folds it into the q initialisation, `query_init`),
    and `bias` [B or 1, heads, Lq, Lk] is added to the logits (`RelativePositionBias`).
  - Decoding (`decode=True`): k and v are written into the 'cache' collection at `cache_index` and the
    queries attend causally to every cache slot filled so far (see the module docstring).

  Parameters: `q` (kernel ('embed', 'heads', 'kv'), bias ('heads', 'kv')), `k` and `v` (the same with
  num_kv_heads heads) and `out` (kernel ('heads', 'kv', 'embed'), bias ('embed',)); no biases when
  `use_bias` is False.
  """
  num_heads: int
  head_dim: int | None = None  # default: input width // num_heads
  num_kv_heads: int | None = None  # default: num_heads
  dropout_rate: float = 0.0
  use_bias: bool = True
  rotary: bool = False
  rope_theta: float = 10_000.
  scale_logits: bool = True  # False: no 1/sqrt(kv) (T5)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_init
  query_init: Initializer | None = None  # the `q` kernel's; default kernel_init
  out_init: Initializer | None = None  # the `out` kernel's; default kernel_init
  # > 0: the mask of self-attention is causal; compute it in blocks of this many queries (see
  # `causal_blocks`). Not in decoding, where the keys are the cache's.
  causal_block: int = 0
  # One of ATTENTION_KERNELS; 'cudnn_flash' skips the blocks above (cuDNN skips the keys after each
  # query block itself). One query at a time (decoding, BERT's [CLS]-only last layer) uses
  # 'dot_product' whatever this says: flash attention saves nothing there.
  attention_kernel: str = 'dot_product'

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, mask: jax.Array | None = None, *,
               bias: jax.Array | None = None,
               positions: jax.Array | None = None, deterministic: bool,
               decode: bool = False) -> jax.Array:
    """Attends from inputs_q to inputs_kv.

    Args:
      inputs_q: [B, Lq, E].
      inputs_kv: [B, Lk, E].
      mask: [B or 1, 1 or heads, Lq, Lk] bool (see `make_attention_mask`); in decoding Lk is the
        cache length, and the causal mask over filled slots is added here.
      bias: [B or 1, heads, Lq, Lk] float added to the attention logits; in decoding Lk is the
        cache length.
      positions: [B, Lq] int, the tokens' positions for rotary embeddings (self-attention only).
      deterministic: True disables dropout; False needs a 'dropout' rng.
      decode: write k, v into the cache and attend to the filled cache (self-attention only).

    Returns:
      [B, Lq, E].
    """
    features = inputs_q.shape[-1]
    head_dim = self.head_dim or features // self.num_heads
    num_kv_heads = self.num_kv_heads or self.num_heads
    if self.num_heads % num_kv_heads:
      raise UserError(f'num_heads={self.num_heads} is not a multiple of num_kv_heads={num_kv_heads}: '
                      f'choose num_kv_heads dividing num_heads')

    def projection(name, heads, init=None):
      return DenseGeneral((heads, head_dim), ('embed', 'heads', 'kv'), ('heads', 'kv'),
                          use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                          kernel_init=init or self.kernel_init, name=name)

    qkv_axes = ('batch', 'length', 'heads', 'kv')
    q_layer = projection('q', self.num_heads, self.query_init)
    k_layer, v_layer = projection('k', num_kv_heads), projection('v', num_kv_heads)
    # Projections of one input and one shape take their kernels' gradients as one product.
    if inputs_q is inputs_kv and num_kv_heads == self.num_heads:
      q, k, v = project_all(inputs_q, [q_layer, k_layer, v_layer])
    else:
      q, (k, v) = q_layer(inputs_q), project_all(inputs_kv, [k_layer, v_layer])
    q, k, v = (nn.with_logical_constraint(y, qkv_axes) for y in (q, k, v))
    # q [B, Lq, heads, kv]; k, v [B, Lk, kv_heads, kv]

    if self.rotary:
      if positions is None:
        raise ValueError('rotary attention needs the positions of its tokens')
      q = apply_rotary(q, positions, self.rope_theta)
      k = apply_rotary(k, positions, self.rope_theta)

    if decode:
      k, v, mask = self._update_cache(k, v, mask)

    dropout = None
    if not deterministic and self.dropout_rate > 0.0:
      dropout = lambda probs: nn.Dropout(rate=self.dropout_rate)(probs, deterministic=False)
    if self.attention_kernel == 'cudnn_flash' and not decode and q.shape[1] > 1:
      x = cudnn_flash_attention(q, k, v, mask, bias=bias, scale=self.scale_logits,
                                causal=self.causal_block > 0, dropout=dropout)
    else:
      attention = lambda q, k, v, mask, bias: dot_product_attention(
          q, k, v, mask, bias=bias, scale=self.scale_logits, dropout=dropout, dtype=self.dtype)
      x = causal_blocks(attention, q, k, v, mask, bias, 0 if decode else self.causal_block)
    x = nn.with_logical_constraint(x, qkv_axes)  # [B, Lq, heads, kv]
    return DenseGeneral((features,), ('heads', 'kv', 'embed'), ('embed',), contract=2,
                        use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=self.out_init or self.kernel_init, name='out')(x)  # [B, Lq, E]

  def _update_cache(self, k, v, mask):
    """Writes k, v [B, L, kv_heads, kv] at cache_index -> (cache keys, cache values, mask over them).

    The first (init) pass only creates the cache, shaped like its [B, max_len] input, and attends
    as usual.
    """
    initialized = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, k.shape, k.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, v.shape, v.dtype)
    cache_index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return k, v, mask
    index, length, max_len = cache_index.value, k.shape[1], cached_key.value.shape[1]
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k.astype(cached_key.value.dtype),
                                                    (0, index, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(
        cached_value.value, v.astype(cached_value.value.dtype), (0, index, 0, 0))
    cache_index.value = index + length
    # Query i sits in slot index + i and sees slots 0..index + i: the prefix, never unwritten slots.
    filled = make_attention_mask(causal=True, query_index=index + jnp.arange(length),
                                 key_index=jnp.arange(max_len))
    mask = filled if mask is None else mask & filled
    return cached_key.value, cached_value.value, mask


class Mlp(nn.Module):
  """Position-wise feed-forward block.

  Plain: dense `wi` [E -> mlp] -> activation -> dense `wo` [mlp -> E].
  Gated (activation 'geglu', 'geglu_tanh' or 'swiglu', Shazeer 2020): activation(`wi_0` x) * `wi_1` x
  -> `wo`. `dropout_rate` drops the hidden activations before `wo`, as T5 does.
  """
  intermediate_size: int
  # A name from ACTIVATIONS or GATED_ACTIVATIONS, or a function.
  activation: str | Callable[[jax.Array], jax.Array] = gelu
  use_bias: bool = True
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_init
  out_init: Initializer | None = None  # the `wo` kernel's; default kernel_init

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """x [B, L, E] -> [B, L, E]; deterministic False (with dropout_rate > 0) needs a 'dropout' rng."""
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)

    def wi(name):
      return DenseGeneral((self.intermediate_size,), ('embed', 'mlp'), ('mlp',),
                          kernel_init=self.kernel_init, name=name, **kw)

    if self.activation in GATED_ACTIVATIONS:
      h = GATED_ACTIVATIONS[self.activation](wi('wi_0')(x)) * wi('wi_1')(x)  # [B, L, mlp]
    else:
      activation = self.activation
      if isinstance(activation, str):
        if activation not in ACTIVATIONS:
          raise UserError(f'unknown activation {activation!r}: use one of '
                          f'{sorted(ACTIVATIONS) + sorted(GATED_ACTIVATIONS)}')
        activation = ACTIVATIONS[activation]
      h = activation(wi('wi')(x))  # [B, L, mlp]
    h = nn.Dropout(rate=self.dropout_rate)(h, deterministic=deterministic)
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    return DenseGeneral((x.shape[-1],), ('mlp', 'embed'), ('embed',),
                        kernel_init=self.out_init or self.kernel_init, name='wo', **kw)(h)


def rms_norm(*, epsilon: float, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
             name: str | None = None) -> nn.RMSNorm:
  """RMSNorm (Zhang & Sennrich, 2019) over 'embed': x / sqrt(mean(x^2) + eps) * `scale`, scale = 1."""
  return nn.RMSNorm(
      epsilon=epsilon, dtype=dtype, param_dtype=param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ('embed',)), name=name)


def norm(kind: str, *, epsilon: float, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
         name: str | None = None) -> nn.Module:
  """'layernorm' or 'rmsnorm'."""
  factories = {'layernorm': layer_norm, 'rmsnorm': rms_norm}
  if kind not in factories:
    raise UserError(f'unknown norm {kind!r}: use layernorm or rmsnorm')
  return factories[kind](epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


def stack_blocks(params: dict, prefix: str, num_layers: int) -> dict:
  """Unboxed params holding blocks {prefix}0 .. {prefix}{n-1} -> the layout of `nn.scan` over them:
  one `layers` subtree whose numpy leaves have a leading [n] axis."""
  params = dict(params)
  blocks = [params.pop(f'{prefix}{i}') for i in range(num_layers)]
  params['layers'] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  return params


def unstack_blocks(params: dict, prefix: str, num_layers: int) -> dict:
  """The inverse of `stack_blocks`."""
  params = dict(params)
  stacked = params.pop('layers')
  for i in range(num_layers):
    params[f'{prefix}{i}'] = jax.tree.map(lambda x: x[i], stacked)
  return params
