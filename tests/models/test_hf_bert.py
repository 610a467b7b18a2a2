"""Hugging Face interop: numerical parity with transformers' BERT, export/import round trips, errors.

transformers (PyTorch) is the reference here only; llmjax itself never imports it.
"""

import dataclasses
import json
import logging
import os

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: never touch the network

import jax
import numpy as np
import flax.linen as nn
import pytest
import safetensors.numpy

from llmjax.errors import UserError
from llmjax.models import bert, hf_bert

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

CONFIG = bert.BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4,
                         intermediate_size=64, max_position_embeddings=64)
NUM_LABELS = 3
TOL = 1e-4


def hf_config(**overrides):
  return transformers.BertConfig(
      vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      max_position_embeddings=64, type_vocab_size=2, hidden_act='gelu', **overrides)


def make_inputs(batch=3, length=10, seed=0):
  """Random ids, non-zero token types, and padding in the attention mask."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, 100, (batch, length), dtype=np.int32)
  types = (np.arange(length) >= 4).astype(np.int32)[None].repeat(batch, 0)
  mask = np.ones((batch, length), np.int32)
  mask[1, 6:] = 0
  mask[2, 3:] = 0
  return ids, types, mask


def torch_inputs(ids, types, mask):
  return {name: torch.tensor(x, dtype=torch.long)
          for name, x in (('input_ids', ids), ('token_type_ids', types), ('attention_mask', mask))}


def save_hf(model_cls, out_dir, **config_overrides):
  """A randomly initialised HF model, with every parameter perturbed so a bias or LN param mapped
  to the wrong place cannot hide behind its zero/one init; saved as safetensors."""
  torch.manual_seed(0)
  model = model_cls(hf_config(**config_overrides)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(out_dir)
  return model


@pytest.fixture(scope='module')
def hf_classifier_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('hf_cls')
  model = save_hf(transformers.BertForSequenceClassification, out, num_labels=NUM_LABELS)
  return out, model


@pytest.fixture(scope='module')
def hf_model_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('hf_bert')
  return out, save_hf(transformers.BertModel, out)


def unboxed_init(model):
  init = jax.jit(model.init, static_argnames='deterministic')
  return nn.unbox(init(jax.random.key(0), *make_inputs(), deterministic=True))['params']


def shapes(tree):
  return jax.tree.map(np.shape, tree)


def test_load_config(hf_classifier_dir):
  fields = hf_bert.load_config(hf_classifier_dir[0])
  assert bert.BertConfig(**fields) == CONFIG
  assert fields['num_layers'] == 2 and fields['num_heads'] == 4


@pytest.mark.parametrize('scan_layers', [False, True])
def test_classifier_matches_hf(hf_classifier_dir, scan_layers):
  hf_dir, hf_model = hf_classifier_dir
  config = dataclasses.replace(CONFIG, scan_layers=scan_layers)
  params = hf_bert.import_params(hf_dir, config, num_labels=NUM_LABELS)
  model = bert.BertForSequenceClassification(config, NUM_LABELS)
  assert shapes(params) == shapes(unboxed_init(model))  # every leaf, in exactly the module's layout
  inputs = make_inputs()
  logits = model.apply({'params': params}, *inputs, deterministic=True)
  with torch.no_grad():
    expected = hf_model(**torch_inputs(*inputs)).logits.numpy()
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize('scan_layers', [False, True])
def test_encoder_matches_hf_bert_model(hf_model_dir, scan_layers):
  hf_dir, hf_model = hf_model_dir  # BertModel: tensor names without the 'bert.' prefix
  config = dataclasses.replace(CONFIG, scan_layers=scan_layers)
  params = hf_bert.import_params(hf_dir, config)
  assert set(params) == {'bert'}
  encoder = bert.BertEncoder(config)
  assert shapes(params['bert']) == shapes(unboxed_init(encoder))
  inputs = make_inputs()
  seq, pooled = encoder.apply({'params': params['bert']}, *inputs, deterministic=True)
  with torch.no_grad():
    out = hf_model(**torch_inputs(*inputs))
  # Every position, padding included: like HF, only keys are masked.
  np.testing.assert_allclose(seq, out.last_hidden_state.numpy(), atol=TOL, rtol=0)
  np.testing.assert_allclose(pooled, out.pooler_output.numpy(), atol=TOL, rtol=0)


def test_export_loads_in_transformers_and_round_trips(tmp_path):
  model = bert.BertForSequenceClassification(CONFIG, NUM_LABELS)
  params = nn.unbox(jax.jit(model.init, static_argnames='deterministic')(
      jax.random.key(1), *make_inputs(), deterministic=True))['params']
  # Perturb every leaf so zero biases and unit LN scales are exported and checked too.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = treedef.unflatten([x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  boxed = jax.tree.map(lambda x, box: box.replace_boxed(x), params,
                       model.init(jax.random.key(0), *make_inputs(), deterministic=True)['params'],
                       is_leaf=lambda x: isinstance(x, nn.Partitioned))
  id2label = {0: 'negative', 1: 'neutral', 2: 'positive'}
  hf_bert.export({'params': boxed}, CONFIG, tmp_path, NUM_LABELS, id2label=id2label)

  hf_model, info = transformers.BertForSequenceClassification.from_pretrained(
      tmp_path, output_loading_info=True)
  assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
  assert hf_model.config.id2label == id2label and hf_model.config.hidden_act == 'gelu'
  inputs = make_inputs()
  with torch.no_grad():
    expected = hf_model.eval()(**torch_inputs(*inputs)).logits.numpy()
  logits = model.apply({'params': params}, *inputs, deterministic=True)
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)

  reimported = hf_bert.import_params(tmp_path, CONFIG, num_labels=NUM_LABELS)
  jax.tree.map(np.testing.assert_array_equal, reimported, jax.tree.map(np.asarray, params))
  assert bert.BertConfig(**hf_bert.load_config(tmp_path)) == CONFIG


def test_scan_layers_import_and_export_round_trip(tmp_path, hf_classifier_dir):
  hf_dir, _ = hf_classifier_dir
  config = dataclasses.replace(CONFIG, scan_layers=True)
  params = hf_bert.import_params(hf_dir, config, num_labels=NUM_LABELS)
  assert 'layers' in params['bert'] and not any(k.startswith('layer_') for k in params['bert'])
  assert params['bert']['layers']['attention']['q']['kernel'].shape == (2, 32, 4, 8)
  # The stacked layout is the unstacked import, restacked.
  unstacked = hf_bert.import_params(hf_dir, CONFIG, num_labels=NUM_LABELS)
  jax.tree.map(np.testing.assert_array_equal, params, bert.stack_layers(unstacked, 2))
  hf_bert.export({'params': params}, config, tmp_path, NUM_LABELS)
  original = safetensors.numpy.load_file(hf_dir / 'model.safetensors')
  exported = safetensors.numpy.load_file(tmp_path / 'model.safetensors')
  assert set(exported) <= set(original) and len(exported) == 5 + 2 * 16 + 2 + 2
  for name, x in exported.items():
    np.testing.assert_array_equal(x, original[name], err_msg=name)
  with pytest.raises(ValueError, match='bert/layers'):
    hf_bert.export(unstacked, config, tmp_path, NUM_LABELS)


def test_scan_layers_refuses_a_layer_missing_from_some_layers(tmp_path, hf_model_dir):
  tensors = safetensors.numpy.load_file(hf_model_dir[0] / 'model.safetensors')
  del tensors['encoder.layer.1.output.dense.bias']
  safetensors.numpy.save_file(tensors, tmp_path / 'model.safetensors', metadata={'format': 'pt'})
  config = dataclasses.replace(CONFIG, scan_layers=True)
  msg = one_line_error('lacks layer 1', hf_bert.import_params, tmp_path, config)
  assert 'mlp/wo/bias' in msg and 'scan_layers=False' in msg
  # Unstacked, the missing tensor just keeps its initial value.
  assert 'bias' not in hf_bert.import_params(tmp_path, CONFIG)['bert']['layer_1']['mlp']['wo']


def test_checkpoint_extras_and_classifier_choice(tmp_path, hf_classifier_dir, caplog):
  tensors = safetensors.numpy.load_file(hf_classifier_dir[0] / 'model.safetensors')
  tensors['cls.predictions.bias'] = np.zeros(100, np.float32)  # pre-training head: ignored
  tensors['bert.embeddings.position_ids'] = np.arange(64)[None]  # old HF buffer: ignored
  # TF-converted checkpoints name LayerNorm parameters gamma/beta.
  tensors['bert.embeddings.LayerNorm.gamma'] = tensors.pop('bert.embeddings.LayerNorm.weight')
  safetensors.numpy.save_file(tensors, tmp_path / 'model.safetensors', metadata={'format': 'pt'})
  with caplog.at_level(logging.WARNING):
    params = hf_bert.import_params(tmp_path, CONFIG)  # num_labels=None: skip the classifier
  assert set(params) == {'bert'}
  assert 'cls.predictions.bias' in caplog.text and 'classifier.weight' in caplog.text
  np.testing.assert_array_equal(params['bert']['embeddings']['ln']['scale'],
                                tensors['bert.embeddings.LayerNorm.gamma'])


def one_line_error(match, fn, *args, **kwargs):
  with pytest.raises(UserError, match=match) as e:
    fn(*args, **kwargs)
  assert '\n' not in str(e.value)
  return str(e.value)


def test_user_errors(tmp_path, hf_classifier_dir):
  hf_dir = hf_classifier_dir[0]
  one_line_error('does not exist', hf_bert.import_params, tmp_path / 'nope', CONFIG)
  one_line_error('does not exist', hf_bert.load_config, tmp_path / 'nope')
  one_line_error('config.json is missing', hf_bert.load_config, tmp_path)
  one_line_error('model.safetensors is missing', hf_bert.import_params, tmp_path, CONFIG)
  (tmp_path / 'pytorch_model.bin').write_bytes(b'not unpickled')
  one_line_error('never unpickles.*save_pretrained', hf_bert.import_params, tmp_path, CONFIG)
  (tmp_path / 'config.json').write_text('{"hidden_size": ')
  one_line_error('not valid JSON', hf_bert.load_config, tmp_path)
  config = json.loads((hf_dir / 'config.json').read_text())
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'hidden_act': 'gelu_new'}))
  one_line_error("hidden_act='gelu_new'", hf_bert.load_config, tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'model_type': 'roberta'}))
  one_line_error("model_type='roberta'", hf_bert.load_config, tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'num_hidden_layers': '2'}))
  one_line_error('num_hidden_layers', hf_bert.load_config, tmp_path)
  (tmp_path / 'model.safetensors').write_bytes(b'garbage')
  one_line_error('cannot read', hf_bert.import_params, tmp_path, CONFIG)

  msg = one_line_error('shape', hf_bert.import_params, hf_dir,
                       dataclasses.replace(CONFIG, intermediate_size=48))
  assert 'bert.encoder.layer.0.intermediate.dense' in msg
  msg = one_line_error('shape', hf_bert.import_params, hf_dir, CONFIG, num_labels=2)
  assert 'classifier' in msg and f'num_labels={NUM_LABELS}' in msg
  one_line_error('does not know', hf_bert.import_params, hf_dir,
                 dataclasses.replace(CONFIG, num_layers=1))


def test_minilm_reproduces_known_sentence_embedding():
  from llmjax import assets
  hf_dir = assets.cached('all-MiniLM-L6-v2')
  if hf_dir is None:
    pytest.skip('run `python -m llmjax.assets fetch all-MiniLM-L6-v2`')
  import tokenizers
  config = bert.BertConfig(**hf_bert.load_config(hf_dir))
  params = hf_bert.import_params(hf_dir, config)
  assert 'pooler' in params['bert'] and 'classifier' not in params
  encoding = tokenizers.Tokenizer.from_file(str(hf_dir / 'tokenizer.json')).encode(
      'This is an example sentence')
  ids, types, mask = (np.array([x], np.int32)
                      for x in (encoding.ids, encoding.type_ids, encoding.attention_mask))
  seq, _ = bert.BertEncoder(config).apply({'params': params['bert']}, ids, types, mask,
                                          deterministic=True)
  # sentence-transformers: mean over real tokens, then L2 normalisation.
  emb = (seq * mask[..., None]).sum(1) / mask.sum()
  emb = np.asarray(emb / np.linalg.norm(emb))[0]
  assert emb.shape == (384,)
  np.testing.assert_allclose(emb[:5], [0.067657, 0.063496, 0.048713, 0.079305, 0.037448], atol=1e-4)
