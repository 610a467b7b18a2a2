"""What every Hugging Face converter (`hf_bert`, `hf_gpt2`, `hf_t5`) shares.

A Hugging Face directory is config.json + model.safetensors. Only safetensors files are read or
written, with the `safetensors` library's numpy API: no torch at run time and no unpickling (a
pytorch_model.bin can execute code when loaded, so it is refused).

Each converter keeps its own tensor table and naming; this module holds the directory and file
handling, the table entry for one-param tensors, and the walks between nested params and paths.
`family` arguments name the model in messages, e.g. 'BERT' or 'GPT-2'.
"""

import contextlib
import dataclasses
import json
import os
import pathlib

import numpy as np
import flax.linen as nn
import safetensors
import safetensors.numpy

from llmjax.errors import UserError

CONFIG = 'config.json'
WEIGHTS = 'model.safetensors'
# The usual fix for a file that disagrees with the config it is imported into.
MATCH_CONFIG = f'make the config match the checkpoint\'s {CONFIG}'


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One HF tensor and the one param it holds."""
  hf_name: str  # e.g. 'bert.encoder.layer.0.attention.self.query.weight'
  path: tuple[str, ...]  # e.g. ('bert', 'layer_0', 'attention', 'q', 'kernel')
  shape: tuple[int, ...]  # ours, e.g. (H, heads, kv)
  hf_shape: tuple[int, ...]  # HF's, e.g. (heads * kv, H)
  transpose: bool = False  # torch Linear weight [out, in] vs our kernel [in, ..., out, ...]

  def to_ours(self, w: np.ndarray) -> np.ndarray:
    return (w.T if self.transpose else w).reshape(self.shape)

  def to_hf(self, x: np.ndarray) -> np.ndarray:
    if self.transpose:
      return x.reshape(self.hf_shape[::-1]).T
    return x.reshape(self.hf_shape)


def check_dir(hf_dir: str | os.PathLike) -> pathlib.Path:
  hf_dir = pathlib.Path(hf_dir)
  if not hf_dir.is_dir():
    raise UserError(f'Hugging Face model directory {hf_dir} does not exist: pass a directory holding '
                    f'{CONFIG} and {WEIGHTS}')
  return hf_dir


def _missing(path: pathlib.Path, family: str) -> UserError:
  return UserError(f'{path} is missing: a Hugging Face {family} directory needs {CONFIG} and {WEIGHTS}')


def read_config(hf_dir: str | os.PathLike, family: str) -> tuple[pathlib.Path, dict]:
  """`hf_dir`/config.json's path (for messages) and its JSON object."""
  path = check_dir(hf_dir) / CONFIG
  if not path.is_file():
    raise _missing(path, family)
  try:
    hf = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f'{path} is not valid JSON ({e}): re-download or re-export the model') from None
  if not isinstance(hf, dict):
    raise UserError(f'{path} does not hold a JSON object: re-download or re-export the model')
  return path, hf


def refuse(path: pathlib.Path, hf: dict, key: str, supported, family: str) -> None:
  """Refuses a config.json whose `key` is present and not `supported`."""
  if key in hf and hf[key] != supported:
    raise UserError(f'{path} has {key}={hf[key]!r} but llmjax {family} supports only {supported!r}: '
                    f'use a {family} checkpoint with {key}={supported!r}')


def convert(path: pathlib.Path, key: str, value, default):
  """config.json's `value` for `key`, as the type of our `default`."""
  try:
    converted = type(default)(value)
    # Lossless conversions only: 12.0 is a fine layer count; '12', 12.5 and true are not.
    ok = converted == value and isinstance(value, bool) == isinstance(default, bool)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise UserError(f'{path} has {key}={value!r}, expected {type(default).__name__}: fix {CONFIG}')
  return converted


def weights_file(hf_dir: str | os.PathLike, family: str) -> pathlib.Path:
  """`hf_dir`/model.safetensors, refusing a directory that has only pickled torch weights."""
  hf_dir = check_dir(hf_dir)
  path = hf_dir / WEIGHTS
  if not path.is_file():
    if (hf_dir / 'pytorch_model.bin').exists():
      raise UserError(
          f'{hf_dir} has pytorch_model.bin but no {WEIGHTS}, and llmjax never unpickles weights: '
          f'convert with `transformers.AutoModel.from_pretrained(dir).save_pretrained(dir)`')
    raise _missing(path, family)
  return path


@contextlib.contextmanager
def open_weights(path: pathlib.Path):
  """Opens a safetensors file for numpy reads; a corrupt file (on open or on read) is a UserError."""
  try:
    with safetensors.safe_open(str(path), framework='np') as f:
      yield f
  except safetensors.SafetensorError as e:
    raise UserError(f'cannot read {path} ({e}): re-download or re-export the model') from None


def check_shape(path: pathlib.Path, name: str, w: np.ndarray, hf_shape: tuple[int, ...],
                fix: str = MATCH_CONFIG) -> None:
  if w.shape != hf_shape:
    raise UserError(f'{path}: tensor {name} has shape {list(w.shape)} but the config '
                    f'expects {list(hf_shape)}: {fix}')


def set_param(params: dict, path: tuple[str, ...], x: np.ndarray, param_dtype) -> None:
  """Stores `x` at `path` in nested `params`, creating the dicts on the way."""
  node = params
  for key in path[:-1]:
    node = node.setdefault(key, {})
  node[path[-1]] = np.ascontiguousarray(x.astype(param_dtype))


def check_all_read(path: pathlib.Path, unknown: list[str], left: dict, family: str) -> None:
  """Refuses a file with tensors the config lacks (`unknown`) or lacking tensors it has (`left`)."""
  check_unknown(path, unknown, family)
  if left:
    raise UserError(f'{path} lacks {len(left)} tensors of this {family} config, e.g. '
                    f'{next(iter(left))}: {MATCH_CONFIG}')


def check_unknown(path: pathlib.Path, unknown: list[str], family: str) -> None:
  if unknown:
    raise UserError(f'{path} has {len(unknown)} tensors this {family} config does not know, e.g. '
                    f'{unknown[0]}: {MATCH_CONFIG}')


def unwrap(params):
  """Params optionally under 'params', boxed (nn.Partitioned) or not -> the plain tree."""
  params = nn.unbox(params)
  if set(params) == {'params'}:
    params = params['params']
  return params


def get_param(params, path: tuple[str, ...], shape: tuple[int, ...], hint: str) -> np.ndarray:
  """The float32 param at `path`, which must have `shape`; `hint` says which params to pass."""
  x = params
  for key in path:
    if key not in x:
      raise ValueError(f'params lack {"/".join(path)}: {hint}')
    x = x[key]
  x = np.asarray(x, dtype=np.float32)
  if x.shape != shape:
    raise ValueError(f'params {"/".join(path)} has shape {x.shape}, config implies {shape}')
  return x


def hf_tensors(params, table: list[Tensor], hint: str) -> dict[str, np.ndarray]:
  """Plain params (see `unwrap`) -> {HF name: numpy array}, by a table of one-param tensors."""
  return {t.hf_name: np.ascontiguousarray(t.to_hf(get_param(params, t.path, t.shape, hint)))
          for t in table}


def write(out_dir: str | os.PathLike, hf_config: dict, tensors: dict[str, np.ndarray]) -> None:
  """Writes `hf_config` as config.json and `tensors` as model.safetensors into `out_dir`."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / CONFIG).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + '\n')
  # transformers refuses safetensors files whose metadata lacks a known 'format'.
  safetensors.numpy.save_file(tensors, str(out_dir / WEIGHTS), metadata={'format': 'pt'})
