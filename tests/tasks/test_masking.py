"""Masked-LM inputs: 15% of real tokens, 80/10/10 replacement, whole words, never specials."""

import numpy as np

from llmjax.tasks.masking import mask_tokens

PAD, CLS, SEP, MASK = 0, 1, 2, 3
SPECIALS = (PAD, CLS, SEP, MASK)
VOCAB = 1000


def _batch(rows=64, length=128, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(10, VOCAB, (rows, length)).astype(np.int32)
  lengths = rng.integers(length // 2, length + 1, rows)
  attention = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = CLS
  ids[np.arange(rows), lengths - 1] = SEP
  ids[attention == 0] = PAD
  return ids, attention


def _mask(ids, attention, seed=1, **kw):
  return mask_tokens(ids, attention, rng=np.random.default_rng(seed), mask_id=MASK,
                     vocab_size=VOCAB, special_ids=SPECIALS, **kw)


def test_rates_and_replacements():
  ids, attention = _batch()
  inputs, labels, weights = _mask(ids, attention)
  candidate = (attention > 0) & ~np.isin(ids, SPECIALS)
  chosen = weights > 0
  assert not np.any(chosen & ~candidate)  # Never padding, [CLS] or [SEP].
  assert abs(chosen.sum() / candidate.sum() - 0.15) < 0.01
  np.testing.assert_array_equal(labels, ids)
  np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])  # Unchosen tokens are untouched.
  as_mask = (inputs == MASK) & chosen
  changed = (inputs != ids) & (inputs != MASK) & chosen
  assert abs(as_mask.sum() / chosen.sum() - 0.8) < 0.03
  # 10% get a random token (a few of which draw the original token by chance), 10% keep theirs.
  assert abs(changed.sum() / chosen.sum() - 0.1) < 0.03
  assert not np.isin(inputs[changed], SPECIALS).any()
  assert weights.dtype == np.float32


def test_same_generator_state_same_masks():
  ids, attention = _batch()
  a, b = _mask(ids, attention, seed=7), _mask(ids, attention, seed=7)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], _mask(ids, attention, seed=8)[2])


def test_whole_word_masking_takes_every_piece_of_a_word():
  ids, attention = _batch(rows=32)
  rng = np.random.default_rng(3)
  word_start = rng.random(ids.shape) < 0.6  # Words of one to several pieces.
  _, _, weights = _mask(ids, attention, word_start=word_start)
  candidate = (attention > 0) & ~np.isin(ids, SPECIALS)
  for row in range(ids.shape[0]):
    word = -1
    decisions = {}
    for pos in range(ids.shape[1]):
      if not candidate[row, pos]:
        continue
      if word_start[row, pos]:
        word = pos
      if word >= 0:
        decisions.setdefault(word, set()).add(bool(weights[row, pos]))
    assert all(len(d) == 1 for d in decisions.values()), row
  chosen_words = sum(1 for row in range(ids.shape[0]) for pos in range(ids.shape[1])
                     if candidate[row, pos] and word_start[row, pos] and weights[row, pos])
  words = (candidate & word_start).sum()
  assert abs(chosen_words / words - 0.15) < 0.02


def test_span_noise_mask_density_and_spans():
  from llmjax.tasks.masking import random_spans_noise_mask
  for seed in range(20):
    noise = random_spans_noise_mask(100, rng=np.random.default_rng(seed))
    assert noise.sum() == 15  # round(100 * 0.15)
    starts = noise & ~np.concatenate([[False], noise[:-1]])
    assert starts.sum() == 5  # round(15 / 3) spans
    assert not noise[0]  # Kept tokens come first, as in T5.
  a = random_spans_noise_mask(64, rng=np.random.default_rng(3))
  np.testing.assert_array_equal(a, random_spans_noise_mask(64, rng=np.random.default_rng(3)))
  assert not random_spans_noise_mask(1, rng=np.random.default_rng(0)).any()


def test_span_corruption_inputs_and_targets():
  from llmjax.tasks.masking import span_corruption
  ids = np.arange(10, 20)
  noise = np.zeros(10, bool)
  noise[[2, 3, 7]] = True
  sentinels = np.array([99, 98, 97])
  inputs, targets = span_corruption(ids, noise, sentinel_ids=sentinels, eos_id=1)
  assert inputs.tolist() == [10, 11, 99, 14, 15, 16, 98, 18, 19, 1]
  assert targets.tolist() == [99, 12, 13, 98, 17, 1]
