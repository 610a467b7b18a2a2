"""Hugging Face GPT-2 interop: logits and greedy generations equal transformers', export round trips.

transformers (PyTorch) is the reference here only; llmjax itself never imports it.
"""

import dataclasses
import json
import os

os.environ['HF_HUB_OFFLINE'] = '1'  # before transformers is imported: never touch the network

import jax
import numpy as np
import pytest
import safetensors.numpy

from llmjax import decoding
from llmjax.errors import UserError
from llmjax.models import gpt, hf_gpt2

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

VOCAB = 64
CONFIG = gpt.GPTConfig(vocab_size=VOCAB, max_position_embeddings=32, hidden_size=16, num_layers=2,
                       num_heads=4, intermediate_size=64)
TOL = 1e-4


def save_hf(out_dir, **overrides):
  """A random tiny GPT2LMHeadModel, every parameter perturbed (so a misplaced zero bias or unit LN
  scale cannot hide), saved as safetensors."""
  torch.manual_seed(0)
  hf_config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2,
                                      n_head=4, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
                                      **overrides)
  model = transformers.GPT2LMHeadModel(hf_config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(out_dir)
  return model


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp('hf_gpt2')
  return out, save_hf(out)


def inputs(batch=3, length=10, seed=0):
  """Random ids and a LEFT-padded attention mask (rows of 10, 7 and 4 real tokens)."""
  ids = np.random.default_rng(seed).integers(0, VOCAB - 1, (batch, length))
  mask = np.ones((batch, length), np.int64)
  mask[1, :3] = 0
  mask[2, :6] = 0
  return ids, mask


def test_load_config(hf_dir):
  assert gpt.GPTConfig(**hf_gpt2.load_config(hf_dir[0])) == CONFIG


def test_logits_match_hf_with_and_without_padding(hf_dir):
  path, hf_model = hf_dir
  params = hf_gpt2.import_params(path, CONFIG)
  model = gpt.GPT(CONFIG)
  ids, mask = inputs()
  with torch.no_grad():
    expected = hf_model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(model.apply({'params': params}, ids, deterministic=True), expected,
                             atol=TOL, rtol=0)
  # Left padding: HF takes positions from the mask as generate does; padding = our segment 0.
  positions = np.maximum(mask.cumsum(1) - 1, 0)
  with torch.no_grad():
    expected = hf_model(torch.tensor(ids), attention_mask=torch.tensor(mask),
                        position_ids=torch.tensor(positions)).logits.numpy()
  ours = model.apply({'params': params}, ids, segment_ids=mask, deterministic=True)
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(ours)[real], expected[real], atol=TOL, rtol=0)


def test_scan_layers_import_and_export(tmp_path, hf_dir):
  path, hf_model = hf_dir
  config = dataclasses.replace(CONFIG, scan_layers=True)
  params = hf_gpt2.import_params(path, config)
  assert set(params) == {'wte', 'wpe', 'layers', 'ln_f'}
  assert params['layers']['attn']['q']['kernel'].shape == (2, 16, 4, 4)
  ids, _ = inputs()
  with torch.no_grad():
    expected = hf_model(torch.tensor(ids)).logits.numpy()
  logits = gpt.GPT(config).apply({'params': params}, ids, deterministic=True)
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)
  hf_gpt2.export(params, config, tmp_path)
  original = safetensors.numpy.load_file(path / 'model.safetensors')
  exported = safetensors.numpy.load_file(tmp_path / 'model.safetensors')
  assert set(exported) <= set(original)
  for name, x in exported.items():
    np.testing.assert_array_equal(x, original[name], err_msg=name)


def test_greedy_generation_matches_hf(hf_dir):
  path, hf_model = hf_dir
  params = hf_gpt2.import_params(path, CONFIG)
  ids, mask = inputs()
  new = 12
  with torch.no_grad():
    expected = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 do_sample=False, max_new_tokens=new, min_new_tokens=new,
                                 pad_token_id=0).numpy()[:, ids.shape[1]:]
  ours = decoding.generate(gpt.GPT(CONFIG), params, ids, mask, max_new_tokens=new)
  np.testing.assert_array_equal(ours, expected)


