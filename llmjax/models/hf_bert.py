"""Hugging Face BERT checkpoints (config.json + model.safetensors) <-> `llmjax.models.bert` parameters.

Safetensors only, read and written with the `safetensors` numpy API (see `hf_common` for why).

One table, `_tensors`, lists every HF tensor with its place in our parameter tree, and drives both
`import_params` and `export`, so the two directions cannot disagree. HF stores a Linear weight as
[out, in]; our kernels are [in, out], with attention's heads split out:

  attention.self.{query,key,value}.weight [heads*kv, H] -> attention/{q,k,v}/kernel [H, heads, kv]
  attention.output.dense.weight           [H, heads*kv] -> attention/out/kernel     [heads, kv, H]

Three heads: the classifier of `BertForSequenceClassification` (with the pooler), the per-token
classifier of `BertForTokenClassification` (`pooler=False`), and the masked-LM head of
`BertForMaskedLM` (`masked_lm=True`; no pooler). The masked-LM decoder weight is tied to the
word embeddings, so files do not store it (or store a copy, which is skipped); BERT's next-sentence
head (`cls.seq_relationship`) is skipped too. `MASKED_LM` is the masked-LM variant of this module's
load_config / import_params / export, for the model registry.

With `config.scan_layers` the encoder layers are read into (and written from) the stacked layout,
bert/layers/... with a leading [num_layers] axis (see `bert.stack_layers`); the table itself always
names the unstacked bert/layer_{i}/... params.
"""

import functools
import math
import os
import re
import types

from absl import logging
import numpy as np

from llmjax.errors import UserError
from llmjax.models import hf_common
from llmjax.models import bert
from llmjax.models import layers
from llmjax.models.bert import BertConfig
# CONFIG and WEIGHTS stay importable from here: callers and tests name the files through this module.
from llmjax.models.hf_common import CONFIG, WEIGHTS, Tensor as _Tensor  # pylint: disable=unused-import

_FAMILY = 'BERT'

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


def _tensors(config: BertConfig, num_labels: int | None, masked_lm: bool = False,
             pooler: bool = True) -> list[_Tensor]:
  """Every tensor of HF `BertForSequenceClassification` (the classifier only if num_labels is set),
  without the pooler of HF `BertForTokenClassification`, or with masked_lm of HF `BertForMaskedLM`."""
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
  if pooler:
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


def _is_ignored(name: str, masked_lm: bool = False, pooler: bool = True) -> bool:
  """Tensors in HF BERT files that are not part of the model being imported."""
  if name in ('bert.embeddings.position_ids', 'bert.embeddings.token_type_ids'):  # buffers
    return True
  if not pooler and name.startswith('bert.pooler.'):  # a per-token head never reads it
    return True
  if masked_lm:
    # Next-sentence prediction and its pooler, a fine-tuned classifier, and the decoder (a copy of
    # the word embeddings, and of cls.predictions.bias, where a file stores it).
    return name.startswith(('cls.seq_relationship.', 'bert.pooler.', 'classifier.',
                            'cls.predictions.decoder.'))
  return name.startswith('cls.')  # masked-LM and next-sentence-prediction heads from pre-training


def load_config(hf_dir: str | os.PathLike) -> dict:
  """Reads BertConfig's architecture fields (sizes and layer_norm_eps) from `hf_dir`/config.json.

  Dropout rates and initializer_range are left out: they belong to the run, not the checkpoint.
  Use as `BertConfig(**load_config(d), hidden_dropout=...)`.
  """
  path, hf = hf_common.read_config(hf_dir, _FAMILY)
  for key, supported in (('model_type', 'bert'),  # e.g. RoBERTa offsets positions by its padding id
                         ('hidden_act', 'gelu'),  # HF 'gelu' is exact erf GELU, 'gelu_new' tanh
                         ('position_embedding_type', 'absolute')):
    hf_common.refuse(path, hf, key, supported, _FAMILY)
  defaults, fields = BertConfig(), {}
  for field, key in _ARCH_KEYS.items():
    default = getattr(defaults, field)
    fields[field] = hf_common.convert(path, key, hf.get(key, default), default)
  return fields


