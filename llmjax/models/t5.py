"""Encoder-decoder Transformers: T5 (Raffel et al., 2020) and the original Transformer (Vaswani et al., 2017).

T5 (the defaults, T5Config() is `t5-small` exactly as HF `T5ForConditionalGeneration` computes it):

  x = Dropout(shared[input_ids])
  for each encoder block:                       # pre-RMSNorm, no biases, no 1/sqrt(d) scaling
    x = x + Dropout(SelfAttention(norm(x), bias=relative_position_bias))
    x = x + Dropout(Mlp(norm(x)))               # Mlp: wi -> act -> Dropout -> wo
  encoded = Dropout(final_norm(x))
  y = Dropout(shared[decoder_input_ids])
  for each decoder block:
    y = y + Dropout(CausalSelfAttention(norm(y), bias=causal relative_position_bias))
    y = y + Dropout(CrossAttention(norm(y), encoded))
    y = y + Dropout(Mlp(norm(y)))
  y = Dropout(final_norm(y))
  logits = (y * d_model**-0.5) @ shared^T       # v1.0 (tied); v1.1: lm_head, no scaling

The relative position bias is computed once per stack, by block 0 (which owns its parameter, as in
HF), with the attention mask folded in (as HF adds it), and reused by every block of that stack; the
encoder's buckets are bidirectional, the decoder's causal. T5 v1.1 is feed_forward='gated-gelu' (tanh
GELU gate), tie_word_embeddings=False.

The original Transformer ("base", WMT en-de) is a matter of switches (see `transformer_base`):
position='sinusoidal', norm='layernorm', norm_position='post' (x = norm(x + Dropout(sublayer(x))), no
final norms), use_bias=True, scale_attention=True, scale_embeddings=True (embeddings * sqrt(d_model)),
tied embeddings without logit scaling.

Parameter tree (no `bias` leaves unless use_bias; LayerNorm adds `bias` to each norm):

  shared/embedding [vocab, E]
  encoder/block_{i}/self_attention_norm/scale [E]
  encoder/block_{i}/self_attention/{q, k, v}/kernel [E, heads, kv]   .../out/kernel [heads, kv, E]
  encoder/block_0/relative_attention_bias/rel_embedding [buckets, heads]   (position='relative')
  encoder/block_{i}/mlp_norm/scale            encoder/block_{i}/mlp/{wi | wi_0, wi_1}/kernel [E, F]
  encoder/block_{i}/mlp/wo/kernel [F, E]      encoder/final_norm/scale  (norm_position='pre')
  decoder/block_{i}/{self_attention, cross_attention, mlp}{, _norm}/...
  decoder/block_0/relative_attention_bias/rel_embedding      decoder/final_norm/scale
  lm_head/kernel [E, vocab]                   (untied only)

With `scan_layers` each stack's blocks are stacked instead, as {encoder, decoder}/layers/
{self_attention, mlp, ...}/... with a leading [num_layers] axis named 'layers', and the position bias
table moves up to {encoder, decoder}/relative_attention_bias/rel_embedding (the stack computes the
bias once and broadcasts it to the scanned blocks); `stack_layers` / `unstack_layers` convert between
the two layouts. `remat` rematerialises each block in the backward pass.

Cached decoding: `init` with decode=True on a [B, max_len] decoder dummy creates the decoder's 'cache'
(per-layer keys and values, stacked [num_layers, ...] with scan_layers; the stack's `cache_index` and
`cached_decoder_mask`); each `apply(..., method='decode', decode=True, mutable=['cache'])` appends its
tokens. Cross-attention keys are recomputed from `encoded` each step (correct, not the fastest).
"""

import dataclasses

import jax
import jax.numpy as jnp
import flax.linen as nn

from llmjax.errors import UserError
from llmjax.models import layers

