"""Hugging Face BERT checkpoints (config.json + model.safetensors) <-> `llmjax.models.bert` parameters.

Only safetensors files are read or written, with the `safetensors` library's numpy API: no torch at run
time and no unpickling (a pytorch_model.bin can execute code when loaded, so it is refused).

One table, `_tensors`, lists every HF tensor with its place in our parameter tree, and drives both
`import_params` and `export`, so the two directions cannot disagree. HF stores a Linear weight as
[out, in]; our kernels are [in, out], with attention's heads split out:

  attention.self.{query,key,value}.weight [heads*kv, H] -> attention/{q,k,v}/kernel [H, heads, kv]
  attention.output.dense.weight           [H, heads*kv] -> attention/out/kernel     [heads, kv, H]

Two heads: the classifier of `BertForSequenceClassification` (with the pooler), and the masked-LM
head of `BertForMaskedLM` (`masked_lm=True`; no pooler). The masked-LM decoder weight is tied to the
word embeddings, so files do not store it (or store a copy, which is skipped); BERT's next-sentence
head (`cls.seq_relationship`) is skipped too. `MASKED_LM` is the masked-LM variant of this module's
load_config / import_params / export, for the model registry.
"""

import dataclasses
import json
import math
import os
import pathlib
import re
import types

from absl import logging
import numpy as np
import flax.linen as nn
import safetensors
import safetensors.numpy

from llmjax.errors import UserError
from llmjax.models import layers
from llmjax.models.bert import BertConfig

CONFIG = 'config.json'
WEIGHTS = 'model.safetensors'

# BertConfig architecture field -> HF config.json key. HF's defaults for these keys equal BertConfig's.
_ARCH_KEYS = {
    'vocab_size': 'vocab_size',
    'hidden_size': 'hidden_size',
    'num_layers': 'num_hidden_layers',
    'num_heads': 'num_attention_heads',
    'intermediate_size': 'intermediate_size',
    'max_position_embeddings': 'max_position_embeddings',
    'type_vocab_size': 'type_vocab_size',
    'layer_norm_eps': 'layer_norm_eps',
}
# Training choices, written by `export` but not read by `load_config`: a fine-tuning run sets its own.
_TRAIN_KEYS = {
    'hidden_dropout': 'hidden_dropout_prob',
    'attention_dropout': 'attention_probs_dropout_prob',
    'initializer_range': 'initializer_range',
}


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """One HF tensor and where it lives in our params."""
  hf_name: str  # e.g. 'bert.encoder.layer.0.attention.self.query.weight'
  path: tuple[str, ...]  # e.g. ('bert', 'layer_0', 'attention', 'q', 'kernel')
  shape: tuple[int, ...]  # ours, e.g. (H, heads, kv)
  hf_shape: tuple[int, ...]  # HF's, e.g. (heads * kv, H)
  transpose: bool  # torch Linear weight [out, in] vs our kernel [in, ..., out, ...]

  def to_ours(self, w: np.ndarray) -> np.ndarray:
    return (w.T if self.transpose else w).reshape(self.shape)

  def to_hf(self, x: np.ndarray) -> np.ndarray:
    if self.transpose:
      return x.reshape(self.hf_shape[::-1]).T
    return x.reshape(self.hf_shape)