def import_params(hf_dir: str | os.PathLike, config: BertConfig,
                  num_labels: int | None = None, *, masked_lm: bool = False,
                  pooler: bool = True) -> dict:
  """Reads `hf_dir`/model.safetensors into the param layout of `BertForSequenceClassification`.

  Args:
    hf_dir: a Hugging Face BERT directory (`BertModel`, `BertForSequenceClassification`, or a
      pre-training checkpoint whose MLM/NSP heads are skipped).
    config: must match the checkpoint's architecture (see `load_config`).
    num_labels: import the file's classifier, which must have this many labels; None skips it
      (e.g. to train a fresh head).
    masked_lm: import into the layout of `BertForMaskedLM` instead (no pooler; the file's masked-LM
      head where it has one); num_labels must then be None.
    pooler: False imports into the layout of `BertForTokenClassification` (a file's pooler is
      skipped).

  Returns:
    {'bert': {...}, 'classifier': {...}} (masked_lm: {'bert': {...}, 'predictions': {...}}) of numpy
    arrays in `config.param_dtype`, holding only the tensors present in the file (a `BertModel` file
    has no head): merge it into freshly initialised params. With config.scan_layers the encoder
    layers are stacked under bert/layers.
  """
  if masked_lm and num_labels is not None:
    raise ValueError('a masked-LM import has no classifier: pass num_labels=None')
  path = hf_common.weights_file(hf_dir, _FAMILY)
  table = {t.hf_name: t for t in _tensors(config, num_labels, masked_lm, pooler)}
  param_dtype = layers.dtype(config.param_dtype)
  params, unknown = {}, []
  with hf_common.open_weights(path) as f:
    for file_name in f.keys():
      name = _canonical_name(file_name)
      if name not in table:
        if (_is_ignored(name, masked_lm, pooler)
            or (num_labels is None and name.startswith('classifier.'))):
          logging.warning('%s: ignoring tensor %s', path, file_name)
        else:
          unknown.append(file_name)
        continue
      t, w = table.pop(name), f.get_tensor(file_name)
      fix = (f'pass num_labels={w.shape[0]}, or None to train a fresh classifier'
             if t.path[0] == 'classifier' else hf_common.MATCH_CONFIG)
      hf_common.check_shape(path, file_name, w, t.hf_shape, fix)
      hf_common.set_param(params, t.path, t.to_ours(w), param_dtype)
  hf_common.check_unknown(path, unknown, _FAMILY)
  missing = [name for name in table if not name.startswith('classifier.')]
  if missing:
    logging.warning('%s lacks %d encoder or masked-LM head tensors (e.g. %s); they keep their '
                    'initial values',
                    path, len(missing), missing[0])
  if config.scan_layers:
    params = _stack_present_layers(path, params, config.num_layers)
  return params


def _stack_present_layers(path, params: dict, num_layers: int) -> dict:
  """`bert.stack_layers` for a partial import: a layer param the file lacks in every layer is left
  out (it keeps its initial value), but one it lacks in only some layers cannot be stacked."""
  encoder = params.get('bert', {})
  names = [set(_leaf_paths(encoder.get(f'layer_{i}', {}))) for i in range(num_layers)]
  for name in sorted(set().union(*names)):
    lacking = [i for i, present in enumerate(names) if name not in present]
    if lacking:
      raise UserError(f'{path} lacks layer {lacking[0]}\'s {"/".join(name)}, which other layers '
                      f'have, so the scan_layers layout cannot stack it: import with '
                      f'scan_layers=False, or use a complete checkpoint')
  if not names[0]:
    return params  # no encoder layer in the file (they all keep their initial values)
  return bert.stack_layers(params, num_layers)