def test_export_loads_in_transformers_and_round_trips(tmp_path, hf_dir):
  params = hf_gpt2.import_params(hf_dir[0], CONFIG)
  # Perturb so the exported tensors differ from the fixture's file.
  params = jax.tree.map(lambda x: x + 0.01, params)
  for config in (CONFIG, dataclasses.replace(CONFIG, tie_embeddings=False)):
    ps = dict(params)
    if not config.tie_embeddings:
      ps['lm_head'] = {'kernel': np.asarray(params['wte']['embedding']).T * 0.5}
    out = tmp_path / str(config.tie_embeddings)
    hf_gpt2.export({'params': ps}, config, out)
    hf_model, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    ids, _ = inputs()
    with torch.no_grad():
      expected = hf_model.eval()(torch.tensor(ids)).logits.numpy()
    logits = gpt.GPT(config).apply({'params': ps}, ids, deterministic=True)
    np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)
    assert gpt.GPTConfig(**hf_gpt2.load_config(out)) == config
    reimported = hf_gpt2.import_params(out, config)
    jax.tree.map(np.testing.assert_allclose, reimported, jax.tree.map(np.asarray, ps))


def test_old_buffers_and_gpt2model_names(tmp_path, hf_dir):
  tensors = safetensors.numpy.load_file(hf_dir[0] / 'model.safetensors')
  # The original 'gpt2' upload: GPT2Model names without 'transformer.', plus mask buffers.
  tensors = {k.removeprefix('transformer.'): v for k, v in tensors.items()}
  tensors['h.0.attn.bias'] = np.tril(np.ones((1, 1, 32, 32), np.float32))
  tensors['h.0.attn.masked_bias'] = np.array(-1e4, np.float32)
  safetensors.numpy.save_file(tensors, tmp_path / 'model.safetensors', metadata={'format': 'pt'})
  params = hf_gpt2.import_params(tmp_path, CONFIG)
  np.testing.assert_array_equal(params['h_0']['attn']['k']['kernel'].reshape(16, 16),
                                tensors['h.0.attn.c_attn.weight'][:, 16:32])


def test_user_errors(tmp_path, hf_dir):
  with pytest.raises(UserError, match='model.safetensors is missing'):
    hf_gpt2.import_params(tmp_path, CONFIG)
  config = json.loads((hf_dir[0] / 'config.json').read_text())
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'activation_function': 'tanh'}))
  with pytest.raises(UserError, match="activation_function='tanh'"):
    hf_gpt2.load_config(tmp_path)
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'scale_attn_weights': False}))
  with pytest.raises(UserError, match='scale_attn_weights'):
    hf_gpt2.load_config(tmp_path)
  with pytest.raises(UserError, match='shape'):
    hf_gpt2.import_params(hf_dir[0], dataclasses.replace(CONFIG, intermediate_size=48))
  with pytest.raises(UserError, match="position='rotary' has no Hugging Face"):
    hf_gpt2.export({}, dataclasses.replace(CONFIG, position='rotary'), tmp_path)


@pytest.mark.parametrize('length_penalty,early_stopping', [(1.0, False), (2.0, True), (0.5, 'never'),
                                                           (-1.0, False)])
def test_beam_search_matches_hf(hf_dir, length_penalty, early_stopping):
  path, hf_model = hf_dir
  params = hf_gpt2.import_params(path, CONFIG)
  model = gpt.GPT(CONFIG)
  ids, mask = inputs()
  new, pad = 10, 1
  greedy = np.asarray(decoding.generate(model, params, ids, mask, max_new_tokens=new))
  eos = int(greedy[0, 3])  # a token the model likes, so hypotheses finish at different lengths
  with torch.no_grad():
    out = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                            num_beams=3, max_new_tokens=new, length_penalty=length_penalty,
                            early_stopping=early_stopping, eos_token_id=eos, pad_token_id=pad,
                            output_scores=True, return_dict_in_generate=True)
  expected = out.sequences.numpy()[:, ids.shape[1]:]
  expected = np.pad(expected, ((0, 0), (0, new - expected.shape[1])), constant_values=pad)
  tokens, scores = decoding.beam_search(model, params, ids, mask, num_beams=3, max_new_tokens=new,
                                        eos_id=eos, length_penalty=length_penalty,
                                        early_stopping=early_stopping, pad_id=pad)
  np.testing.assert_array_equal(tokens, expected)
  np.testing.assert_allclose(scores, out.sequences_scores.numpy(), atol=1e-4)
  assert np.any(tokens == eos)  # EOS handling was exercised