def _tensors(config: BertConfig, num_labels: int | None, masked_lm: bool = False) -> list[_Tensor]:
  """Every tensor of HF `BertForSequenceClassification` (the classifier only if num_labels is set),
  or with masked_lm of HF `BertForMaskedLM`."""
  h, heads, kv = config.hidden_size, config.num_heads, config.head_dim
  table = []

  def plain(hf_name, path, shape):
    table.append(_Tensor(hf_name, path, shape, shape, transpose=False))

  def linear(hf_name, path, in_shape, out_shape):
    """torch Linear(in, out) -> DenseGeneral kernel [*in_shape, *out_shape] and bias [*out_shape]."""
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    table.append(_Tensor(f'{hf_name}.weight', path + ('kernel',), in_shape + out_shape, (n_out, n_in),
                         transpose=True))
    table.append(_Tensor(f'{hf_name}.bias', path + ('bias',), out_shape, (n_out,), transpose=False))

  def layer_norm(hf_name, path):
    plain(f'{hf_name}.weight', path + ('scale',), (h,))
    plain(f'{hf_name}.bias', path + ('bias',), (h,))

  emb = ('bert', 'embeddings')
  plain('bert.embeddings.word_embeddings.weight', emb + ('word_embeddings', 'embedding'),
        (config.vocab_size, h))
  plain('bert.embeddings.position_embeddings.weight', emb + ('position_embeddings', 'embedding'),
        (config.max_position_embeddings, h))
  plain('bert.embeddings.token_type_embeddings.weight', emb + ('token_type_embeddings', 'embedding'),
        (config.type_vocab_size, h))
  layer_norm('bert.embeddings.LayerNorm', emb + ('ln',))
  for i in range(config.num_layers):
    hf, ours = f'bert.encoder.layer.{i}', ('bert', f'layer_{i}')
    for hf_name, name in (('query', 'q'), ('key', 'k'), ('value', 'v')):
      linear(f'{hf}.attention.self.{hf_name}', ours + ('attention', name), (h,), (heads, kv))
    linear(f'{hf}.attention.output.dense', ours + ('attention', 'out'), (heads, kv), (h,))
    layer_norm(f'{hf}.attention.output.LayerNorm', ours + ('attention_ln',))
    linear(f'{hf}.intermediate.dense', ours + ('mlp', 'wi'), (h,), (config.intermediate_size,))
    linear(f'{hf}.output.dense', ours + ('mlp', 'wo'), (config.intermediate_size,), (h,))
    layer_norm(f'{hf}.output.LayerNorm', ours + ('mlp_ln',))
  if masked_lm:
    linear('cls.predictions.transform.dense', ('predictions', 'transform'), (h,), (h,))
    layer_norm('cls.predictions.transform.LayerNorm', ('predictions', 'transform_ln'))
    plain('cls.predictions.bias', ('predictions', 'bias'), (config.vocab_size,))
    return table
  linear('bert.pooler.dense', ('bert', 'pooler'), (h,), (h,))
  if num_labels is not None:
    linear('classifier', ('classifier',), (h,), (num_labels,))
  return table


def _canonical_name(name: str) -> str:
  """A file's tensor name -> the name in `_tensors`.

  `BertModel` files have no 'bert.' prefix, and checkpoints converted from the original TensorFlow
  code call the LayerNorm parameters gamma and beta.
  """
  if not name.startswith(('bert.', 'classifier.', 'cls.')):
    name = 'bert.' + name
  name = re.sub(r'\.LayerNorm\.gamma$', '.LayerNorm.weight', name)
  return re.sub(r'\.LayerNorm\.beta$', '.LayerNorm.bias', name)


def _is_ignored(name: str, masked_lm: bool = False) -> bool:
  """Tensors in HF BERT files that are not part of the model being imported."""
  if name in ('bert.embeddings.position_ids', 'bert.embeddings.token_type_ids'):  # buffers
    return True
  if masked_lm:
    # Next-sentence prediction and its pooler, a fine-tuned classifier, and the decoder (a copy of
    # the word embeddings, and of cls.predictions.bias, where a file stores it).
    return name.startswith(('cls.seq_relationship.', 'bert.pooler.', 'classifier.',
                            'cls.predictions.decoder.'))
  return name.startswith('cls.')  # masked-LM and next-sentence-prediction heads from pre-training


def _check_dir(hf_dir: str | os.PathLike) -> pathlib.Path:
  hf_dir = pathlib.Path(hf_dir)
  if not hf_dir.is_dir():
    raise UserError(f'Hugging Face model directory {hf_dir} does not exist: pass a directory holding '
                    f'{CONFIG} and {WEIGHTS}')
  return hf_dir


