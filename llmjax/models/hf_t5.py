"""Hugging Face T5 checkpoints (config.json + model.safetensors) <-> `llmjax.models.t5` parameters.

Safetensors only, read and written with the `safetensors` numpy API (see `hf_common` for why). Covers
`T5ForConditionalGeneration` files of T5 v1.0 (`t5-small`: ReLU `wi`, tied head scaled by
d_model**-0.5) and v1.1 (`google/t5-v1_1-small`: gated-GELU `wi_0`/`wi_1`, untied `lm_head`).

Every HF tensor is a torch Linear weight [out, in] (transposed into our [in, out] kernels) or an
embedding table:

  shared.weight                                          [V, E]     -> shared/embedding [V, E]
  encoder.block.{i}.layer.0.SelfAttention.{q,k,v}.weight [H*D, E]   -> encoder/block_{i}/self_attention/{q,k,v}/kernel [E, H, D]
  encoder.block.{i}.layer.0.SelfAttention.o.weight       [E, H*D]   -> .../self_attention/out/kernel [H, D, E]
  encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, H]
                                                         -> encoder/block_0/relative_attention_bias/rel_embedding
  encoder.block.{i}.layer.0.layer_norm.weight            [E]        -> .../self_attention_norm/scale
  encoder.block.{i}.layer.1.DenseReluDense.{wi | wi_0, wi_1}.weight [F, E] -> .../mlp/{wi | wi_0, wi_1}/kernel [E, F]
  encoder.block.{i}.layer.1.DenseReluDense.wo.weight     [E, F]     -> .../mlp/wo/kernel [F, E]
  encoder.block.{i}.layer.1.layer_norm.weight                       -> .../mlp_norm/scale
  decoder.block.{i}.layer.{0: SelfAttention, 1: EncDecAttention (cross_attention), 2: DenseReluDense}
  {encoder, decoder}.final_layer_norm.weight                        -> {encoder, decoder}/final_norm/scale
  lm_head.weight                                         [V, E]     -> lm_head/kernel [E, V] (untied only)

One table, `_tensors`, drives both `import_params` and `export`. The copies
`{encoder, decoder}.embed_tokens.weight` of `shared.weight` that some files store are ignored.

With `config.scan_layers` the blocks are read into (and written from) the stacked layout,
{encoder, decoder}/layers/... with a leading [num_layers] axis and the position bias table at
{encoder, decoder}/relative_attention_bias/rel_embedding (see `t5.stack_layers`); the table itself
always names the unstacked block_{i} params.

transformers 5.x always ties T5's `lm_head` to `shared` and keeps only the logit scaling switch
(`scale_decoder_outputs`, False for v1.1): its files load as tie_word_embeddings=True,
scale_decoder_outputs=False. Files with a separate `lm_head.weight` and tie_word_embeddings=false
(the original v1.1 uploads, and our untied `export`) load untied.
"""

import os

import numpy as np

from llmjax.errors import UserError
from llmjax.models import hf_common
from llmjax.models import layers
from llmjax.models import t5
from llmjax.models.t5 import T5Config
# CONFIG and WEIGHTS stay importable from here: callers and tests name the files through this module.
from llmjax.models.hf_common import CONFIG, WEIGHTS, Tensor as _Tensor  # pylint: disable=unused-import

# T5Config integer architecture field -> HF config.json key (HF's default when the key is absent).
_ARCH_KEYS = {
    'vocab_size': ('vocab_size', 32128),
    'd_model': ('d_model', 512),
    'd_kv': ('d_kv', 64),
    'd_ff': ('d_ff', 2048),
    'num_layers': ('num_layers', 6),
    'num_heads': ('num_heads', 8),
    'relative_attention_num_buckets': ('relative_attention_num_buckets', 32),
    'relative_attention_max_distance': ('relative_attention_max_distance', 128),
}
# Embedding copies some files store next to shared.weight.
_IGNORED = ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight')


def unsupported(config: T5Config) -> str | None:
  """Why HF T5 cannot hold this architecture (None: it can). HF T5 is pre-RMSNorm, relative
  positions, no biases, unscaled logits and embeddings."""
  required = {'position': 'relative', 'norm': 'rmsnorm', 'norm_position': 'pre', 'use_bias': False,
              'scale_attention': False, 'scale_embeddings': False}
  for field, ok in required.items():
    if getattr(config, field) != ok:
      return (f'T5 {field}={getattr(config, field)!r} has no Hugging Face T5 equivalent: use '
              f'{field}={ok!r} for T5 interop')
  return None