# T5Config.feed_forward (HF feed_forward_proj) -> layers.Mlp activation.
FEED_FORWARD = {'relu': 'relu', 'gelu': 'gelu', 'gated-gelu': 'geglu_tanh', 'gated-silu': 'swiglu'}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Encoder-decoder architecture; the defaults are T5 v1.0 small (and HF `T5Config`'s defaults)."""
  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64  # per-head width; heads * d_kv need not equal d_model
  d_ff: int = 2048
  num_layers: int = 6  # encoder
  num_decoder_layers: int | None = None  # None = num_layers
  num_heads: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  feed_forward: str = 'relu'  # 'relu' (v1.0), 'gated-gelu' (v1.1), 'gelu', 'gated-silu'
  tie_word_embeddings: bool = True  # False: a separate lm_head (v1.1)
  # Multiply the decoder output by d_model**-0.5 before the head; None = tie_word_embeddings (T5
  # v1.0 scales its tied head, v1.1 does not).
  scale_decoder_outputs: bool | None = None
  layer_norm_eps: float = 1e-6
  dropout_rate: float = 0.1  # embeddings, attention probabilities, sublayer outputs, Mlp hidden
  initializer_factor: float = 1.0
  position: str = 'relative'  # or 'sinusoidal' (Vaswani et al.)
  max_position_embeddings: int = 512  # the sinusoidal table's length (position='sinusoidal' only)
  norm: str = 'rmsnorm'  # or 'layernorm'
  norm_position: str = 'pre'  # or 'post' (Vaswani et al.: no final norms)
  use_bias: bool = False  # biases in attention and Mlp projections
  scale_attention: bool = False  # 1/sqrt(d_kv) on attention logits (T5 folds it into q's init)
  scale_embeddings: bool = False  # token embeddings * sqrt(d_model) (Vaswani et al.)
  # Attention's kernel (`layers.ATTENTION_KERNELS`): 'dot_product' (any device) or 'cudnn_flash'
  # (cuDNN's flash attention: NVIDIA GPUs, bfloat16 compute, no attention dropout).
  attention_kernel: str = 'dot_product'
  # nn.scan over each stack's blocks: params stacked under {encoder, decoder}/layers (leading axis
  # 'layers'), compile time flat in depth.
  scan_layers: bool = False
  # Rematerialisation of each block in the backward pass: 'none', 'full' (save nothing), 'dots'
  # (save matmul outputs), 'dots_no_batch' (save only matmuls without batch dims, i.e. weights').
  remat: str = 'none'
  dtype: str = 'float32'  # compute
  param_dtype: str = 'float32'  # stored weights

  def __post_init__(self):
    choices = {'feed_forward': tuple(FEED_FORWARD), 'position': ('relative', 'sinusoidal'),
               'norm': ('rmsnorm', 'layernorm'), 'norm_position': ('pre', 'post'),
               'remat': tuple(layers.REMAT_POLICIES), 'attention_kernel': layers.ATTENTION_KERNELS}
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise UserError(f'T5 {field}={getattr(self, field)!r} is unknown: use one of {allowed}')
    for field in ('vocab_size', 'd_model', 'd_kv', 'd_ff', 'num_layers', 'decoder_layers',
                  'num_heads', 'relative_attention_num_buckets', 'relative_attention_max_distance'):
      if getattr(self, field) < 1:
        raise UserError(f'T5 {field}={getattr(self, field)} must be >= 1: pass a positive value')
    if self.position == 'relative' and self.relative_attention_num_buckets < 4:
      # Bidirectional buckets split in two, and each half again into exact and log-spaced bins.
      raise UserError(f'T5 relative_attention_num_buckets={self.relative_attention_num_buckets} '
                      f'must be >= 4: use 32 as T5 does')
    if self.position == 'sinusoidal' and self.d_model % 2:
      raise UserError(f'T5 d_model={self.d_model} must be even for sinusoidal positions: use an even '
                      f'd_model')

  @property
  def decoder_layers(self) -> int:
    return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

  @property
  def scales_decoder_outputs(self) -> bool:
    if self.scale_decoder_outputs is None:
      return self.tie_word_embeddings
    return self.scale_decoder_outputs


def t5_v1_1(**overrides) -> T5Config:
  """`google/t5-v1_1-small`'s architecture (gated-GELU, untied head, no logit scaling)."""
  kw = dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6, feed_forward='gated-gelu',
            tie_word_embeddings=False)
  return T5Config(**{**kw, **overrides})


