"""BERT's masked-LM head: parity with transformers' `BertForMaskedLM`, Hugging Face import/export,
packed (segment-masked) rows, and the 'bert_mlm' registry family.

transformers (PyTorch) is the reference here only; llmjax itself never imports it.
"""

import dataclasses
import json
import logging
import os

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: never touch the network

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest
import safetensors.numpy

from llmjax import models
from llmjax.models import bert, hf_bert

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

CONFIG = bert.BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4,
                         intermediate_size=64, max_position_embeddings=64)
TOL = 1e-4


def hf_config():
  return transformers.BertConfig(
      vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      max_position_embeddings=64, type_vocab_size=2, hidden_act='gelu')


def make_inputs(batch=3, length=10, seed=0):
  """Random ids, non-zero token types, and padding in the attention mask."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, 100, (batch, length), dtype=np.int32)
  types = (np.arange(length) >= 4).astype(np.int32)[None].repeat(batch, 0)
  mask = np.ones((batch, length), np.int32)
  mask[1, 6:] = 0
  mask[2, 3:] = 0
  return ids, types, mask


def hf_logits(model, ids, types, mask):
  with torch.no_grad():
    out = model(**{name: torch.tensor(x, dtype=torch.long) for name, x in
                   (('input_ids', ids), ('token_type_ids', types), ('attention_mask', mask))})
  return (out.logits if hasattr(out, 'logits') else out.prediction_logits).numpy()


def save_hf(model_cls, out_dir):
  """A random HF model with every parameter perturbed (so a zero bias or unit LN scale mapped to the
  wrong place shows), saved as safetensors."""
  torch.manual_seed(0)
  model = model_cls(hf_config()).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(out_dir)
  return model


@pytest.fixture(scope='module')
def hf_mlm_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('hf_mlm')
  return out, save_hf(transformers.BertForMaskedLM, out)


def unboxed_init(model):
  init = jax.jit(model.init, static_argnames='deterministic')
  return nn.unbox(init(jax.random.key(0), *make_inputs(), deterministic=True))['params']


@pytest.mark.parametrize('scan_layers', [False, True])
def test_masked_lm_matches_hf(hf_mlm_dir, scan_layers):
  hf_dir, hf_model = hf_mlm_dir
  config = dataclasses.replace(CONFIG, scan_layers=scan_layers)
  params = hf_bert.import_params(hf_dir, config, masked_lm=True)
  model = bert.BertForMaskedLM(config)
  # Every leaf, in exactly the module's layout: no pooler, the head under 'predictions'.
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, unboxed_init(model))
  assert 'pooler' not in params['bert']
  inputs = make_inputs()
  logits = model.apply({'params': params}, *inputs, deterministic=True)
  assert logits.dtype == jnp.float32 and logits.shape == (3, 10, 100)
  # Every position, padding included: like HF, only keys are masked.
  np.testing.assert_allclose(logits, hf_logits(hf_model, *inputs), atol=TOL, rtol=0)


def test_export_loads_in_transformers_and_round_trips(tmp_path, hf_mlm_dir):
  params = nn.unbox(unboxed_init(bert.BertForMaskedLM(CONFIG)))
  # Perturb the fresh head so zero biases and unit scales cannot hide a wrong mapping.
  params = jax.tree.map(lambda x: x + 0.05 * np.random.default_rng(x.size).normal(size=x.shape)
                        .astype(np.float32), params)
  hf_bert.export_masked_lm(params, CONFIG, tmp_path)
  hf_config_json = json.loads((tmp_path / 'config.json').read_text())
  assert hf_config_json['architectures'] == ['BertForMaskedLM']
  hf_model = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
  inputs = make_inputs(seed=1)
  ours = bert.BertForMaskedLM(CONFIG).apply({'params': params}, *inputs, deterministic=True)
  np.testing.assert_allclose(ours, hf_logits(hf_model, *inputs), atol=TOL, rtol=0)
  # The decoder is tied: transformers took it from the word embeddings.
  np.testing.assert_array_equal(
      hf_model.cls.predictions.decoder.weight.detach().numpy(),
      params['bert']['embeddings']['word_embeddings']['embedding'])
  back = hf_bert.import_params(tmp_path, CONFIG, masked_lm=True)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_scan_layers_export_round_trips(tmp_path, hf_mlm_dir):
  config = dataclasses.replace(CONFIG, scan_layers=True)
  params = hf_bert.import_params(hf_mlm_dir[0], config, masked_lm=True)
  assert params['bert']['layers']['mlp']['wi']['kernel'].shape == (2, 32, 64)
  hf_bert.export_masked_lm(params, config, tmp_path)
  original = safetensors.numpy.load_file(hf_mlm_dir[0] / 'model.safetensors')
  exported = safetensors.numpy.load_file(tmp_path / 'model.safetensors')
  assert set(exported) <= set(original)
  for name, x in exported.items():
    np.testing.assert_array_equal(x, original[name], err_msg=name)
  jax.tree.map(np.testing.assert_array_equal, hf_bert.import_params(tmp_path, config, masked_lm=True),
               params)


def test_imports_pretraining_checkpoint_skipping_nsp_and_pooler(tmp_path, caplog):
  hf_model = save_hf(transformers.BertForPreTraining, tmp_path)
  with caplog.at_level(logging.WARNING):
    params = hf_bert.MASKED_LM.import_params(tmp_path, CONFIG)
  assert 'cls.seq_relationship.weight' in caplog.text and 'bert.pooler.dense.weight' in caplog.text
  inputs = make_inputs(seed=2)
  logits = bert.BertForMaskedLM(CONFIG).apply({'params': params}, *inputs, deterministic=True)
  np.testing.assert_allclose(logits, hf_logits(hf_model, *inputs), atol=TOL, rtol=0)


def test_classifier_import_still_skips_masked_lm_head(hf_mlm_dir, caplog):
  """A classifier started from a masked-LM checkpoint takes its encoder; the pooler it lacks keeps
  its initial values."""
  with caplog.at_level(logging.WARNING):
    params = hf_bert.import_params(hf_mlm_dir[0], CONFIG)
  assert set(params) == {'bert'} and 'pooler' not in params['bert']
  assert 'cls.predictions.bias' in caplog.text and 'bert.pooler.dense.weight' in caplog.text
  with pytest.raises(ValueError, match='num_labels=None'):
    hf_bert.import_params(hf_mlm_dir[0], CONFIG, 2, masked_lm=True)


def test_packed_segments_compute_each_piece_alone():
  """A row holding two pieces (segments 1, 2, then padding 0) gives each piece the logits it has
  alone: attention stays within a segment and positions restart."""
  model = bert.BertForMaskedLM(CONFIG)
  params = unboxed_init(model)
  rng = np.random.default_rng(3)
  a, b = rng.integers(1, 100, 4), rng.integers(1, 100, 3)
  row = np.concatenate([a, b, [0, 0, 0]])[None].astype(np.int32)
  segment_ids = np.array([[1] * 4 + [2] * 3 + [0] * 3], np.int32)
  zeros = np.zeros_like(row)
  packed = model.apply({'params': params}, row, zeros, segment_ids > 0, segment_ids=segment_ids,
                       deterministic=True)
  for piece, where in ((a, slice(0, 4)), (b, slice(4, 7))):
    ids = piece[None].astype(np.int32)
    alone = model.apply({'params': params}, ids, np.zeros_like(ids), np.ones_like(ids),
                        deterministic=True)
    np.testing.assert_allclose(packed[:, where], alone, atol=1e-5, rtol=0)
  # Explicit positions equal the ones derived from the segment ids.
  positions = np.array([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2]], np.int32)
  np.testing.assert_allclose(
      model.apply({'params': params}, row, zeros, segment_ids > 0, segment_ids=segment_ids,
                  positions=positions, deterministic=True), packed, atol=1e-6, rtol=0)


def test_registry_family_builds_and_exports(tmp_path):
  cfg = models.model_config('bert_mlm', vocab_size=100, hidden_size=32, num_layers=1, num_heads=4,
                            intermediate_size=64, max_position_embeddings=64)
  model = models.build(cfg)
  assert isinstance(model, bert.BertForMaskedLM)
  params = unboxed_init(model)
  models.export(params, cfg, tmp_path)
  assert json.loads((tmp_path / 'config.json').read_text())['architectures'] == ['BertForMaskedLM']
  cfg.init_from = str(tmp_path)
  back = models.pretrained(cfg)
  jax.tree.map(np.testing.assert_array_equal, back, params)
