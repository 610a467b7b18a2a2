"""Hugging Face GPT-2 checkpoints (config.json + model.safetensors) <-> `llmjax.models.gpt` parameters.

Safetensors only, read and written with the `safetensors` numpy API (see `hf_common` for why).

HF GPT-2 uses `Conv1D` layers whose weight is already [in, out] (a torch Linear's transpose), and fuses
the q, k and v projections into one `c_attn`, whose output columns are [q | k | v], each heads-major:

  h.{i}.attn.c_attn.weight [E, 3E] -> h_{i}/attn/{q,k,v}/kernel [E, heads, kv]   (split columns)
  h.{i}.attn.c_attn.bias   [3E]    -> h_{i}/attn/{q,k,v}/bias   [heads, kv]
  h.{i}.attn.c_proj.weight [E, E]  -> h_{i}/attn/out/kernel     [heads, kv, E]
  h.{i}.mlp.c_fc.weight    [E, I]  -> h_{i}/mlp/wi/kernel       [E, I]
  h.{i}.mlp.c_proj.weight  [I, E]  -> h_{i}/mlp/wo/kernel       [I, E]
  lm_head.weight           [V, E]  -> lm_head/kernel            [E, V]  (untied heads only)

One table, `_tensors`, drives both `import_params` and `export`. Files of `GPT2Model` (no
'transformer.' prefix, e.g. the original 'gpt2' upload) and of `GPT2LMHeadModel` both load; the
causal-mask buffers `attn.bias` / `attn.masked_bias` of old files are ignored.
"""

import dataclasses
import math
import os
import re

from absl import logging
import numpy as np

from llmjax.errors import UserError
from llmjax.models import hf_common
from llmjax.models import layers
from llmjax.models import gpt
from llmjax.models.gpt import GPTConfig
# CONFIG and WEIGHTS stay importable from here: callers and tests name the files through this module.
from llmjax.models.hf_common import CONFIG, WEIGHTS  # pylint: disable=unused-import

