"""Decoding: the cached jitted loop equals full recomputation; sampling settings; EOS handling; beam
search for decoder-only and encoder-decoder models (HF equality: tests/models/test_hf_*.py)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llmjax import decoding
from llmjax.errors import UserError
from llmjax.models import gpt, t5

CONFIG = gpt.GPTConfig(vocab_size=64, max_position_embeddings=32, hidden_size=16, num_layers=2,
                       num_heads=4, intermediate_size=32)
MODEL = gpt.GPT(CONFIG)
PARAMS = MODEL.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), deterministic=True)['params']
# Larger weights give peaked distributions, so greedy paths are not decided by float noise.
PARAMS = jax.tree.map(lambda x: x * 4, PARAMS)


def prompts():
  """Left-padded prompts of 6, 3 and 1 real tokens."""
  ids = np.random.default_rng(0).integers(0, 64, (3, 6)).astype(np.int32)
  mask = np.ones((3, 6), np.int32)
  mask[1, :3] = 0
  mask[2, :5] = 0
  return ids, mask


def greedy_without_cache(model, params, ids, mask, new):
  """The reference: every step recomputes the whole (growing) sequence, no cache."""
  apply = jax.jit(lambda ids, seg: model.apply({'params': params}, ids, segment_ids=seg,
                                               deterministic=True))
  for _ in range(new):
    logits = apply(ids, mask)
    token = np.argmax(logits[:, -1], axis=-1).astype(np.int32)
    ids = np.concatenate([ids, token[:, None]], axis=1)
    mask = np.concatenate([mask, np.ones_like(mask[:, :1])], axis=1)
  return ids[:, -new:]


@pytest.mark.parametrize('config', [CONFIG, dataclasses.replace(
    CONFIG, position='rotary', num_kv_heads=2, norm='rmsnorm', activation='swiglu')],
    ids=['gpt2', 'modern'])
def test_greedy_with_cache_equals_full_recompute(config):
  model = gpt.GPT(config)
  params = jax.tree.map(lambda x: x * 4, model.init(
      jax.random.key(0), jnp.zeros((1, 4), jnp.int32), deterministic=True)['params'])
  ids, mask = prompts()
  ours = decoding.generate(model, params, ids, mask, max_new_tokens=10)
  np.testing.assert_array_equal(ours, greedy_without_cache(model, params, ids, mask, 10))


def test_top_k_1_and_tiny_top_p_equal_greedy():
  ids, mask = prompts()
  greedy = decoding.generate(MODEL, PARAMS, ids, mask, max_new_tokens=8)
  key = jax.random.key(3)
  top1 = decoding.generate(MODEL, PARAMS, ids, mask, key, max_new_tokens=8, temperature=1.0, top_k=1)
  np.testing.assert_array_equal(top1, greedy)
  nucleus = decoding.generate(MODEL, PARAMS, ids, mask, key, max_new_tokens=8, temperature=1.0,
                              top_p=1e-6)
  np.testing.assert_array_equal(nucleus, greedy)
  sampled = decoding.generate(MODEL, PARAMS, ids, mask, key, max_new_tokens=8, temperature=2.0)
  assert np.any(sampled != greedy)
  np.testing.assert_array_equal(sampled, decoding.generate(MODEL, PARAMS, ids, mask, key,
                                                           max_new_tokens=8, temperature=2.0))


def test_sample_logits_restricts_support():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draws = jax.vmap(lambda k: decoding.sample_logits(logits, k, temperature=1.0, top_k=2))(
      jax.random.split(jax.random.key(0), 400))
  assert set(np.unique(draws)) == {0, 1}
  draws = jax.vmap(lambda k: decoding.sample_logits(logits, k, temperature=1.0, top_p=0.9))(
      jax.random.split(jax.random.key(1), 400))
  assert set(np.unique(draws)) == {0, 1, 2}  # 0.5 + 0.3 < 0.9, so the nucleus needs the third
  draws = jax.vmap(lambda k: decoding.sample_logits(logits, k, temperature=1.0))(
      jax.random.split(jax.random.key(2), 2000))
  np.testing.assert_allclose(np.bincount(draws.ravel(), minlength=4) / 2000,
                             [0.5, 0.3, 0.15, 0.05], atol=0.04)


def test_eos_stops_rows_and_pads_after():
  ids, mask = prompts()
  greedy = np.asarray(decoding.generate(MODEL, PARAMS, ids, mask, max_new_tokens=8))
  eos = int(greedy[0, 2])  # row 0 emits it at step 2
  out = np.asarray(decoding.generate(MODEL, PARAMS, ids, mask, max_new_tokens=8, eos_id=eos,
                                     pad_id=-1))
  for row, expected in zip(out, greedy):
    hits = np.flatnonzero(expected == eos)
    stop = hits[0] + 1 if hits.size else 8
    np.testing.assert_array_equal(row[:stop], expected[:stop])
    assert np.all(row[stop:] == -1)
  assert np.all(out[0, 3:] == -1)


def test_user_errors():
  ids, mask = prompts()
  with pytest.raises(UserError, match='needs a PRNG key'):
    decoding.generate(MODEL, PARAMS, ids, mask, max_new_tokens=2, temperature=1.0)
  with pytest.raises(UserError, match='max_new_tokens=0'):
    decoding.generate(MODEL, PARAMS, ids, mask, max_new_tokens=0)
  with pytest.raises(UserError, match='exceeds max_position_embeddings=32'):
    decoding.generate(MODEL, PARAMS, ids, mask, max_new_tokens=27)


def test_beam_size_1_equals_greedy_and_beams_score_at_least_greedy():
  ids, mask = prompts()
  greedy = decoding.generate(MODEL, PARAMS, ids, mask, max_new_tokens=8)
  tokens, _ = decoding.beam_search(MODEL, PARAMS, ids, mask, num_beams=1, max_new_tokens=8)
  np.testing.assert_array_equal(tokens, greedy)

  def log_prob(new):
    """Sum of log p(new tokens | prompt) by one full forward pass."""
    seq = np.concatenate([ids, new], axis=1)
    seg = np.concatenate([mask, np.ones_like(new)], axis=1)
    logp = jax.nn.log_softmax(MODEL.apply({'params': PARAMS}, seq, segment_ids=seg,
                                          deterministic=True), axis=-1)
    steps = logp[:, ids.shape[1] - 1:-1]  # the predictions of the new tokens
    return np.take_along_axis(np.asarray(steps), np.asarray(new)[..., None], -1).sum((1, 2))

  # Without EOS and length penalty 0, a beam's score is its sum of log-probs over 8 tokens.
  tokens, scores = decoding.beam_search(MODEL, PARAMS, ids, mask, num_beams=4, max_new_tokens=8,
                                        length_penalty=0.0)
  np.testing.assert_allclose(scores, log_prob(tokens), atol=1e-4)
  # Beam search keeps the greedy path unless k alternatives beat it, so it usually scores at least as
  # well; not a theorem, but deterministic here.
  assert np.all(scores >= log_prob(np.asarray(greedy)) - 1e-5)
  with pytest.raises(UserError, match='early_stopping'):
    decoding.beam_search(MODEL, PARAMS, ids, mask, num_beams=2, max_new_tokens=2,
                         early_stopping='sometimes')


T5_CONFIG = t5.T5Config(vocab_size=64, d_model=16, d_kv=6, d_ff=32, num_layers=2,
                        num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
                        dropout_rate=0.0)


def t5_model_and_inputs():
  """A tiny random T5 (peaked as PARAMS) and right-padded sources of 7 and 4 real tokens."""
  model = t5.T5(T5_CONFIG)
  ids = np.random.default_rng(1).integers(2, 64, (2, 7)).astype(np.int32)
  mask = np.ones((2, 7), np.int32)
  mask[1, 4:] = 0
  params = model.init(jax.random.key(2), ids, ids[:, :3], deterministic=True)['params']
  return model, jax.tree.map(lambda x: x * 4, params), ids * mask, mask


def test_seq2seq_beam_size_1_equals_greedy_and_scores_are_log_probs():
  model, params, ids, mask = t5_model_and_inputs()
  greedy = decoding.seq2seq_generate(model, params, ids, mask, max_new_tokens=6)
  tokens, _ = decoding.seq2seq_beam_search(model, params, ids, mask, num_beams=1, max_new_tokens=6)
  np.testing.assert_array_equal(tokens, greedy)

  tokens, scores = decoding.seq2seq_beam_search(model, params, ids, mask, num_beams=3,
                                                max_new_tokens=6, length_penalty=0.0)
  # Teacher forcing the hypotheses after the start token 0 must give back their scores.
  dec = np.concatenate([np.zeros((2, 1), np.int32), np.asarray(tokens)[:, :-1]], axis=1)
  logp = jax.nn.log_softmax(model.apply({'params': params}, ids, dec, input_mask=mask,
                                        deterministic=True), axis=-1)
  expected = np.take_along_axis(np.asarray(logp), np.asarray(tokens)[..., None], -1).sum((1, 2))
  np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_beam_search_user_errors():
  ids, mask = prompts()
  with pytest.raises(UserError, match='num_beams=0 must be >= 1'):
    decoding.beam_search(MODEL, PARAMS, ids, mask, num_beams=0, max_new_tokens=2)
  model, params, src, src_mask = t5_model_and_inputs()
  with pytest.raises(UserError, match='num_beams=0 must be >= 1'):
    decoding.seq2seq_beam_search(model, params, src, src_mask, num_beams=0, max_new_tokens=2)
  with pytest.raises(UserError, match='early_stopping'):
    decoding.seq2seq_beam_search(model, params, src, src_mask, num_beams=2, max_new_tokens=2,
                                 early_stopping='sometimes')
  with pytest.raises(UserError, match='max_new_tokens=0'):
    decoding.seq2seq_beam_search(model, params, src, src_mask, num_beams=2, max_new_tokens=0)


def test_beam_search_over_scanned_layers_equals_unscanned():
  """nn.scan stacks the cache's layers first: beams must be repeated and reordered on axis 1 there."""
  ids, mask = prompts()
  scanned = gpt.GPT(dataclasses.replace(CONFIG, scan_layers=True))
  stacked = gpt.stack_layers(nn.unbox(PARAMS), CONFIG.num_layers)
  for kw in (dict(num_beams=3, max_new_tokens=6), dict(num_beams=3, max_new_tokens=6, eos_id=5)):
    expected = decoding.beam_search(MODEL, PARAMS, ids, mask, **kw)
    got = decoding.beam_search(scanned, stacked, ids, mask, **kw)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-4)

  model, params, ids, mask = t5_model_and_inputs()
  config = dataclasses.replace(T5_CONFIG, scan_layers=True)
  expected = decoding.seq2seq_beam_search(model, params, ids, mask, num_beams=3, max_new_tokens=6)
  got = decoding.seq2seq_beam_search(t5.T5(config), t5.stack_layers(nn.unbox(params), config),
                                     ids, mask, num_beams=3, max_new_tokens=6)
  np.testing.assert_array_equal(got[0], expected[0])
  np.testing.assert_allclose(got[1], expected[1], atol=1e-4)