def _check_exportable(config: T5Config) -> None:
  reason = unsupported(config)
  if reason:
    raise UserError(reason)


def _tensors(config: T5Config) -> list[_Tensor]:
  """Every tensor of HF `T5ForConditionalGeneration` (lm_head only when untied)."""
  _check_exportable(config)
  e, heads, kv, ff = config.d_model, config.num_heads, config.d_kv, config.d_ff
  table = []

  def linear(hf_name, path, in_shape, out_shape):
    hf_shape = (int(np.prod(out_shape)), int(np.prod(in_shape)))
    table.append(_Tensor(f'{hf_name}.weight', path + ('kernel',), in_shape + out_shape, hf_shape,
                         transpose=True))

  def norm(hf_name, path):
    table.append(_Tensor(f'{hf_name}.weight', path + ('scale',), (e,), (e,)))

  def attention(hf, ours, first):
    hf_layer = hf.rsplit('.', 1)[0]
    for n in 'qkv':
      linear(f'{hf}.{n}', ours + (n,), (e,), (heads, kv))
    linear(f'{hf}.o', ours + ('out',), (heads, kv), (e,))
    if first:
      buckets = config.relative_attention_num_buckets
      table.append(_Tensor(f'{hf}.relative_attention_bias.weight',
                           ours[:-1] + ('relative_attention_bias', 'rel_embedding'),
                           (buckets, heads), (buckets, heads)))
    norm(f'{hf_layer}.layer_norm', ours[:-1] + (ours[-1] + '_norm',))

  def mlp(hf, ours):
    names = ('wi_0', 'wi_1') if config.feed_forward.startswith('gated-') else ('wi',)
    for n in names:
      linear(f'{hf}.DenseReluDense.{n}', ours + ('mlp', n), (e,), (ff,))
    linear(f'{hf}.DenseReluDense.wo', ours + ('mlp', 'wo'), (ff,), (e,))
    norm(f'{hf}.layer_norm', ours + ('mlp_norm',))

  table.append(_Tensor('shared.weight', ('shared', 'embedding'), (config.vocab_size, e),
                       (config.vocab_size, e)))
  for stack, num_layers in (('encoder', config.num_layers), ('decoder', config.decoder_layers)):
    for i in range(num_layers):
      hf, ours = f'{stack}.block.{i}.layer', (stack, f'block_{i}')
      attention(f'{hf}.0.SelfAttention', ours + ('self_attention',), i == 0)
      if stack == 'decoder':
        attention(f'{hf}.1.EncDecAttention', ours + ('cross_attention',), False)
      mlp(f'{hf}.{2 if stack == "decoder" else 1}', ours)
    norm(f'{stack}.final_layer_norm', (stack, 'final_norm'))
  if not config.tie_word_embeddings:
    linear('lm_head', ('lm_head',), (e,), (config.vocab_size,))
  return table