def load_config(hf_dir: str | os.PathLike) -> dict:
  """Reads BertConfig's architecture fields (sizes and layer_norm_eps) from `hf_dir`/config.json.

  Dropout rates and initializer_range are left out: they belong to the run, not the checkpoint.
  Use as `BertConfig(**load_config(d), hidden_dropout=...)`.
  """
  path = _check_dir(hf_dir) / CONFIG
  if not path.is_file():
    raise UserError(f'{path} is missing: a Hugging Face BERT directory needs {CONFIG} and {WEIGHTS}')
  try:
    hf = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f'{path} is not valid JSON ({e}): re-download or re-export the model') from None
  if not isinstance(hf, dict):
    raise UserError(f'{path} does not hold a JSON object: re-download or re-export the model')

  def refuse(key, supported):
    if key in hf and hf[key] != supported:
      raise UserError(f'{path} has {key}={hf[key]!r} but llmjax BERT supports only {supported!r}: '
                      f'use a BERT checkpoint with {key}={supported!r}')

  refuse('model_type', 'bert')  # e.g. RoBERTa offsets positions by its padding id
  refuse('hidden_act', 'gelu')  # HF 'gelu' is the exact erf GELU; 'gelu_new' is the tanh approximation
  refuse('position_embedding_type', 'absolute')
  defaults = BertConfig()
  fields = {}
  for field, key in _ARCH_KEYS.items():
    default = getattr(defaults, field)
    value = hf.get(key, default)
    try:
      fields[field] = type(default)(value)
      # Lossless conversions only: 12.0 is a fine layer count; '12', 12.5 and true are not.
      ok = fields[field] == value and not isinstance(value, bool)
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise UserError(f'{path} has {key}={value!r}, expected {type(default).__name__}: fix {CONFIG}')
  return fields


def _weights_file(hf_dir: pathlib.Path) -> pathlib.Path:
  path = hf_dir / WEIGHTS
  if not path.is_file():
    if (hf_dir / 'pytorch_model.bin').exists():
      raise UserError(
          f'{hf_dir} has pytorch_model.bin but no {WEIGHTS}, and llmjax never unpickles weights: '
          f'convert with `transformers.AutoModel.from_pretrained(dir).save_pretrained(dir)`')
    raise UserError(f'{path} is missing: a Hugging Face BERT directory needs {CONFIG} and {WEIGHTS}')
  return path


def import_params(hf_dir: str | os.PathLike, config: BertConfig,
                  num_labels: int | None = None, *, masked_lm: bool = False) -> dict:
  """Reads `hf_dir`/model.safetensors into the param layout of `BertForSequenceClassification`.

  Args:
    hf_dir: a Hugging Face BERT directory (`BertModel`, `BertForSequenceClassification`, or a
      pre-training checkpoint whose MLM/NSP heads are skipped).
    config: must match the checkpoint's architecture (see `load_config`).
    num_labels: import the file's classifier, which must have this many labels; None skips it
      (e.g. to train a fresh head).
    masked_lm: import into the layout of `BertForMaskedLM` instead (no pooler; the file's masked-LM
      head where it has one); num_labels must then be None.

  Returns:
    {'bert': {...}, 'classifier': {...}} (masked_lm: {'bert': {...}, 'predictions': {...}}) of numpy
    arrays in `config.param_dtype`, holding only the tensors present in the file (a `BertModel` file
    has no head): merge it into freshly initialised params.
  """
  if masked_lm and num_labels is not None:
    raise ValueError('a masked-LM import has no classifier: pass num_labels=None')
  path = _weights_file(_check_dir(hf_dir))
  table = {t.hf_name: t for t in _tensors(config, num_labels, masked_lm)}
  param_dtype = layers.dtype(config.param_dtype)
  params, unknown = {}, []
  try:
    with safetensors.safe_open(str(path), framework='np') as f:
      for file_name in f.keys():
        name = _canonical_name(file_name)
        if name not in table:
          if _is_ignored(name, masked_lm) or (num_labels is None and name.startswith('classifier.')):
            logging.warning('%s: ignoring tensor %s', path, file_name)
          else:
            unknown.append(file_name)
          continue
        t, w = table.pop(name), f.get_tensor(file_name)
        if w.shape != t.hf_shape:
          fix = (f'pass num_labels={w.shape[0]}, or None to train a fresh classifier'
                 if t.path[0] == 'classifier' else f'make the config match the checkpoint\'s {CONFIG}')
          raise UserError(f'{path}: tensor {file_name} has shape {list(w.shape)} but the config '
                          f'expects {list(t.hf_shape)}: {fix}')
        node = params
        for key in t.path[:-1]:
          node = node.setdefault(key, {})
        node[t.path[-1]] = np.ascontiguousarray(t.to_ours(w).astype(param_dtype))
  except safetensors.SafetensorError as e:
    raise UserError(f'cannot read {path} ({e}): re-download or re-export the model') from None
  if unknown:
    raise UserError(f'{path} has {len(unknown)} tensors this BERT config does not know, e.g. '
                    f'{unknown[0]}: make the config match the checkpoint\'s {CONFIG}')
  missing = [name for name in table if not name.startswith('classifier.')]
  if missing:
    logging.warning('%s lacks %d encoder or masked-LM head tensors (e.g. %s); they keep their '
                    'initial values',
                    path, len(missing), missing[0])
  return params