def _leaf_paths(tree: dict, prefix: tuple[str, ...] = ()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _leaf_paths(value, prefix + (key,))
    else:
      yield prefix + (key,)


def _hf_tensors(params, config: BertConfig, table: list[_Tensor],
                model_name: str) -> dict[str, np.ndarray]:
  """Our params (optionally under 'params', boxed or not; stacked with config.scan_layers) ->
  {HF name: numpy array}, by `table`."""
  params = hf_common.unwrap(params)
  if config.scan_layers:
    if 'layers' not in params.get('bert', {}):
      raise ValueError(f'params lack bert/layers, which scan_layers=True implies: pass {model_name} '
                       f'params of this config')
    params = bert.unstack_layers(params, config.num_layers)
  return hf_common.hf_tensors(params, table, f'pass {model_name} params')


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
  hf_common.write(out_dir, hf_config, tensors)


def export(params, config: BertConfig, out_dir: str | os.PathLike, num_labels: int,
           id2label: dict | None = None, *,
           architecture: str = 'BertForSequenceClassification', regression: bool = False) -> None:
  """Writes params as a Hugging Face `BertForSequenceClassification` directory, or with
  architecture='BertForTokenClassification' the params of our model of that name.

  Args:
    params: the params of `BertForSequenceClassification` (optionally under a 'params' key), jax or
      numpy arrays, boxed (nn.Partitioned) or not. Must be fully addressable by this process.
    config: the model's BertConfig.
    out_dir: created if needed; config.json and model.safetensors are (over)written.
    num_labels: size of the classifier.
    id2label: {id: label name}; default {i: 'LABEL_i'} as HF.
    regression: the one output is a real-valued score (HF's problem_type 'regression': transformers
      then fits it by mean squared error).
  """
  if id2label is None:
    id2label = {i: f'LABEL_{i}' for i in range(num_labels)}
  id2label = {int(i): str(name) for i, name in id2label.items()}  # JSON may have made the ids str
  if sorted(id2label) != list(range(num_labels)):
    raise UserError(f'id2label has ids {sorted(id2label)} but there are {num_labels} labels: '
                    f'give one name for each id 0..{num_labels - 1}')
  # Of the two classifier heads only the sequence classifier reads the pooler.
  pooler = architecture == 'BertForSequenceClassification'
  tensors = _hf_tensors(params, config, _tensors(config, num_labels, pooler=pooler), architecture)
  _write(out_dir, tensors, config, architecture,
         classifier_dropout=None,
         id2label={str(i): name for i, name in sorted(id2label.items())},
         label2id={name: i for i, name in sorted(id2label.items())},
         **({'problem_type': 'regression'} if regression else {}))


def import_masked_lm_params(hf_dir: str | os.PathLike, config: BertConfig) -> dict:
  """`import_params` into the layout of `BertForMaskedLM`."""
  return import_params(hf_dir, config, masked_lm=True)


def export_masked_lm(params, config: BertConfig, out_dir: str | os.PathLike) -> None:
  """Writes `BertForMaskedLM` params as a Hugging Face `BertForMaskedLM` directory (decoder tied to
  the word embeddings, so it is not stored). Arguments as `export`."""
  tensors = _hf_tensors(params, config, _tensors(config, None, masked_lm=True), 'BertForMaskedLM')
  _write(out_dir, tensors, config, 'BertForMaskedLM', tie_word_embeddings=True)


# The per-token classifier variant of this module's interface, for `llmjax.models.FAMILIES`.
TOKEN_CLASSIFIER = types.SimpleNamespace(
    load_config=load_config, import_params=functools.partial(import_params, pooler=False),
    export=functools.partial(export, architecture='BertForTokenClassification'))

# The masked-LM variant of this module's interface, for `llmjax.models.FAMILIES`.
MASKED_LM = types.SimpleNamespace(load_config=load_config, import_params=import_masked_lm_params,
                                  export=export_masked_lm)
