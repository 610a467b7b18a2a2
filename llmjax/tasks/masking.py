"""Corrupted inputs for pretraining: masked language modelling (Devlin et al., 2019) and T5's span
corruption (Raffel et al., 2020): which tokens to predict, and what the model sees in their place.

Masked LM: 15% of the real, non-special tokens are chosen; of those, 80% become [MASK], 10% a random token and
10% stay as they are, so the model cannot learn that only [MASK] positions matter. With whole-word
masking every sub-token of a chosen word is chosen with it (word pieces continuing a word are the
ones whose `word_start` is False). The choice is a pure function of the numpy Generator passed in,
so a pipeline that seeds it from (seed, step) masks a resumed run exactly as an uninterrupted one.

Span corruption: about 15% of the tokens, in spans of mean length 3, are each replaced by one sentinel
in the inputs; the targets spell out the sentinels and the spans they hide.
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
  # The ids of np.setdiff1d, without its sort: 50x faster over a 30,522-token vocabulary.
  allowed = np.flatnonzero(~np.isin(np.arange(vocab_size), special_ids))
  random_ids = allowed[rng.integers(0, len(allowed), input_ids.shape)]
  inputs = np.where(replace_with_mask, mask_id, input_ids)
  inputs = np.where(replace_with_random, random_ids, inputs).astype(input_ids.dtype)
  return inputs, input_ids.copy(), chosen.astype(np.float32)


def random_spans_noise_mask(length: int, *, rng: np.random.Generator, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> np.ndarray:
  """T5's span-corruption mask (Raffel et al., 2020): [length] bool, True on noise tokens.

  round(length * noise_density) tokens are noise, in round(noise / mean_noise_span_length) spans;
  the noise and the kept tokens are each cut into that many non-empty runs at random, and the runs
  alternate, starting with kept tokens, as in T5's `random_spans_noise_mask`.
  """
  if length < 2:
    return np.zeros(length, bool)
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  num_spans = min(num_spans, num_noise, length - num_noise)

  def segment_lengths(num_items: int) -> np.ndarray:
    """num_items cut into num_spans non-empty runs, uniformly over the possible cuts."""
    cuts = np.sort(rng.choice(np.arange(1, num_items), num_spans - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [num_items]]))

  runs = np.stack([segment_lengths(length - num_noise), segment_lengths(num_noise)], 1).reshape(-1)
  return np.repeat(np.tile([False, True], num_spans), runs)


def span_corruption(ids: np.ndarray, noise: np.ndarray, *, sentinel_ids: np.ndarray,
                    eos_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of T5's objective: each noise span of `ids` becomes one sentinel in the
  inputs, and the targets list each sentinel followed by the span it hides; both end in EOS.

  `sentinel_ids[i]` is the i-th sentinel (T5: <extra_id_i>, counted down from the top of the vocab).
  """
  starts = noise & ~np.concatenate([[False], noise[:-1]])
  span_index = np.cumsum(starts) - 1
  if starts.sum() > len(sentinel_ids):
    raise ValueError(f'{starts.sum()} noise spans but only {len(sentinel_ids)} sentinels')

  # The first token of each span carries its sentinel; the rest of the span is dropped.
  inputs = np.where(starts, sentinel_ids[np.maximum(span_index, 0)], ids)[~noise | starts]
  targets = []
  for i in range(int(starts.sum())):
    targets.append(sentinel_ids[i])
    targets.extend(ids[noise & (span_index == i)].tolist())
  return (np.concatenate([inputs, [eos_id]]).astype(np.int32),
          np.asarray(targets + [eos_id], np.int32))


def span_corruption_lengths(inputs_length: int, *, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> tuple[int, int]:
  """(raw tokens per example, targets length) so that the corrupted inputs, EOS included, fill
  exactly `inputs_length`: T5's `random_spans_helper` (568 raw tokens and 114 targets for 512).

  Shorter raw pieces (a document's last) give inputs and targets no longer than these.
  """

  def corrupted(raw: int) -> tuple[int, int]:
    noise = int(round(raw * noise_density))
    spans = int(round(noise / mean_noise_span_length))
    # Inputs: the kept tokens, a sentinel per span, EOS. Targets: a sentinel per span, the noise, EOS.
    return raw - noise + spans + 1, noise + spans + 1

  raw = inputs_length - 1
  while corrupted(raw + 1)[0] <= inputs_length:
    raw += 1
  return raw, corrupted(raw)[1]