def transformer_base(**overrides) -> T5Config:
  """The original Transformer base model of Vaswani et al. (2017), WMT'14 en-de.

  Post-LN with LayerNorm, ReLU, sinusoidal positions, biases, scaled dot-product attention, a shared
  source/target BPE vocabulary of 37000 tokens whose embedding is also the pre-softmax matrix, and
  embeddings multiplied by sqrt(d_model).
  """
  kw = dict(vocab_size=37000, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
            feed_forward='relu', tie_word_embeddings=True, scale_decoder_outputs=False,
            layer_norm_eps=1e-6, dropout_rate=0.1, position='sinusoidal', norm='layernorm',
            norm_position='post', use_bias=True, scale_attention=True, scale_embeddings=True)
  return T5Config(**{**kw, **overrides})


def _normal(std: float) -> layers.Initializer:
  return nn.initializers.normal(stddev=std)


def _relative_position_bias(cfg: T5Config, decoder: bool) -> layers.RelativePositionBias:
  """The stack's position bias module (in the caller's scope): bidirectional buckets in the encoder,
  causal in the decoder."""
  return layers.RelativePositionBias(
      cfg.num_heads, num_buckets=cfg.relative_attention_num_buckets,
      max_distance=cfg.relative_attention_max_distance, bidirectional=not decoder,
      embedding_init=_normal(cfg.initializer_factor * cfg.d_model ** -0.5),
      name='relative_attention_bias', **layers.dtypes(cfg))


class Block(nn.Module):
  """One encoder block (self-attention, Mlp) or decoder block (+ cross-attention after self-attention).

  Block 0 of a relative-position stack (`relative_bias`) computes the position bias; every block
  returns the bias it used, so the stack hands block 0's to the others. The flags of __call__ are
  positional so nn.remat can mark them static and nn.scan broadcast them; under nn.scan (`scanned`,
  where the stack passes the bias in) it returns (x, None), the carry and no per-layer output.
  """
  config: T5Config
  decoder: bool = False
  relative_bias: bool = False
  scanned: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, bias: jax.Array | None,
               query_index: jax.Array, key_index: jax.Array, encoded: jax.Array | None,
               cross_mask: jax.Array | None, deterministic: bool, decode: bool):
    """x [B, L, E], mask [B or 1, 1, L, L or max_len], encoded [B, Ls, E] -> (x [B, L, E], bias)."""
    cfg = self.config
    kw = layers.dtypes(cfg)
    f = cfg.initializer_factor
    if self.relative_bias:
      # [B, heads, L, L or max_len], the mask folded in: the blocks attend without a mask.
      bias = layers.masked_bias(
          _relative_position_bias(cfg, self.decoder)(query_index, key_index), mask)

    def sublayer(name, fn, x):
      norm = layers.norm(cfg.norm, epsilon=cfg.layer_norm_eps, name=f'{name}_norm', **kw)
      if cfg.norm_position == 'pre':
        h = fn(norm(x))
        x = x + nn.Dropout(rate=cfg.dropout_rate)(h, deterministic=deterministic)
      else:
        h = fn(x)
        x = norm(x + nn.Dropout(rate=cfg.dropout_rate)(h, deterministic=deterministic))
      return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    def attention(name):
      # HF T5's init: q absorbs the 1/sqrt(d_kv) that T5 leaves out of the logits.
      return layers.MultiHeadAttention(
          num_heads=cfg.num_heads, head_dim=cfg.d_kv, dropout_rate=cfg.dropout_rate,
          use_bias=cfg.use_bias, scale_logits=cfg.scale_attention,
          kernel_init=_normal(f * cfg.d_model ** -0.5),
          query_init=_normal(f * (cfg.d_model * cfg.d_kv) ** -0.5),
          out_init=_normal(f * (cfg.num_heads * cfg.d_kv) ** -0.5),
          attention_kernel=cfg.attention_kernel, name=name, **kw)

    x = sublayer('self_attention', lambda h: attention('self_attention')(
        h, h, mask if bias is None else None, bias=bias, deterministic=deterministic,
        decode=decode), x)
    if self.decoder:
      x = sublayer('cross_attention', lambda h: attention('cross_attention')(
          h, encoded, cross_mask, deterministic=deterministic), x)
    mlp = layers.Mlp(cfg.d_ff, activation=FEED_FORWARD[cfg.feed_forward], use_bias=cfg.use_bias,
                     dropout_rate=cfg.dropout_rate, kernel_init=_normal(f * cfg.d_model ** -0.5),
                     out_init=_normal(f * cfg.d_ff ** -0.5), name='mlp', **kw)
    x = sublayer('mlp', lambda h: mlp(h, deterministic=deterministic), x)
    return (x, None) if self.scanned else (x, bias)


