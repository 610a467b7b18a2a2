"""Masked language modelling inputs (Devlin et al., 2019): which tokens to predict, and what the
model sees in their place.

15% of the real, non-special tokens are chosen; of those, 80% become [MASK], 10% a random token and
10% stay as they are, so the model cannot learn that only [MASK] positions matter. With whole-word
masking every sub-token of a chosen word is chosen with it (word pieces continuing a word are the
ones whose `word_start` is False). The choice is a pure function of the numpy Generator passed in,
so a pipeline that seeds it from (seed, step) masks a resumed run exactly as an uninterrupted one.
"""

import numpy as np


def mask_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, *, rng: np.random.Generator,
                mask_id: int, vocab_size: int, special_ids: tuple[int, ...],
                rate: float = 0.15, word_start: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Returns (inputs, labels, weights) for a batch of token ids.

  Args:
    input_ids: [B, L] int token ids.
    attention_mask: [B, L], 1 for real tokens, 0 for padding.
    rng: the source of randomness.
    mask_id: the id of [MASK].
    vocab_size: random replacements are drawn from [0, vocab_size) minus `special_ids`.
    special_ids: ids never chosen nor drawn as replacements ([CLS], [SEP], [PAD], ...).
    rate: the fraction of candidate tokens (or words) to predict.
    word_start: [B, L] bool, True where a token begins a word: enables whole-word masking.

  Returns:
    inputs [B, L] with the replacements, labels [B, L] (the original ids), and weights [B, L]
    float32, 1 at the positions to predict and 0 elsewhere.
  """
  candidate = (attention_mask > 0) & ~np.isin(input_ids, special_ids)
  if word_start is None:
    chosen = candidate & (rng.random(input_ids.shape) < rate)
  else:
    # Each word draws once, at its first piece; its continuation pieces copy that draw.
    starts = candidate & word_start
    word_draw = np.where(starts, rng.random(input_ids.shape) < rate, False)
    word_index = np.maximum.accumulate(np.where(starts, np.arange(input_ids.shape[1]), -1), axis=1)
    rows = np.arange(input_ids.shape[0])[:, None]
    chosen = candidate & (word_index >= 0) & word_draw[rows, np.maximum(word_index, 0)]
  action = rng.random(input_ids.shape)
  replace_with_mask = chosen & (action < 0.8)
  replace_with_random = chosen & (action >= 0.8) & (action < 0.9)
  allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids))
  random_ids = allowed[rng.integers(0, len(allowed), input_ids.shape)]
  inputs = np.where(replace_with_mask, mask_id, input_ids)
  inputs = np.where(replace_with_random, random_ids, inputs).astype(input_ids.dtype)
  return inputs, input_ids.copy(), chosen.astype(np.float32)