# GPTConfig architecture field -> HF config.json key (HF's default when the key is absent).
_ARCH_KEYS = {
    'vocab_size': ('vocab_size', 50257),
    'max_position_embeddings': ('n_positions', 1024),
    'hidden_size': ('n_embd', 768),
    'num_layers': ('n_layer', 12),
    'num_heads': ('n_head', 12),
    'layer_norm_eps': ('layer_norm_epsilon', 1e-5),
    'tie_embeddings': ('tie_word_embeddings', True),
}
# Training choices: written by `export`, not read by `load_config` (a run sets its own).
_TRAIN_KEYS = {
    'embd_dropout': 'embd_pdrop',
    'attn_dropout': 'attn_pdrop',
    'resid_dropout': 'resid_pdrop',
    'initializer_range': 'initializer_range',
}
# HF activation_function -> ours. 'gelu_pytorch_tanh' is the same tanh approximation as 'gelu_new'.
_ACTIVATIONS = {'gelu_new': 'gelu_new', 'gelu_pytorch_tanh': 'gelu_new', 'gelu': 'gelu',
                'relu': 'relu', 'silu': 'silu', 'swish': 'silu'}


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One HF tensor and the param(s) it holds: a fused tensor is split along its last (output) axis."""
  hf_name: str  # without the 'transformer.' prefix for the body, e.g. 'h.0.attn.c_attn.weight'
  paths: tuple[tuple[str, ...], ...]  # e.g. (('h_0', 'attn', 'q', 'kernel'), ... k, v)
  shapes: tuple[tuple[int, ...], ...]  # ours, one per path
  hf_shape: tuple[int, ...]
  transpose: bool = False  # torch Linear [out, in] (only lm_head); Conv1D is already [in, out]

  def to_ours(self, w: np.ndarray) -> list[np.ndarray]:
    w = w.T if self.transpose else w
    return [p.reshape(s) for p, s in zip(np.split(w, len(self.paths), axis=-1), self.shapes)]

  def to_hf(self, xs: list[np.ndarray]) -> np.ndarray:
    shape = self.hf_shape[::-1] if self.transpose else self.hf_shape
    w = np.concatenate([x.reshape(shape[:-1] + (-1,)) for x in xs], axis=-1)
    return w.T if self.transpose else w


def _check_exportable(config: GPTConfig) -> None:
  """HF GPT-2 has learned positions, LayerNorm, biases and one kv head per head."""
  wrong = {'position': 'learned', 'norm': 'layernorm', 'use_bias': True,
           'num_kv_heads': (None, config.num_heads)}
  for field, ok in wrong.items():
    value = getattr(config, field)
    if value not in (ok if isinstance(ok, tuple) else (ok,)):
      raise UserError(f'GPT {field}={value!r} has no Hugging Face GPT-2 equivalent: use '
                      f'{field}={ok[-1] if isinstance(ok, tuple) else ok!r} for GPT-2 interop')
  if config.activation not in _ACTIVATIONS.values():
    raise UserError(f'GPT activation={config.activation!r} has no Hugging Face GPT-2 equivalent: use '
                    f'one of {sorted(set(_ACTIVATIONS.values()))}')


def _tensors(config: GPTConfig) -> list[_Tensor]:
  """Every tensor of HF `GPT2LMHeadModel` (lm_head only when untied)."""
  _check_exportable(config)
  e, heads, kv, inner = config.hidden_size, config.num_heads, config.head_dim, config.intermediate_size
  table = []

  def plain(hf_name, path, shape):
    table.append(_Tensor(hf_name, (path,), (shape,), shape))

  def conv1d(hf_name, paths, in_shape, out_shape):
    """HF Conv1D(n_in -> len(paths) * n_out), split into `paths`: kernels [*in, *out], biases [*out]."""
    n_in, n_out, n = math.prod(in_shape), math.prod(out_shape), len(paths)
    table.append(_Tensor(f'{hf_name}.weight', tuple(p + ('kernel',) for p in paths),
                         (in_shape + out_shape,) * n, (n_in, n * n_out)))
    table.append(_Tensor(f'{hf_name}.bias', tuple(p + ('bias',) for p in paths),
                         (out_shape,) * n, (n * n_out,)))

  def layer_norm(hf_name, path):
    plain(f'{hf_name}.weight', path + ('scale',), (e,))
    plain(f'{hf_name}.bias', path + ('bias',), (e,))

  plain('wte.weight', ('wte', 'embedding'), (config.vocab_size, e))
  plain('wpe.weight', ('wpe', 'embedding'), (config.max_position_embeddings, e))
  for i in range(config.num_layers):
    hf, ours = f'h.{i}', (f'h_{i}',)
    layer_norm(f'{hf}.ln_1', ours + ('ln_1',))
    conv1d(f'{hf}.attn.c_attn', tuple(ours + ('attn', n) for n in 'qkv'), (e,), (heads, kv))
    conv1d(f'{hf}.attn.c_proj', (ours + ('attn', 'out'),), (heads, kv), (e,))
    layer_norm(f'{hf}.ln_2', ours + ('ln_2',))
    conv1d(f'{hf}.mlp.c_fc', (ours + ('mlp', 'wi'),), (e,), (inner,))
    conv1d(f'{hf}.mlp.c_proj', (ours + ('mlp', 'wo'),), (inner,), (e,))
  layer_norm('ln_f', ('ln_f',))
  if not config.tie_embeddings:
    table.append(_Tensor('lm_head.weight', (('lm_head', 'kernel'),), ((e, config.vocab_size),),
                         (config.vocab_size, e), transpose=True))
  return table


def _canonical_name(name: str) -> str:
  """A file's tensor name -> the name in `_tensors` (GPT2LMHeadModel files prefix 'transformer.')."""
  return name.removeprefix('transformer.')


def _is_ignored(name: str) -> bool:
  # Old files store the causal-mask buffers, which the mask builder recomputes.
  return re.fullmatch(r'h\.\d+\.attn\.(bias|masked_bias)', name) is not None


