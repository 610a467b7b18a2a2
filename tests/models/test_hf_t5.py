"""Hugging Face T5 interop: logits, greedy and beam generations equal transformers', export round
trips.

transformers (PyTorch) is the reference here only; llmjax itself never imports it. Both T5 v1.0
(ReLU, tied and scaled head) and v1.1 (gated-GELU, unscaled head) layouts are checked.
"""

import dataclasses
import json
import os

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: never touch the network

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest
import safetensors.numpy

from llmjax import decoding
from llmjax.errors import UserError
from llmjax.models import hf_t5, t5

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

VOCAB = 64
TOL = 1e-4
# Tiny, with heads * d_kv != d_model (as in v1.1) and few buckets so distances reach the log bins.
TINY = dict(vocab_size=VOCAB, d_model=16, d_kv=6, d_ff=32, num_layers=2, num_decoder_layers=3,
            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20)
VARIANTS = {
    'v1_0': dict(feed_forward_proj='relu'),
    'v1_1': dict(feed_forward_proj='gated-gelu', tie_word_embeddings=False),
}


def our_config(variant: str) -> t5.T5Config:
  # transformers 5 ties every T5 head and keeps only the scaling switch (see hf_t5's docstring).
  scale = variant == 'v1_0'
  return t5.T5Config(**TINY, feed_forward=VARIANTS[variant]['feed_forward_proj'],
                     scale_decoder_outputs=scale, dropout_rate=0.0)


def save_hf(out_dir, variant, noise=0.1, seed=0, **overrides):
  """A random tiny T5ForConditionalGeneration, every parameter perturbed by N(0, noise^2) (a unit
  norm scale cannot hide a misplaced tensor), saved as safetensors."""
  torch.manual_seed(seed)
  hf_config = transformers.T5Config(**{**TINY, **overrides}, **VARIANTS[variant], dropout_rate=0.0,
                                    decoder_start_token_id=0)
  model = transformers.T5ForConditionalGeneration(hf_config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(noise * torch.randn_like(p))
  model.save_pretrained(out_dir)
  return model


@pytest.fixture(scope='module', params=list(VARIANTS))
def hf_dir(request, tmp_path_factory):
  out = tmp_path_factory.mktemp(f'hf_t5_{request.param}')
  return request.param, out, save_hf(out, request.param)


@pytest.fixture(scope='module', params=list(VARIANTS))
def hf_gen_dir(request, tmp_path_factory):
  """A more perturbed model: the tiny one above greedily repeats one token, which would hide a wrong
  relative position in the cached steps. (Its logits only agree to ~1e-3: the larger weights amplify
  float32 rounding, which does not move the argmax.)"""
  out = tmp_path_factory.mktemp(f'hf_t5_gen_{request.param}')
  return request.param, out, save_hf(out, request.param, noise=0.5, seed=3)


def inputs(batch=3, length=9, dec_length=6, seed=0):
  """Random source ids with a right-padded mask (rows of 9, 6 and 3 real tokens) and decoder ids
  starting with the start token 0."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(2, VOCAB, (batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[1, 6:] = 0
  mask[2, 3:] = 0
  ids = ids * mask
  dec = rng.integers(2, VOCAB, (batch, dec_length))
  dec[:, 0] = 0
  return ids, mask, dec


def test_load_config(hf_dir):
  variant, path, _ = hf_dir
  assert t5.T5Config(**hf_t5.load_config(path), dropout_rate=0.0) == our_config(variant)


@pytest.mark.parametrize('scan_layers', [False, True])
def test_logits_match_hf_with_padding(hf_dir, scan_layers):
  variant, path, hf_model = hf_dir
  config = dataclasses.replace(our_config(variant), scan_layers=scan_layers)
  params = hf_t5.import_params(path, config)
  ids, mask, dec = inputs()
  with torch.no_grad():
    expected = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        decoder_input_ids=torch.tensor(dec)).logits.numpy()
  ours = t5.T5(config).apply({'params': params}, ids, dec, input_mask=mask, deterministic=True)
  np.testing.assert_allclose(ours, expected, atol=TOL, rtol=0)


def test_greedy_generation_matches_hf(hf_gen_dir):
  variant, path, hf_model = hf_gen_dir
  config = our_config(variant)
  params = hf_t5.import_params(path, config)
  ids, mask, _ = inputs(seed=1)
  n = 8
  with torch.no_grad():
    expected = hf_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 do_sample=False, max_new_tokens=n,
                                 # HF sizes its cache by the encoder's depth, which breaks on our
                                 # deeper decoder; without it HF recomputes every step.
                                 use_cache=False).numpy()[:, 1:]  # drop the start token
  ours = np.asarray(decoding.seq2seq_generate(t5.T5(config), params, ids, mask, max_new_tokens=n,
                                              eos_id=1))
  assert expected.shape[1] >= 1 and len(np.unique(expected)) > 3  # not one repeated token
  np.testing.assert_array_equal(ours[:, :expected.shape[1]], expected)
  # HF stops early only once every row has produced EOS.
  assert (ours[:, expected.shape[1]:] == 0).all()


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_greedy_generation_matches_hf_with_its_cache(variant, tmp_path):
  """HF's own cached `generate` (default use_cache), on a symmetric model its cache supports."""
  hf_model = save_hf(tmp_path, variant, noise=0.5, seed=3, num_decoder_layers=2)
  config = dataclasses.replace(our_config(variant), num_decoder_layers=2)
  params = hf_t5.import_params(tmp_path, config)
  ids, mask, _ = inputs(seed=1)
  with torch.no_grad():
    expected = hf_model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 do_sample=False, max_new_tokens=8).numpy()[:, 1:]
  ours = np.asarray(decoding.seq2seq_generate(t5.T5(config), params, ids, mask, max_new_tokens=8,
                                              eos_id=1))
  assert len(np.unique(expected)) > 3
  np.testing.assert_array_equal(ours[:, :expected.shape[1]], expected)



