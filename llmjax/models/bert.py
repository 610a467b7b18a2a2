"""BERT (Devlin et al., 2019), computing exactly what Hugging Face `BertModel` computes.

A post-LayerNorm Transformer encoder:

  x = LN(word_emb[ids] + position_emb[0..L-1] + token_type_emb[types]);  x = Dropout(x)
  for each layer:
    x = LN(x + Dropout(SelfAttention(x)))    # attention probabilities also see dropout
    x = LN(x + Dropout(Mlp(x)))              # Mlp: dense -> exact GELU -> dense
  pooled = tanh(Dense(x[:, 0]))              # the [CLS] token

Packed rows (several pieces of text in one row, as masked-LM pre-training reads them) pass
`segment_ids`: attention then stays within a segment and position ids restart at 0 in each.

`BertForMaskedLM` (HF `BertForMaskedLM`, which has no pooler) predicts tokens from every position:

  logits = LN(GELU(Dense(x))) @ word_emb^T + bias     # decoder tied to the input embeddings

Parameter tree of `BertForSequenceClassification` (`hf_bert` maps it to and from HF tensor names):

  bert/embeddings/{word_embeddings, position_embeddings, token_type_embeddings}/embedding
  bert/embeddings/ln/{scale, bias}
  bert/layer_{i}/attention/{q, k, v, out}/{kernel, bias}
  bert/layer_{i}/attention_ln/{scale, bias}
  bert/layer_{i}/mlp/{wi, wo}/{kernel, bias}
  bert/layer_{i}/mlp_ln/{scale, bias}
  bert/pooler/{kernel, bias}
  classifier/{kernel, bias}

and of `BertForMaskedLM`: the same `bert/...` without `bert/pooler`, plus

  predictions/transform/{kernel, bias}
  predictions/transform_ln/{scale, bias}
  predictions/bias                           # [vocab]; the decoder weight is bert/.../word_embeddings

With `scan_layers`, the layers' params are stacked instead as bert/layers/{attention, attention_ln,
mlp, mlp_ln}/... with a leading [num_layers] axis named 'layers'; `stack_layers` / `unstack_layers`
convert between the two layouts. `remat` rematerialises each layer in the backward pass.
"""

import dataclasses

import jax
import jax.numpy as jnp
import flax.linen as nn

from llmjax.errors import UserError
from llmjax.models import layers


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """BERT architecture; the defaults are BERT-base (and HF's `BertConfig` defaults)."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  initializer_range: float = 0.02
  # Attention's kernel (`layers.ATTENTION_KERNELS`): 'dot_product' (any device) or 'cudnn_flash'
  # (cuDNN's flash attention: NVIDIA GPUs, bfloat16 compute, no attention dropout).
  attention_kernel: str = 'dot_product'
  # nn.scan over the layers: params stacked under bert/layers (leading axis 'layers'), compile time
  # flat in depth.
  scan_layers: bool = False
  # Rematerialisation of each layer in the backward pass: 'none', 'full' (save nothing), 'dots'
  # (save matmul outputs), 'dots_no_batch' (save only matmuls without batch dims, i.e. weights').
  remat: str = 'none'
  dtype: str = 'float32'  # compute
  param_dtype: str = 'float32'  # stored weights

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise UserError(f'BERT hidden_size={self.hidden_size} is not divisible by '
                      f'num_heads={self.num_heads}: choose num_heads that divides hidden_size')
    choices = {'remat': tuple(layers.REMAT_POLICIES), 'attention_kernel': layers.ATTENTION_KERNELS}
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise UserError(f'BERT {field}={getattr(self, field)!r} is unknown: use one of {allowed}')

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads


def _init(config: BertConfig) -> layers.Initializer:
  """HF's init for kernels and embeddings, N(0, initializer_range^2); biases are 0, LN scales 1."""
  return nn.initializers.normal(stddev=config.initializer_range)


