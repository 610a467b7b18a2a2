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
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import flax.linen as nn

from llmjax.errors import UserError

Dtype = Any
Initializer = Callable[..., jax.Array]

# N(0, 0.02^2), the BERT / GPT-2 initialisation; models pass their own `initializer_range`.
default_init = nn.initializers.normal(stddev=0.02)


def dtype(name: str | Dtype) -> jnp.dtype:
  """'float32', 'bfloat16', ... (or a dtype) -> the jnp dtype."""
  try:
    return jnp.dtype(name)
  except TypeError:
    raise UserError(f'unknown dtype {name!r}: use float32 or bfloat16') from None


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, Hendrycks & Gimpel (2016): what BERT and HF's hidden_act='gelu' use."""
  return jax.nn.gelu(x, approximate=False)


def make_attention_mask(query_mask: jax.Array, key_mask: jax.Array) -> jax.Array:
  """Pairwise attention mask from per-token masks (1 or True = real token).

  Args:
    query_mask: [B, Lq] int or bool.
    key_mask: [B, Lk] int or bool.

  Returns:
    [B, 1, Lq, Lk] bool, True where query i may attend to key j; the size-1 axis broadcasts over heads.
  """
  query_mask = query_mask.astype(bool)
  key_mask = key_mask.astype(bool)
  return query_mask[:, None, :, None] & key_mask[:, None, None, :]


def dense(features: int, kernel_axes: tuple[str | None, str | None], *, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32, kernel_init: Initializer = default_init,
          name: str | None = None) -> nn.Dense:
  """A Dense layer: kernel [in, out] named `kernel_axes`, zero-initialised bias [out] named by out."""
  return nn.Dense(
      features, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(kernel_init, kernel_axes),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), kernel_axes[-1:]),
      name=name)


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


class DenseGeneral(nn.Module):
  """A dense layer contracting the last `contract` input axes into the axes `features`.

  Flax's nn.DenseGeneral initialises a flat 2-D kernel and reshapes it, so under a mesh its logical
  constraint meets the flat shape and fails; this one creates the kernel in its final shape.
  """
  features: tuple[int, ...]
  kernel_axes: tuple[str | None, ...]
  bias_axes: tuple[str | None, ...]
  contract: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = x.shape[x.ndim - self.contract:] + tuple(self.features)
    kernel = self.param('kernel', nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                        shape, self.param_dtype)
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           self.bias_axes),
                      tuple(self.features), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    contracted = (tuple(range(x.ndim - self.contract, x.ndim)), tuple(range(self.contract)))
    return jax.lax.dot_general(x, kernel, (contracted, ((), ()))) + bias


class MultiHeadAttention(nn.Module):
  """Multi-head scaled dot-product attention (Vaswani et al., 2017).

  q, k and v are projected to [B, L, heads, kv]; softmax(q k^T / sqrt(kv)) weights the values per head,
  with dropout on the attention probabilities as in BERT; the heads are then projected back to the
  input width. Self-attention passes the same array as `inputs_q` and `inputs_kv`.

  Parameters: `q`, `k`, `v` (kernel ('embed', 'heads', 'kv'), bias ('heads', 'kv')) and
  `out` (kernel ('heads', 'kv', 'embed'), bias ('embed',)).
  """
  num_heads: int
  head_dim: int | None = None  # default: input width // num_heads
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_init

  @nn.compact
  def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, mask: jax.Array | None = None, *,
               deterministic: bool) -> jax.Array:
    """inputs_q [B, Lq, E], inputs_kv [B, Lk, E], mask [B, 1 or heads, Lq, Lk] bool -> [B, Lq, E]."""
    features = inputs_q.shape[-1]
    head_dim = self.head_dim or features // self.num_heads

    def projection(name):
      return DenseGeneral((self.num_heads, head_dim), ('embed', 'heads', 'kv'), ('heads', 'kv'),
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          kernel_init=self.kernel_init, name=name)

    qkv_axes = ('batch', 'length', 'heads', 'kv')
    q = nn.with_logical_constraint(projection('q')(inputs_q), qkv_axes)  # [B, Lq, heads, kv]
    k = nn.with_logical_constraint(projection('k')(inputs_kv), qkv_axes)  # [B, Lk, heads, kv]
    v = nn.with_logical_constraint(projection('v')(inputs_kv), qkv_axes)  # [B, Lk, heads, kv]

    # Scaling q rather than the scores costs Lq*kv instead of Lq*Lk multiplies per head.
    q = q / jnp.sqrt(head_dim).astype(q.dtype)
    scores = jnp.einsum('bqhd,bkhd->bhqk', q, k)  # [B, heads, Lq, Lk]
    # Softmax in float32: in bfloat16 the exponentials of a long row lose the small probabilities.
    scores = scores.astype(jnp.float32)
    if mask is not None:
      # The most negative finite float, as HF uses: exp underflows to exactly 0, and a row with every
      # key masked (a padded query) becomes uniform instead of NaN.
      scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    probs = nn.Dropout(rate=self.dropout_rate)(probs, deterministic=deterministic)

    x = jnp.einsum('bhqk,bkhd->bqhd', probs, v)  # [B, Lq, heads, kv]
    x = nn.with_logical_constraint(x, qkv_axes)
    return DenseGeneral((features,), ('heads', 'kv', 'embed'), ('embed',), contract=2,
                        dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=self.kernel_init, name='out')(x)  # [B, Lq, E]


class Mlp(nn.Module):
  """Position-wise feed-forward block: dense `wi` [E -> mlp] -> activation -> dense `wo` [mlp -> E]."""
  intermediate_size: int
  activation: Callable[[jax.Array], jax.Array] = gelu
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_init

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, L, E] -> [B, L, E]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init)
    h = dense(self.intermediate_size, ('embed', 'mlp'), name='wi', **kw)(x)  # [B, L, mlp]
    h = nn.with_logical_constraint(self.activation(h), ('batch', 'length', 'mlp'))
    return dense(x.shape[-1], ('mlp', 'embed'), name='wo', **kw)(h)