def load_config(hf_dir: str | os.PathLike) -> dict:
  """Reads T5Config's architecture fields from `hf_dir`/config.json.

  Dropout and initializer_factor are left out: they belong to the run, not the checkpoint. Use as
  `T5Config(**load_config(d), dropout_rate=...)`.
  """
  path, hf = hf_common.read_config(hf_dir, 'T5')
  if hf.get('model_type', 't5') != 't5':
    raise UserError(f'{path} has model_type={hf["model_type"]!r} but llmjax T5 supports only '
                    f'\'t5\': use a T5 checkpoint')

  def integer(key, default):
    value = hf.get(key, default)
    # Lossless only: 6.0 is a fine layer count; '6', 6.5 and true are not.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
      raise UserError(f'{path} has {key}={value!r}, expected an integer: fix {CONFIG}')
    return int(value)

  fields = {field: integer(key, default) for field, (key, default) in _ARCH_KEYS.items()}
  decoder_layers = hf.get('num_decoder_layers')
  fields['num_decoder_layers'] = (fields['num_layers'] if decoder_layers is None
                                  else integer('num_decoder_layers', None))
  eps = hf.get('layer_norm_epsilon', 1e-6)
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
    raise UserError(f'{path} has layer_norm_epsilon={eps!r}, expected a positive number: fix {CONFIG}')
  fields['layer_norm_eps'] = float(eps)
  feed_forward = hf.get('feed_forward_proj', 'relu')
  if feed_forward not in t5.FEED_FORWARD:
    raise UserError(f'{path} has feed_forward_proj={feed_forward!r}, which llmjax does not '
                    f'implement: use one of {sorted(t5.FEED_FORWARD)}')
  fields['feed_forward'] = feed_forward
  tie = hf.get('tie_word_embeddings', True)
  scale = hf.get('scale_decoder_outputs', tie)  # absent in files older than transformers 5
  for key, value in (('tie_word_embeddings', tie), ('scale_decoder_outputs', scale)):
    if not isinstance(value, bool):
      raise UserError(f'{path} has {key}={value!r}, expected true or false: fix {CONFIG}')
  fields['tie_word_embeddings'] = tie
  fields['scale_decoder_outputs'] = scale
  return fields


def import_params(hf_dir: str | os.PathLike, config: T5Config) -> dict:
  """Reads `hf_dir`/model.safetensors (`T5ForConditionalGeneration`) into `T5`'s param layout.

  Returns a nested dict of numpy arrays in `config.param_dtype`, every param of `T5(config)`
  (each stack's blocks stacked under `layers` when config.scan_layers).
  """
  path = hf_common.weights_file(hf_dir, 'T5')
  table = {t.hf_name: t for t in _tensors(config)}
  param_dtype = layers.dtype(config.param_dtype)
  params, unknown = {}, []
  with hf_common.open_weights(path) as f:
    for name in f.keys():
      if name in _IGNORED or (name == 'lm_head.weight' and config.tie_word_embeddings):
        continue  # copies of shared.weight
      if name not in table:
        unknown.append(name)
        continue
      t, w = table.pop(name), f.get_tensor(name)
      hf_common.check_shape(path, name, w, t.hf_shape)
      hf_common.set_param(params, t.path, t.to_ours(w), param_dtype)
  hf_common.check_all_read(path, unknown, table, 'T5')
  if config.scan_layers:
    params = t5.stack_layers(params, config)
  return params


def export(params, config: T5Config, out_dir: str | os.PathLike) -> None:
  """Writes `T5` params as a Hugging Face `T5ForConditionalGeneration` directory.

  Args:
    params: the params of `T5(config)` (optionally under a 'params' key; stacked with
      config.scan_layers), jax or numpy arrays, boxed or not; fully addressable by this process.
    config: a HF-compatible T5Config (relative positions, pre-RMSNorm, no biases or extra scaling).
    out_dir: created if needed; config.json and model.safetensors are (over)written.
  """
  table = _tensors(config)  # refuses a config HF T5 cannot hold before looking at params
  params = hf_common.unwrap(params)
  if config.scan_layers:
    if any('layers' not in params.get(stack, {}) for stack in ('encoder', 'decoder')):
      raise ValueError('params lack {encoder, decoder}/layers, which scan_layers=True implies: pass '
                       'the params of T5(config)')
    params = t5.unstack_layers(params, config)
  tensors = hf_common.hf_tensors(params, table, 'pass the params of T5(config)')

  hf_config = {
      'architectures': ['T5ForConditionalGeneration'],
      'model_type': 't5',
      **{key: getattr(config, field) for field, (key, _) in _ARCH_KEYS.items()},
      'num_decoder_layers': config.decoder_layers,
      'layer_norm_epsilon': config.layer_norm_eps,
      'feed_forward_proj': config.feed_forward,
      'tie_word_embeddings': config.tie_word_embeddings,
      'scale_decoder_outputs': config.scales_decoder_outputs,
      'dropout_rate': config.dropout_rate,
      'initializer_factor': config.initializer_factor,
      'is_encoder_decoder': True,
      # T5's vocabulary: pad 0 (also the decoder start token), EOS 1.
      'pad_token_id': 0,
      'eos_token_id': 1,
      'decoder_start_token_id': 0,
  }
  hf_common.write(out_dir, hf_config, tensors)