class BertEmbeddings(nn.Module):
  """Sum of word, position and token-type embeddings, then LayerNorm and dropout."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array,
               positions: jax.Array | None = None, *, deterministic: bool) -> jax.Array:
    """input_ids, token_type_ids [B, L] int, positions [B, L] int (default 0..L-1) -> [B, L, H]."""
    cfg = self.config
    length = input_ids.shape[1]
    if length > cfg.max_position_embeddings:
      # Out-of-range positions would silently read NaN, so refuse them here, where the shape is static.
      raise UserError(f'sequence length {length} exceeds BERT max_position_embeddings='
                      f'{cfg.max_position_embeddings}: truncate inputs to at most that many tokens')
    kw = dict(embedding_init=_init(cfg), **layers.dtypes(cfg))
    h = cfg.hidden_size
    x = layers.embed(cfg.vocab_size, h, ('vocab', 'embed'), name='word_embeddings', **kw)(input_ids)
    if positions is None:
      positions = jnp.arange(length)[None, :]
    x += layers.broadcast_to(layers.embed(cfg.max_position_embeddings, h, (None, 'embed'),
                                          name='position_embeddings', **kw)(positions), x.shape)
    x += layers.embed(cfg.type_vocab_size, h, (None, 'embed'), name='token_type_embeddings',
                      **kw)(token_type_ids)
    x = layers.layer_norm(epsilon=cfg.layer_norm_eps, name='ln', **layers.dtypes(cfg))(x)
    x = nn.Dropout(rate=cfg.hidden_dropout)(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ('batch', 'length', 'embed'))  # [B, L, H]


class BertLayer(nn.Module):
  """One post-LN encoder layer: self-attention and MLP, each followed by dropout, residual and LN.

  `deterministic` is positional so nn.remat can mark it static and nn.scan broadcast it; under
  nn.scan (`scanned`) it returns (x, None), the carry and no per-layer output.
  """
  config: BertConfig
  scanned: bool = False
  # Only the first position's output: queries, MLP and norms at [CLS] alone, keys and values at
  # every position. The last layer under a classifier needs nothing else.
  first_only: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool):
    """x [B, L, H], mask [B, 1, L, L] bool -> [B, L, H] ([B, 1, H] with `first_only`)."""
    cfg = self.config
    kw = layers.dtypes(cfg)
    queries = x[:, :1] if self.first_only else x
    mask = mask[:, :, :1] if self.first_only else mask
    h = layers.MultiHeadAttention(
        num_heads=cfg.num_heads, head_dim=cfg.head_dim, dropout_rate=cfg.attention_dropout,
        kernel_init=_init(cfg), attention_kernel=cfg.attention_kernel, name='attention',
        **kw)(queries, x, mask, deterministic=deterministic)
    h = nn.Dropout(rate=cfg.hidden_dropout)(h, deterministic=deterministic)
    x = layers.layer_norm(epsilon=cfg.layer_norm_eps, name='attention_ln', **kw)(queries + h)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))

    h = layers.Mlp(cfg.intermediate_size, activation=layers.gelu, kernel_init=_init(cfg),
                   name='mlp', **kw)(x)
    h = nn.Dropout(rate=cfg.hidden_dropout)(h, deterministic=deterministic)
    x = layers.layer_norm(epsilon=cfg.layer_norm_eps, name='mlp_ln', **kw)(x + h)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    return (x, None) if self.scanned else x


class BertEncoder(nn.Module):
  """BERT: embeddings, `num_layers` encoder layers and the [CLS] pooler (HF `BertModel`).

  with_pooler=False leaves the pooler out, as HF `BertForMaskedLM` does. pooled_only=True computes
  the last layer at the [CLS] position alone (its keys and values everywhere), which is all the
  pooler reads: the same pooled output for about 1/num_layers less work, and a sequence_output of
  [B, 1, H]. The layers under nn.scan (`scan_layers`) share one shape, so there every layer
  computes every position.
  """
  config: BertConfig
  with_pooler: bool = True
  pooled_only: bool = False

  @nn.compact
  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, attention_mask: jax.Array, *,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               deterministic: bool) -> tuple[jax.Array, jax.Array | None]:
    """Encodes a batch.

    Args:
      input_ids: [B, L] int token ids.
      token_type_ids: [B, L] int segment ids (0 for the first sentence, 1 for the second).
      attention_mask: [B, L] int or bool, 1 = real token, 0 = padding.
      segment_ids: [B, L] int, packed rows: a token attends only to keys of its own segment (padding
        is segment 0), replacing `attention_mask`.
      positions: [B, L] int position ids; default 0..L-1, or restarting in each segment when
        `segment_ids` is given.
      deterministic: True disables dropout; False needs a 'dropout' rng.

    Returns:
      sequence_output [B, L, H] (the last layer's hidden states) and pooled_output [B, H] (None
      without the pooler).
    """
    cfg = self.config
    if segment_ids is not None:
      if positions is None:
        positions = layers.positions_from_segment_ids(segment_ids)
      mask = layers.make_attention_mask(query_segment_ids=segment_ids, key_segment_ids=segment_ids)
    else:
      # Only keys are masked, as in HF: padded positions still attend to the real tokens, so their
      # (unused) outputs match HF too.
      mask = layers.make_attention_mask(jnp.ones_like(attention_mask), attention_mask)  # [B,1,L,L]
    x = BertEmbeddings(cfg, name='embeddings')(input_ids, token_type_ids, positions,
                                               deterministic=deterministic)
    layer = BertLayer
    if cfg.remat != 'none':
      # deterministic (arg 3, counting the module) is a Python bool.
      layer = nn.remat(layer, policy=layers.REMAT_POLICIES[cfg.remat], static_argnums=(3,),
                       prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(layer, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * 2, length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = stack(cfg, scanned=True, name='layers')(x, mask, deterministic)
    else:
      for i in range(cfg.num_layers):
        last = i == cfg.num_layers - 1
        x = layer(cfg, first_only=self.pooled_only and last, name=f'layer_{i}')(x, mask,
                                                                               deterministic)
    if not self.with_pooler:
      return x, None
    # The pooler reads the [CLS] token's final state; pre-training fits it to next-sentence prediction.
    pooled = layers.dense(cfg.hidden_size, ('embed', 'mlp'), kernel_init=_init(cfg), name='pooler',
                          **layers.dtypes(cfg))(x[:, 0])
    return x, jnp.tanh(pooled)


class BertForSequenceClassification(nn.Module):
  """BERT with a linear classifier on the pooled output (HF `BertForSequenceClassification`)."""
  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, attention_mask: jax.Array, *,
               deterministic: bool) -> jax.Array:
    """Same inputs as `BertEncoder` -> float32 logits [B, num_labels]."""
    cfg = self.config
    _, pooled = BertEncoder(cfg, pooled_only=True, name='bert')(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    return _classify(cfg, self.num_labels, pooled, deterministic)


class BertForTokenClassification(nn.Module):
  """BERT with a linear classifier on every token's final state (HF `BertForTokenClassification`,
  which has no pooler): params bert/... as `BertForMaskedLM`'s, plus classifier/{kernel, bias}."""
  config: BertConfig
  num_labels: int

  @nn.compact
  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, attention_mask: jax.Array, *,
               deterministic: bool) -> jax.Array:
    """Same inputs as `BertEncoder` -> float32 logits [B, L, num_labels]."""
    x, _ = BertEncoder(self.config, with_pooler=False, name='bert')(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    return _classify(self.config, self.num_labels, x, deterministic)


def _classify(cfg: BertConfig, num_labels: int, x: jax.Array, deterministic: bool) -> jax.Array:
  """HF's classifier head, dropout then Linear, as the submodule 'classifier' of the calling
  module: x [..., H] -> float32 logits [..., num_labels]."""
  x = nn.Dropout(rate=cfg.hidden_dropout)(x, deterministic=deterministic)
  # Classes are not a sharded axis: the kernel's output dim has no logical name.
  logits = layers.dense(num_labels, ('embed', None), kernel_init=_init(cfg), name='classifier',
                        **layers.dtypes(cfg))(x)
  # float32 so the loss and metrics never run in bfloat16.
  return logits.astype(jnp.float32)


class BertMLMHead(nn.Module):
  """The masked-LM prediction head (HF `BertLMPredictionHead`): transform, then tied decoder."""
  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array, word_embeddings: jax.Array) -> jax.Array:
    """x [B, L, H], word_embeddings [vocab, H] -> logits [B, L, vocab] in the compute dtype."""
    cfg = self.config
    kw = layers.dtypes(cfg)
    x = layers.dense(cfg.hidden_size, ('embed', 'mlp'), kernel_init=_init(cfg), name='transform',
                     **kw)(x)
    x = layers.layer_norm(epsilon=cfg.layer_norm_eps, name='transform_ln', **kw)(layers.gelu(x))
    # Tying the decoder to the input embeddings (Press & Wolf, 2017) as BERT does; only a bias is new.
    bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros_init(), ('vocab',)),
                      (cfg.vocab_size,), kw['param_dtype'])
    logits = layers.unembed(x, word_embeddings.astype(kw['dtype']))
    logits = logits + layers.broadcast_to(bias.astype(kw['dtype']), logits.shape)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))


