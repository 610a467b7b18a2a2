"""BertForTokenClassification against transformers': logits, import from a `BertModel` with a pooler,
and export -> from_pretrained round trips."""

import dataclasses
import os

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: never touch the network

import jax
import numpy as np
import ml_collections
import pytest

from llmjax import models
from llmjax.models import bert, hf_bert

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

# The tiny random config and helpers of the sequence-classifier parity tests.
from test_hf_bert import (  # noqa: E402
    CONFIG, TOL, make_inputs, save_hf, shapes, torch_inputs, unboxed_init)

NUM_LABELS = 5
LABELS = ['O', 'B-person', 'I-person', 'B-loc', 'I-loc']


@pytest.fixture(scope='module')
def hf_tagger_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('hf_tok')
  return out, save_hf(transformers.BertForTokenClassification, out, num_labels=NUM_LABELS)


@pytest.mark.parametrize('scan_layers', [False, True])
def test_token_classifier_matches_hf(hf_tagger_dir, scan_layers):
  hf_dir, hf_model = hf_tagger_dir
  config = dataclasses.replace(CONFIG, scan_layers=scan_layers)
  params = hf_bert.TOKEN_CLASSIFIER.import_params(hf_dir, config, num_labels=NUM_LABELS)
  model = bert.BertForTokenClassification(config, NUM_LABELS)
  assert shapes(params) == shapes(unboxed_init(model))  # no pooler, every leaf in the module's layout
  inputs = make_inputs()
  logits = model.apply({'params': params}, *inputs, deterministic=True)
  assert logits.shape == (3, 10, NUM_LABELS) and logits.dtype == np.float32
  with torch.no_grad():
    expected = hf_model(**torch_inputs(*inputs)).logits.numpy()
  # Every position, padding included.
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)


def test_pretrained_encoder_with_pooler_imports_without_it(tmp_path):
  """A `BertModel` file (MiniLM's kind: no prefix, a pooler) gives the encoder and no classifier."""
  save_hf(transformers.BertModel, tmp_path)
  params = hf_bert.TOKEN_CLASSIFIER.import_params(tmp_path, CONFIG)
  init = unboxed_init(bert.BertForTokenClassification(CONFIG, NUM_LABELS))
  assert set(params) == {'bert'} and shapes(params['bert']) == shapes(init['bert'])


def test_export_loads_in_transformers_and_round_trips(tmp_path):
  model = bert.BertForTokenClassification(CONFIG, NUM_LABELS)
  params = unboxed_init(model)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  # Perturbed so zero biases and unit LN scales are exported and checked too.
  params = treedef.unflatten([x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  model_config = ml_collections.ConfigDict(
      dict(name='bert_token_classifier', init_from='', **dataclasses.asdict(CONFIG)))
  # Through the registry, as train.py exports a run's best model.
  models.export({'params': params}, model_config, tmp_path, LABELS)

  hf_model, info = transformers.BertForTokenClassification.from_pretrained(
      tmp_path, output_loading_info=True)
  assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
  assert hf_model.config.id2label == dict(enumerate(LABELS))
  assert hf_model.config.architectures == ['BertForTokenClassification']
  inputs = make_inputs()
  with torch.no_grad():
    expected = hf_model.eval()(**torch_inputs(*inputs)).logits.numpy()
  logits = model.apply({'params': params}, *inputs, deterministic=True)
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)

  reimported = hf_bert.TOKEN_CLASSIFIER.import_params(tmp_path, CONFIG, num_labels=NUM_LABELS)
  jax.tree.map(np.testing.assert_array_equal, reimported, jax.tree.map(np.asarray, params))
  assert bert.BertConfig(**hf_bert.load_config(tmp_path)) == CONFIG