def load_config(hf_dir: str | os.PathLike) -> dict:
  """Reads GPTConfig's architecture fields from `hf_dir`/config.json.

  Dropout rates and initializer_range are left out: they belong to the run, not the checkpoint.
  Use as `GPTConfig(**load_config(d), resid_dropout=...)`.
  """
  path, hf = hf_common.read_config(hf_dir, 'GPT-2')
  for key, supported in (('model_type', 'gpt2'), ('scale_attn_weights', True),
                         ('scale_attn_by_inverse_layer_idx', False), ('add_cross_attention', False)):
    hf_common.refuse(path, hf, key, supported, 'GPT-2')
  fields = {field: hf_common.convert(path, key, hf.get(key, default), default)
            for field, (key, default) in _ARCH_KEYS.items()}
  inner = hf.get('n_inner')
  fields['intermediate_size'] = 4 * fields['hidden_size'] if inner is None else int(inner)
  activation = hf.get('activation_function', 'gelu_new')
  if activation not in _ACTIVATIONS:
    raise UserError(f'{path} has activation_function={activation!r}, which llmjax does not '
                    f'implement: use one of {sorted(_ACTIVATIONS)}')
  fields['activation'] = _ACTIVATIONS[activation]
  return fields


def import_params(hf_dir: str | os.PathLike, config: GPTConfig) -> dict:
  """Reads `hf_dir`/model.safetensors (GPT2Model or GPT2LMHeadModel) into `GPT`'s param layout.

  Returns a nested dict of numpy arrays in `config.param_dtype`, every param of `GPT(config)`
  (stacked under `layers` when config.scan_layers).
  """
  path = hf_common.weights_file(hf_dir, 'GPT-2')
  table = {t.hf_name: t for t in _tensors(config)}
  param_dtype = layers.dtype(config.param_dtype)
  params, unknown = {}, []
  with hf_common.open_weights(path) as f:
    for file_name in f.keys():
      name = _canonical_name(file_name)
      if name == 'lm_head.weight' and config.tie_embeddings:
        continue  # a tied head stored anyway: it is wte
      if name not in table:
        if _is_ignored(name):
          logging.info('%s: ignoring buffer %s', path, file_name)
        else:
          unknown.append(file_name)
        continue
      t, w = table.pop(name), f.get_tensor(file_name)
      hf_common.check_shape(path, file_name, w, t.hf_shape)
      for p, x in zip(t.paths, t.to_ours(w)):
        hf_common.set_param(params, p, x, param_dtype)
  hf_common.check_all_read(path, unknown, table, 'GPT')
  if config.scan_layers:
    params = gpt.stack_layers(params, config.num_layers)
  return params


def export(params, config: GPTConfig, out_dir: str | os.PathLike) -> None:
  """Writes `GPT` params as a Hugging Face `GPT2LMHeadModel` directory (config.json, model.safetensors).

  Args:
    params: the params of `GPT(config)` (optionally under a 'params' key), jax or numpy arrays, boxed
      or not; fully addressable by this process.
    config: a GPT-2-compatible GPTConfig (learned positions, LayerNorm, biases, no GQA).
    out_dir: created if needed; config.json and model.safetensors are (over)written.
  """
  params = hf_common.unwrap(params)
  if config.scan_layers:
    params = gpt.unstack_layers(params, config.num_layers)
  tensors = {}
  for t in _tensors(config):
    xs = [hf_common.get_param(params, path, shape, 'pass the params of GPT(config)')
          for path, shape in zip(t.paths, t.shapes)]
    name = t.hf_name if t.hf_name.startswith('lm_head') else 'transformer.' + t.hf_name
    tensors[name] = np.ascontiguousarray(t.to_hf(xs))

  hf_config = {
      'architectures': ['GPT2LMHeadModel'],
      'model_type': 'gpt2',
      **{key: getattr(config, field) for field, (key, _) in _ARCH_KEYS.items()},
      **{key: getattr(config, field) for field, key in _TRAIN_KEYS.items()},
      'n_inner': config.intermediate_size,
      'activation_function': config.activation,
      'n_ctx': config.max_position_embeddings,
      # GPT-2's <|endoftext|> (50256) is its last id; HF's default would be out of range elsewhere.
      'bos_token_id': config.vocab_size - 1,
      'eos_token_id': config.vocab_size - 1,
  }
  hf_common.write(out_dir, hf_config, tensors)