@pytest.mark.parametrize('length_penalty,early_stopping', [(1.0, False), (2.0, True), (0.6, True),
                                                           (0.5, 'never')])
def test_beam_search_matches_hf(hf_gen_dir, length_penalty, early_stopping):
  variant, path, hf_model = hf_gen_dir
  config = our_config(variant)
  params = hf_t5.import_params(path, config)
  model = t5.T5(config)
  ids, mask, _ = inputs(seed=1)  # right-padded rows of 9, 6 and 3 real tokens
  n = 8
  greedy = np.asarray(decoding.seq2seq_generate(model, params, ids, mask, max_new_tokens=n))
  eos = int(greedy[0, 3])  # a token the model likes, so hypotheses finish at different lengths
  with torch.no_grad():
    out = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                            num_beams=4, max_new_tokens=n, length_penalty=length_penalty,
                            early_stopping=early_stopping, eos_token_id=eos, pad_token_id=0,
                            use_cache=False,  # as in test_greedy_generation_matches_hf
                            output_scores=True, return_dict_in_generate=True)
  expected = out.sequences.numpy()[:, 1:]  # drop the start token
  # HF's beam search fills after EOS with `pad_token_id or eos_token_id`, i.e. with EOS for T5's pad
  # id 0; ours pads.
  after_eos = np.cumsum(expected == eos, axis=1) - (expected == eos) > 0
  expected = np.where(after_eos, 0, expected)
  expected = np.pad(expected, ((0, 0), (0, n - expected.shape[1])))
  tokens, scores = decoding.seq2seq_beam_search(model, params, ids, mask, num_beams=4,
                                                max_new_tokens=n, eos_id=eos,
                                                length_penalty=length_penalty,
                                                early_stopping=early_stopping)
  np.testing.assert_array_equal(tokens, expected)
  np.testing.assert_allclose(scores, out.sequences_scores.numpy(), atol=1e-4)
  if length_penalty <= 1.0:  # (2.0 favours long hypotheses: v1.1's best ones never end)
    assert np.any(np.asarray(tokens) == eos)  # EOS handling was exercised
  assert np.any(np.asarray(tokens) != greedy)  # and the beams found something greedy did not


def test_export_loads_in_transformers_with_same_logits(hf_dir, tmp_path):
  variant, path, hf_model = hf_dir
  config = our_config(variant)
  params = hf_t5.import_params(path, config)
  hf_t5.export({'params': params}, config, tmp_path)
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
  ids, mask, dec = inputs()
  args = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
              decoder_input_ids=torch.tensor(dec))
  with torch.no_grad():
    np.testing.assert_allclose(reloaded(**args).logits.numpy(), hf_model(**args).logits.numpy(),
                               atol=1e-6, rtol=0)
  assert t5.T5Config(**hf_t5.load_config(tmp_path), dropout_rate=0.0) == config