class BertForMaskedLM(nn.Module):
  """BERT with the masked-LM head of pre-training (HF `BertForMaskedLM`, which has no pooler): a
  token distribution at every position, decoded with the input word embeddings.

  `encode` and `predict` run the two halves alone (`apply(..., method='encode')`), so a loss can
  apply the head only where tokens are predicted, as the original BERT gathers
  `masked_lm_positions` before its head.
  """
  config: BertConfig

  def setup(self):
    self.bert = BertEncoder(self.config, with_pooler=False)
    self.predictions = BertMLMHead(self.config)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, attention_mask: jax.Array, *,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               deterministic: bool) -> jax.Array:
    """Same inputs as `BertEncoder` -> float32 logits [B, L, vocab_size]."""
    return self.predict(self.encode(input_ids, token_type_ids, attention_mask,
                                    segment_ids=segment_ids, positions=positions,
                                    deterministic=deterministic))

  def encode(self, input_ids: jax.Array, token_type_ids: jax.Array, attention_mask: jax.Array, *,
             segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
             deterministic: bool) -> jax.Array:
    """Same inputs as `BertEncoder` -> the last layer's states [B, L, H]."""
    x, _ = self.bert(input_ids, token_type_ids, attention_mask, segment_ids=segment_ids,
                     positions=positions, deterministic=deterministic)
    return x

  def predict(self, x: jax.Array) -> jax.Array:
    """Final states x [B, P, H] (any P positions) -> float32 logits [B, P, vocab_size]."""
    # Possibly still boxed during init, where `encode` has just created it.
    word_embeddings = self.bert.variables['params']['embeddings']['word_embeddings']
    embedding = nn.unbox(word_embeddings['embedding'])
    # float32 so the loss and metrics never run in bfloat16.
    return self.predictions(x, embedding).astype(jnp.float32)


def stack_layers(params: dict, num_layers: int) -> dict:
  """Unboxed params with layer_0..layer_{n-1} -> the `scan_layers` layout: one `layers` subtree of
  numpy leaves [n, ...]. `params` are a `BertEncoder`'s, or a model's holding them under 'bert'."""
  params = dict(params)
  if 'bert' in params:
    params['bert'] = stack_layers(params['bert'], num_layers)
    return params
  return layers.stack_blocks(params, 'layer_', num_layers)


def unstack_layers(params: dict, num_layers: int) -> dict:
  """The inverse of `stack_layers` (unboxed params)."""
  params = dict(params)
  if 'bert' in params:
    params['bert'] = unstack_layers(params['bert'], num_layers)
    return params
  return layers.unstack_blocks(params, 'layer_', num_layers)