def _hf_tensors(params, table: list[_Tensor], model_name: str) -> dict[str, np.ndarray]:
  """Our params (optionally under 'params', boxed or not) -> {HF name: numpy array}, by `table`."""
  params = nn.unbox(params)
  if set(params) == {'params'}:
    params = params['params']
  tensors = {}
  for t in table:
    x = params
    for key in t.path:
      if key not in x:
        raise ValueError(f'params lack {"/".join(t.path)}: pass {model_name} params')
      x = x[key]
    x = np.asarray(x, dtype=np.float32)
    if x.shape != t.shape:
      raise ValueError(f'params {"/".join(t.path)} has shape {x.shape}, config implies {t.shape}')
    tensors[t.hf_name] = np.ascontiguousarray(t.to_hf(x))
  return tensors


def _write(out_dir: str | os.PathLike, tensors: dict[str, np.ndarray], config: BertConfig,
           architecture: str, **hf_fields) -> None:
  """Writes config.json (architecture, sizes, training fields, `hf_fields`) and model.safetensors."""
  hf_config = {
      'architectures': [architecture],
      'model_type': 'bert',
      **{key: getattr(config, field) for field, key in {**_ARCH_KEYS, **_TRAIN_KEYS}.items()},
      'hidden_act': 'gelu',
      'position_embedding_type': 'absolute',
      'pad_token_id': 0,
      **hf_fields,
  }
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / CONFIG).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + '\n')
  # transformers refuses safetensors files whose metadata lacks a known 'format'.
  safetensors.numpy.save_file(tensors, str(out_dir / WEIGHTS), metadata={'format': 'pt'})


def export(params, config: BertConfig, out_dir: str | os.PathLike, num_labels: int,
           id2label: dict | None = None) -> None:
  """Writes params as a Hugging Face `BertForSequenceClassification` directory.

  Args:
    params: the params of `BertForSequenceClassification` (optionally under a 'params' key), jax or
      numpy arrays, boxed (nn.Partitioned) or not. Must be fully addressable by this process.
    config: the model's BertConfig.
    out_dir: created if needed; config.json and model.safetensors are (over)written.
    num_labels: size of the classifier.
    id2label: {id: label name}; default {i: 'LABEL_i'} as HF.
  """
  if id2label is None:
    id2label = {i: f'LABEL_{i}' for i in range(num_labels)}
  id2label = {int(i): str(name) for i, name in id2label.items()}  # JSON may have made the ids str
  if sorted(id2label) != list(range(num_labels)):
    raise UserError(f'id2label has ids {sorted(id2label)} but there are {num_labels} labels: '
                    f'give one name for each id 0..{num_labels - 1}')
  tensors = _hf_tensors(params, _tensors(config, num_labels), 'BertForSequenceClassification')
  _write(out_dir, tensors, config, 'BertForSequenceClassification',
         classifier_dropout=None,
         id2label={str(i): name for i, name in sorted(id2label.items())},
         label2id={name: i for i, name in sorted(id2label.items())})


def import_masked_lm_params(hf_dir: str | os.PathLike, config: BertConfig) -> dict:
  """`import_params` into the layout of `BertForMaskedLM`."""
  return import_params(hf_dir, config, masked_lm=True)


def export_masked_lm(params, config: BertConfig, out_dir: str | os.PathLike) -> None:
  """Writes `BertForMaskedLM` params as a Hugging Face `BertForMaskedLM` directory (decoder tied to
  the word embeddings, so it is not stored). Arguments as `export`."""
  tensors = _hf_tensors(params, _tensors(config, None, masked_lm=True), 'BertForMaskedLM')
  _write(out_dir, tensors, config, 'BertForMaskedLM', tie_word_embeddings=True)


# The masked-LM variant of this module's interface, for `llmjax.models.FAMILIES`.
MASKED_LM = types.SimpleNamespace(load_config=load_config, import_params=import_masked_lm_params,
                                  export=export_masked_lm)
