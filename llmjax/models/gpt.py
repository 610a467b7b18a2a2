"""Decoder-only Transformer language models: GPT-2 (Radford et al., 2019) and its modern variants.

A pre-LayerNorm causal decoder:

  x = Dropout(wte[ids] + wpe[positions])      # rotary: no wpe; sinusoidal: a fixed table
  for each block h_i:
    x = x + Dropout(CausalSelfAttention(ln_1(x)))
    x = x + Dropout(Mlp(ln_2(x)))
  logits = ln_f(x) @ wte^T                    # tied head (`lm_head` when untied)

GPTConfig() is GPT-2 small exactly as HF `GPT2LMHeadModel` computes it (`hf_gpt2` converts weights).
A LLaMA-style model is a matter of switches: position='rotary', norm='rmsnorm', activation='swiglu',
num_kv_heads < num_heads, tie_embeddings=False, use_bias=False.

Packed sequences: `segment_ids` [B, L] keep documents sharing a row from attending to each other, and
positions restart at 0 in each segment. Segment id 0 marks padding by convention, but it is just another
segment: padding attends only to padding, and its outputs are ignored.

Parameter tree:

  wte/embedding [vocab, E]            wpe/embedding [max_position_embeddings, E] (learned positions)
  h_{i}/ln_1/{scale, bias}            h_{i}/attn/{q, k, v}/{kernel [E, heads, kv], bias [heads, kv]}
  h_{i}/attn/out/{kernel [heads, kv, E], bias [E]}
  h_{i}/ln_2/{scale, bias}            h_{i}/mlp/{wi | wi_0, wi_1, wo}/{kernel, bias}
  ln_f/{scale, bias}                  lm_head/kernel [E, vocab] (untied only)

(no `bias` anywhere with use_bias=False; RMSNorm has only `scale`.) With `scan_layers`, the blocks'
params are stacked as layers/{ln_1, attn, ...} with a leading [num_layers] axis named 'layers';
`stack_layers` / `unstack_layers` convert between the two layouts.
"""

import dataclasses

import jax
import jax.numpy as jnp
import flax.linen as nn

from llmjax.errors import UserError
from llmjax.models import layers


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  """Decoder architecture; the defaults are GPT-2 small (and HF's `GPT2Config` defaults)."""
  vocab_size: int = 50257
  max_position_embeddings: int = 1024  # learned/sinusoidal table size; the longest decode too
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  num_kv_heads: int | None = None  # None = num_heads; fewer = grouped-query attention
  intermediate_size: int = 3072
  activation: str = 'gelu_new'  # relu, gelu, gelu_new, silu, geglu, swiglu
  norm: str = 'layernorm'  # or 'rmsnorm'
  position: str = 'learned'  # or 'rotary', 'sinusoidal'
  rope_theta: float = 10_000.
  tie_embeddings: bool = True
  layer_norm_eps: float = 1e-5
  embd_dropout: float = 0.1
  attn_dropout: float = 0.1
  resid_dropout: float = 0.1
  initializer_range: float = 0.02
  use_bias: bool = True
  # Causal self-attention in blocks of this many queries, each attending only to the keys up to its
  # end (`layers.causal_blocks`); 0 computes the whole square at once.
  attention_block: int = 128
  # Attention's kernel (`layers.ATTENTION_KERNELS`): 'dot_product' (any device) or 'cudnn_flash'
  # (cuDNN's flash attention: NVIDIA GPUs, bfloat16 compute, no attention dropout).
  attention_kernel: str = 'dot_product'
  # nn.scan over the blocks: params stacked under `layers` (leading axis 'layers'), compile time flat
  # in depth.
  scan_layers: bool = False
  # Rematerialisation of each block in the backward pass: 'none', 'full' (save nothing), 'dots'
  # (save matmul outputs), 'dots_no_batch' (save only matmuls without batch dims, i.e. weights').
  remat: str = 'none'
  dtype: str = 'float32'  # compute
  param_dtype: str = 'float32'  # stored weights

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise UserError(f'GPT hidden_size={self.hidden_size} is not divisible by '
                      f'num_heads={self.num_heads}: choose num_heads that divides hidden_size')
    if self.num_heads % self.kv_heads:
      raise UserError(f'GPT num_heads={self.num_heads} is not a multiple of '
                      f'num_kv_heads={self.num_kv_heads}: choose num_kv_heads dividing num_heads')
    if self.attention_block < 0:
      raise UserError(f'GPT attention_block={self.attention_block} is negative: use 0 (the whole '
                      f'square at once) or a number of queries per block')
    choices = {'position': ('learned', 'rotary', 'sinusoidal'), 'norm': ('layernorm', 'rmsnorm'),
               'activation': tuple(layers.ACTIVATIONS) + tuple(layers.GATED_ACTIVATIONS),
               'remat': tuple(layers.REMAT_POLICIES), 'attention_kernel': layers.ATTENTION_KERNELS}
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise UserError(f'GPT {field}={getattr(self, field)!r} is unknown: use one of {allowed}')

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads


def _init(config: GPTConfig) -> layers.Initializer:
  """N(0, initializer_range^2) for kernels and embeddings, as HF; biases are 0, norm scales 1."""
  return nn.initializers.normal(stddev=config.initializer_range)


def _residual_init(config: GPTConfig) -> layers.Initializer:
  # GPT-2 (and HF's init): the projections that write into the residual stream (attn `out`, mlp `wo`)
  # get std / sqrt(2 * layers), so the stream's variance does not grow with depth.
  return nn.initializers.normal(stddev=config.initializer_range / (2 * config.num_layers) ** 0.5)


class Block(nn.Module):
  """One pre-LN decoder block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

  The flags are positional so nn.remat can mark them static and nn.scan broadcast them; under
  nn.scan (`scanned`) it returns (x, None), the carry and no per-layer output.
  """
  config: GPTConfig
  scanned: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, positions: jax.Array,
               deterministic: bool, decode: bool):
    """x [B, L, E], mask [B or 1, 1, L, L or max_len] bool, positions [B, L] -> [B, L, E]."""
    cfg = self.config
    kw = layers.dtypes(cfg)
    norm = lambda name: layers.norm(cfg.norm, epsilon=cfg.layer_norm_eps, name=name, **kw)
    h = norm('ln_1')(x)
    h = layers.MultiHeadAttention(
        num_heads=cfg.num_heads, head_dim=cfg.head_dim, num_kv_heads=cfg.kv_heads,
        dropout_rate=cfg.attn_dropout, use_bias=cfg.use_bias, rotary=cfg.position == 'rotary',
        rope_theta=cfg.rope_theta, kernel_init=_init(cfg), out_init=_residual_init(cfg),
        causal_block=cfg.attention_block, attention_kernel=cfg.attention_kernel, name='attn',
        **kw)(
            h, h, mask, positions=positions, deterministic=deterministic, decode=decode)
    x = x + nn.Dropout(rate=cfg.resid_dropout)(h, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    h = layers.Mlp(cfg.intermediate_size, activation=cfg.activation, use_bias=cfg.use_bias,
                   kernel_init=_init(cfg), out_init=_residual_init(cfg), name='mlp',
                   **kw)(norm('ln_2')(x))
    x = x + nn.Dropout(rate=cfg.resid_dropout)(h, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    return (x, None) if self.scanned else x


class GPT(nn.Module):
  """The decoder-only language model (HF `GPT2LMHeadModel` with the default config)."""
  config: GPTConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array, *, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, deterministic: bool,
               decode: bool = False, return_hidden: bool = False):
    """Next-token logits.

    Args:
      input_ids: [B, L] int token ids.
      positions: [B, L] int; default 0..L-1, restarting in each segment (in decoding: the cache
        slot, cache_index + 0..L-1).
      segment_ids: [B, L] int; tokens attend only within their own segment (packing, padding = 0).
      deterministic: True disables dropout; False needs a 'dropout' rng.
      decode: autoregressive decoding over the 'cache' collection: an `init` with decode=True on a
        [B, max_len] dummy creates the cache; each `apply(..., decode=True, mutable=['cache'])`
        appends its L tokens and attends to all tokens appended so far.
      return_hidden: return (hidden, head) instead of the logits: the final states after ln_f
        [B, L, E] and the output projection's weight (see `lm_logits`), for a loss that projects
        the states a chunk at a time (`llmjax.tasks.losses.chunked_cross_entropy`).

    Returns:
      float32 logits [B, L, vocab], or (hidden, head) with `return_hidden`.
    """
    cfg = self.config
    kw = layers.dtypes(cfg)
    batch, length = input_ids.shape
    if segment_ids is None:
      segment_ids = jnp.ones_like(input_ids)

    if decode and self.has_variable('cache', 'cached_segment_ids'):
      # The segment ids of every cache slot, so later tokens see only their own segment's prefix;
      # the layers add the causal mask over filled slots.
      cached = self.variable('cache', 'cached_segment_ids', jnp.zeros, (batch, 0), jnp.int32)
      index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
      cached.value = jax.lax.dynamic_update_slice(cached.value, segment_ids.astype(jnp.int32),
                                                  (0, index.value))
      mask = layers.make_attention_mask(query_segment_ids=segment_ids,
                                        key_segment_ids=cached.value)
      if positions is None:
        positions = jnp.broadcast_to(index.value + jnp.arange(length), (batch, length))
      index.value = index.value + length
    else:
      if decode:  # the init pass: create the cache with this input's length as the maximum
        self.variable('cache', 'cached_segment_ids', jnp.zeros, (batch, length), jnp.int32)
        self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
      mask = layers.make_attention_mask(causal=True, query_segment_ids=segment_ids,
                                        key_segment_ids=segment_ids)
      if positions is None:
        positions = layers.positions_from_segment_ids(segment_ids)

    wte = layers.embed(cfg.vocab_size, cfg.hidden_size, ('vocab', 'embed'), embedding_init=_init(cfg),
                       name='wte', **kw)
    x = wte(input_ids)  # [B, L, E]
    if cfg.position == 'learned':
      if not decode and length > cfg.max_position_embeddings:
        # Out-of-range positions would silently read garbage; in decoding the cache bounds them.
        raise UserError(f'sequence length {length} exceeds max_position_embeddings='
                        f'{cfg.max_position_embeddings}: use at most that many tokens')
      x += layers.broadcast_to(
          layers.embed(cfg.max_position_embeddings, cfg.hidden_size, (None, 'embed'),
                       embedding_init=_init(cfg), name='wpe', **kw)(positions), x.shape)
    elif cfg.position == 'sinusoidal':
      table = layers.sinusoidal_positions(cfg.max_position_embeddings, cfg.hidden_size)
      x += table[positions].astype(x.dtype)
    x = nn.Dropout(rate=cfg.embd_dropout)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    block = Block
    if cfg.remat != 'none':
      # deterministic and decode (args 4 and 5, counting the module) are Python bools.
      block = nn.remat(block, policy=layers.REMAT_POLICIES[cfg.remat], static_argnums=(4, 5),
                       prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={'params': 0, 'cache': 0},
                      split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * 4, length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = stack(cfg, scanned=True, name='layers')(x, mask, positions, deterministic, decode)
    else:
      for i in range(cfg.num_layers):
        x = block(cfg, name=f'h_{i}')(x, mask, positions, deterministic, decode)
    x = layers.norm(cfg.norm, epsilon=cfg.layer_norm_eps, name='ln_f', **kw)(x)

    if cfg.tie_embeddings:
      head = wte.embedding  # [vocab, E]
    else:
      head = _Kernel((cfg.hidden_size, cfg.vocab_size), ('embed', 'vocab'), _init(cfg),
                     kw['param_dtype'], name='lm_head')()
    if return_hidden:
      return x, head
    return nn.with_logical_constraint(lm_logits(cfg, head, x), ('batch', 'length', 'vocab'))


class _Kernel(nn.Module):
  """The untied output projection's weight alone, so it keeps its name `lm_head/kernel`."""
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  kernel_init: layers.Initializer
  param_dtype: layers.Dtype

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param('kernel', nn.with_logical_partitioning(self.kernel_init, self.axes),
                      self.shape, self.param_dtype)


def lm_logits(config: GPTConfig, head: jax.Array, x: jax.Array) -> jax.Array:
  """The output projection: states x [..., E] -> float32 logits [..., vocab].

  head: the tied `wte` embedding [vocab, E] (Press & Wolf, 2017), or the untied `lm_head` kernel
  [E, vocab]. Computed in the config's compute dtype; float32 out so the loss and sampling never run
  in bfloat16.
  """
  x, head = nn.dtypes.promote_dtype(x, head, dtype=layers.dtype(config.dtype))
  logits = layers.unembed(x, head) if config.tie_embeddings else layers.project(x, head, 1)
  return logits.astype(jnp.float32)


def stack_layers(params: dict, num_layers: int) -> dict:
  """Unboxed params with h_0..h_{n-1} -> the `scan_layers` layout: one `layers` subtree of numpy
  leaves [n, ...]."""
  return layers.stack_blocks(params, 'h_', num_layers)


def unstack_layers(params: dict, num_layers: int) -> dict:
  """The inverse of `stack_layers` (unboxed params)."""
  return layers.unstack_blocks(params, 'h_', num_layers)