class Stack(nn.Module):
  """The encoder (decoder=False) or decoder blocks, from token embeddings to the final norm.

  The decoder stack holds the decoding cache's `cache_index` and `cached_decoder_mask`.
  """
  config: T5Config
  decoder: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, token_mask: jax.Array | None, encoded: jax.Array | None,
               cross_mask: jax.Array | None, deterministic: bool, decode: bool,
               segment_ids: jax.Array | None = None,
               positions: jax.Array | None = None) -> jax.Array:
    """x [B, L, E] token embeddings, token_mask [B, L] (1 = real; None = all real) -> [B, L, E].

    Packed rows pass segment_ids [B, L] (0 = padding) instead of token_mask, and positions [B, L]
    that restart in every segment. Tokens attend only within their segment; the relative bias,
    computed from places in the row, is the same as from positions within a segment.
    """
    cfg = self.config
    kw = layers.dtypes(cfg)
    batch, length = x.shape[:2]
    queries = jnp.ones((batch, length), bool)
    if self.decoder and decode and self.has_variable('cache', 'cache_index'):
      # Each query's cache slot (cache_index + i) is its position: for the relative bias and the
      # sinusoid; the attention layers add the causal mask over filled slots.
      if token_mask is None:
        token_mask = queries
      cached = self.variable('cache', 'cached_decoder_mask', jnp.zeros, (batch, 0), jnp.int32)
      index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
      cached.value = jax.lax.dynamic_update_slice(cached.value, token_mask.astype(jnp.int32),
                                                  (0, index.value))
      query_index = index.value + jnp.arange(length)
      key_index = jnp.arange(cached.value.shape[1])
      mask = layers.make_attention_mask(queries, cached.value)
      index.value = index.value + length
    else:
      if cfg.position == 'sinusoidal' and length > cfg.max_position_embeddings:
        raise UserError(f'sequence length {length} exceeds max_position_embeddings='
                        f'{cfg.max_position_embeddings}: use at most that many tokens')
      if self.decoder and decode:  # the init pass: this input's length is the cache's
        self.variable('cache', 'cached_decoder_mask', jnp.zeros, (batch, length), jnp.int32)
        self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
      query_index = key_index = jnp.arange(length)
      if segment_ids is not None:
        # Padding is segment 0, so the segment mask keeps real tokens from it; padded queries see
        # the other padding, never an empty row.
        mask = layers.make_attention_mask(causal=self.decoder, query_segment_ids=segment_ids,
                                          key_segment_ids=segment_ids)
      else:
        # Only keys are masked, as HF does: padded queries still see real tokens, never NaN.
        mask = (None if token_mask is None and not self.decoder else
                layers.make_attention_mask(queries, token_mask, causal=self.decoder,
                                           query_index=query_index, key_index=key_index))

    if cfg.scale_embeddings:
      x = x * jnp.sqrt(cfg.d_model).astype(x.dtype)
    if cfg.position == 'sinusoidal':
      table = layers.sinusoidal_positions(cfg.max_position_embeddings, cfg.d_model)
      index = query_index[None] if positions is None else positions
      x = x + table[index].astype(x.dtype)
    x = nn.Dropout(rate=cfg.dropout_rate)(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    bias = None
    num_layers = cfg.decoder_layers if self.decoder else cfg.num_layers
    block = Block
    if cfg.remat != 'none':
      # deterministic and decode (args 8 and 9, counting the module) are Python bools.
      block = nn.remat(block, policy=layers.REMAT_POLICIES[cfg.remat], static_argnums=(8, 9),
                       prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      # Scanned blocks all have the same params, so the bias block 0 owns in the unscanned (HF)
      # layout is computed here, once, and broadcast to every block.
      if cfg.position == 'relative':
        bias = layers.masked_bias(
            _relative_position_bias(cfg, self.decoder)(query_index, key_index), mask)
      stack = nn.scan(block, variable_axes={'params': 0, 'cache': 0},
                      split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * 8, length=num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = stack(cfg, decoder=self.decoder, scanned=True, name='layers')(
          x, mask, bias, query_index, key_index, encoded, cross_mask, deterministic, decode)
    else:
      for i in range(num_layers):
        x, bias = block(cfg, decoder=self.decoder,
                        relative_bias=i == 0 and cfg.position == 'relative', name=f'block_{i}')(
                            x, mask, bias, query_index, key_index, encoded, cross_mask,
                            deterministic, decode)
    if cfg.norm_position == 'pre':
      x = layers.norm(cfg.norm, epsilon=cfg.layer_norm_eps, name='final_norm', **kw)(x)
      x = nn.Dropout(rate=cfg.dropout_rate)(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))


class T5(nn.Module):
  """The encoder-decoder language model (HF `T5ForConditionalGeneration` with the default config)."""
  config: T5Config

  def setup(self):
    cfg = self.config
    kw = layers.dtypes(cfg)
    # HF T5 initialises the shared embedding N(0, 1); with sqrt(d_model) scaling the original
    # Transformer's N(0, d_model^-1) keeps the scaled embeddings at unit variance.
    std = cfg.d_model ** -0.5 if cfg.scale_embeddings else 1.0
    self.shared = layers.embed(cfg.vocab_size, cfg.d_model, ('vocab', 'embed'),
                               embedding_init=_normal(cfg.initializer_factor * std), **kw)
    self.encoder = Stack(cfg, decoder=False)
    self.decoder = Stack(cfg, decoder=True)
    if not cfg.tie_word_embeddings:
      self.lm_head = layers.DenseGeneral((cfg.vocab_size,), ('embed', 'vocab'), ('vocab',),
                                         use_bias=False,
                                         kernel_init=_normal(cfg.initializer_factor), **kw)

  def encode(self, input_ids: jax.Array, input_mask: jax.Array | None = None, *,
             segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
             deterministic: bool) -> jax.Array:
    """input_ids [B, Ls] int, input_mask [B, Ls] (1 = real, None = all real) -> encoded [B, Ls, E].

    Packed rows give segment_ids and positions [B, Ls] instead of input_mask (see `Stack`).
    """
    return self.encoder(self.shared(input_ids), input_mask, None, None, deterministic, False,
                        segment_ids, positions)

  def decode(self, decoder_input_ids: jax.Array, encoded: jax.Array,
             input_mask: jax.Array | None = None, *, decoder_mask: jax.Array | None = None,
             segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
             input_segment_ids: jax.Array | None = None, deterministic: bool,
             decode: bool = False) -> jax.Array:
    """Next-token logits from the decoder.

    Args:
      decoder_input_ids: [B, L] int, the targets shifted right (T5 starts with pad id 0).
      encoded: [B, Ls, E] from `encode`.
      input_mask: [B, Ls], the encoder's padding mask (1 = real); None = all real.
      decoder_mask: [B, L], decoder padding (1 = real); None = all real.
      segment_ids, positions: [B, L] of packed decoder rows, with input_segment_ids [B, Ls] of the
        encoder rows: each target segment attends to the input segment of the same id only.
      deterministic: True disables dropout; False needs a 'dropout' rng.
      decode: cached decoding (see the module docstring): the tokens are appended to the cache.

    Returns:
      float32 logits [B, L, vocab].
    """
    cfg = self.config
    batch, length = decoder_input_ids.shape
    if segment_ids is not None:
      cross_mask = layers.make_attention_mask(query_segment_ids=segment_ids,
                                              key_segment_ids=input_segment_ids)
    else:
      cross_mask = None if input_mask is None else layers.make_attention_mask(
          jnp.ones((batch, length), bool), input_mask)
    y = self.decoder(self.shared(decoder_input_ids), decoder_mask, encoded, cross_mask,
                     deterministic, decode, segment_ids, positions)
    if cfg.scales_decoder_outputs:
      y = y * cfg.d_model ** -0.5
    if cfg.tie_word_embeddings:
      logits = layers.unembed(*nn.dtypes.promote_dtype(y, self.shared.embedding,
                                                        dtype=self.shared.dtype))
    else:
      logits = self.lm_head(y)
    logits = nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))
    # float32 so the loss and sampling never run in bfloat16.
    return logits.astype(jnp.float32)

  def __call__(self, input_ids: jax.Array, decoder_input_ids: jax.Array, *,
               input_mask: jax.Array | None = None, decoder_mask: jax.Array | None = None,
               input_segment_ids: jax.Array | None = None,
               input_positions: jax.Array | None = None,
               decoder_segment_ids: jax.Array | None = None,
               decoder_positions: jax.Array | None = None,
               deterministic: bool, decode: bool = False) -> jax.Array:
    """encode then decode: input_ids [B, Ls], decoder_input_ids [B, L] -> float32 logits [B, L, vocab].

    Padded rows give the masks; packed rows give segment ids and positions for both sides instead.
    """
    encoded = self.encode(input_ids, input_mask, segment_ids=input_segment_ids,
                          positions=input_positions, deterministic=deterministic)
    return self.decode(decoder_input_ids, encoded, input_mask, decoder_mask=decoder_mask,
                       segment_ids=decoder_segment_ids, positions=decoder_positions,
                       input_segment_ids=input_segment_ids, deterministic=deterministic,
                       decode=decode)