def test_scan_layers_import_and_export_round_trip(hf_dir, tmp_path):
  """HF file -> the stacked layout (the unstacked import, restacked) -> the same HF tensors."""
  variant, path, _ = hf_dir
  config = dataclasses.replace(our_config(variant), scan_layers=True, remat='full')
  params = hf_t5.import_params(path, config)
  for stack, layers in (('encoder', 2), ('decoder', 3)):
    assert not any(k.startswith('block_') for k in params[stack])
    assert params[stack]['layers']['self_attention']['q']['kernel'].shape == (layers, 16, 4, 6)
    assert params[stack]['relative_attention_bias']['rel_embedding'].shape == (8, 4)
  unstacked = hf_t5.import_params(path, our_config(variant))
  jax.tree.map(np.testing.assert_array_equal, params, t5.stack_layers(unstacked, config))
  hf_t5.export({'params': params}, config, tmp_path)
  original = safetensors.numpy.load_file(path / hf_t5.WEIGHTS)
  exported = safetensors.numpy.load_file(tmp_path / hf_t5.WEIGHTS)
  assert set(exported) == set(original) - set(hf_t5._IGNORED)
  for name, x in exported.items():
    np.testing.assert_array_equal(x, original[name], err_msg=name)
  with pytest.raises(ValueError, match='layers'):
    hf_t5.export(unstacked, config, tmp_path)


def test_untied_head_round_trips(tmp_path):
  """v1.1's separate lm_head (the original uploads' layout): export writes it, import reads it."""
  config = t5.T5Config(**TINY, feed_forward='gated-gelu', tie_word_embeddings=False,
                       dropout_rate=0.0)
  model = t5.T5(config)
  ids, mask, dec = inputs()
  params = model.init(jax.random.key(1), ids, dec, deterministic=True)['params']
  hf_t5.export(params, config, tmp_path)
  written = safetensors.numpy.load_file(tmp_path / hf_t5.WEIGHTS)
  assert written['lm_head.weight'].shape == (VOCAB, 16)
  assert 'encoder.block.0.layer.1.DenseReluDense.wi_1.weight' in written
  loaded = t5.T5Config(**hf_t5.load_config(tmp_path), dropout_rate=0.0)
  assert not loaded.tie_word_embeddings and not loaded.scales_decoder_outputs
  back = hf_t5.import_params(tmp_path, loaded)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, nn.unbox(params)))
  np.testing.assert_array_equal(model.apply({'params': back}, ids, dec, input_mask=mask,
                                            deterministic=True),
                                model.apply({'params': params}, ids, dec, input_mask=mask,
                                            deterministic=True))


def test_param_counts_match_transformers():
  """t5-small: 60,506,624 as transformers; v1.1-small: ours untied vs transformers' (meta device)."""
  def ours(config):
    shapes = jax.eval_shape(lambda: t5.T5(config).init(
        jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32),
        deterministic=True))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))

  def hf(**kw):
    with torch.device('meta'):
      model = transformers.T5ForConditionalGeneration(transformers.T5Config(**kw))
    return sum(p.numel() for p in model.parameters())  # shared tensors counted once

  assert ours(t5.T5Config()) == hf() == 60_506_624
  v1_1 = dict(d_ff=1024, num_layers=8, num_heads=6, feed_forward_proj='gated-gelu')
  # transformers 5 ties the v1.1 head; ours keeps it separate, one more [vocab, d_model] matrix.
  assert ours(t5.t5_v1_1()) == hf(**v1_1) + 32128 * 512 == 76_961_152


def test_refusals(tmp_path):
  with pytest.raises(UserError, match='no Hugging Face T5 equivalent'):
    hf_t5.export({}, t5.transformer_base(), tmp_path)
  with pytest.raises(UserError, match='does not exist'):
    hf_t5.load_config(tmp_path / 'missing')
  (tmp_path / hf_t5.CONFIG).write_text(json.dumps({'model_type': 't5', 'feed_forward_proj': 'tanh'}))
  with pytest.raises(UserError, match='feed_forward_proj'):
    hf_t5.load_config(tmp_path)
  (tmp_path / hf_t5.CONFIG).write_text(json.dumps({'model_type': 'bart'}))
  with pytest.raises(UserError, match='model_type'):
    hf_t5.load_config(tmp_path)
  (tmp_path / hf_t5.CONFIG).write_text(json.dumps({'num_layers': 2.5}))
  with pytest.raises(UserError, match='num_layers'):
    hf_t5.load_config(tmp_path)
  (tmp_path / hf_t5.CONFIG).write_text(json.dumps({'layer_norm_epsilon': 'small'}))
  with pytest.raises(UserError, match='layer_norm_epsilon'):
    hf_t5.load_config(tmp_path)
  (tmp_path / hf_t5.CONFIG).write_text(json.dumps({'tie_word_embeddings': 'yes'}))
  with pytest.raises(UserError, match='tie_word_embeddings'):
    hf_t5.load_config(tmp_path)
  with pytest.raises(UserError, match='model.safetensors is missing'):
    hf_t5.import_params(tmp_path, our_config('v1_0'))


def test_import_refuses_mismatched_config(hf_dir):
  variant, path, _ = hf_dir
  with pytest.raises(UserError, match='shape'):
    hf_t5.import_params(path, dataclasses.replace(our_config(variant), d_ff=8))