def _stacks(config: T5Config) -> tuple[tuple[str, int], ...]:
  return ('encoder', config.num_layers), ('decoder', config.decoder_layers)


def stack_layers(params: dict, config: T5Config) -> dict:
  """Unboxed params of `T5(config)` with block_0..block_{n-1} -> the `scan_layers` layout: each
  stack's blocks as one `layers` subtree of numpy leaves [n, ...], and block 0's position bias
  table as the stack's `relative_attention_bias`."""
  params = dict(params)
  for name, num_layers in _stacks(config):
    stack = dict(params[name])
    first = dict(stack['block_0'])
    if 'relative_attention_bias' in first:
      stack['relative_attention_bias'] = first.pop('relative_attention_bias')
      stack['block_0'] = first
    params[name] = layers.stack_blocks(stack, 'block_', num_layers)
  return params


def unstack_layers(params: dict, config: T5Config) -> dict:
  """The inverse of `stack_layers` (unboxed params)."""
  params = dict(params)
  for name, num_layers in _stacks(config):
    stack = layers.unstack_blocks(params[name], 'block_', num_layers)
    if 'relative_attention_bias' in stack:
      stack['block_0'] = {**stack['block_0'],
                          'relative_attention_bias': stack.pop('relative_attention_bias')}
    params[name] = stack
  return params
