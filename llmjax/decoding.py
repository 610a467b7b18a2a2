"""Autoregressive decoding over a KV cache: greedy, sampling and beam search.

Decoder-only models (`generate`, `beam_search`) take prompts LEFT-padded to one length P
(`prompt_mask` 0 = padding): every row's last prompt token then sits in slot P-1 and every row
writes its t-th new token into cache slot P+t, so all rows share one `cache_index`. Padding gets
segment id 0 and the prompt segment id 1, so real tokens never attend to padding, and positions
count real tokens only (cumsum(mask) - 1), as HF `generate` does for left-padded GPT-2.

Encoder-decoder models (`t5.T5`) decode with `seq2seq_generate` and `seq2seq_beam_search`: the
source is encoded once (right padding is fine: it is only ever attended to through `input_mask`),
and the decoder starts from `decoder_start_id` (T5: the pad id 0) in cache slot 0.

Each decoder is one jitted function: the prefill (or encoding), then one `jax.lax.while_loop` of
cached steps, which ends early once every row is done (greedy and sampling: it has produced
`eos_id`; beam search: HF's stopping rule). Tokens after a row's EOS are `pad_id`. Both model kinds
share the loops, `_sample_loop` and `_beam_loop`, through a `step(cache, tokens, t)` function. Beam
search keeps num_beams rows per batch row (row b * k + j is beam j of b) and reorders the cache's
rows to each new beam's parent before every step.
"""

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

from llmjax.errors import UserError


def sample_logits(logits: jax.Array, rng: jax.Array | None, *, temperature: float = 0.0,
                  top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Picks one token per row of logits [B, V] -> [B] int32.

  temperature 0 is greedy (argmax). Otherwise logits / temperature are restricted to the `top_k`
  most likely tokens (0 = all) and then to the smallest set whose probability reaches `top_p`
  (nucleus sampling, Holtzman et al., 2020; 1.0 = all), and one token is drawn.
  """
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  neg = jnp.finfo(jnp.float32).min
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1], the k-th largest logit
    logits = jnp.where(logits < kth, neg, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the tokens ranked above it have not yet reached top_p: the top one always stays.
    keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, neg, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def init_cache(model: nn.Module, batch: int, max_len: int) -> dict:
  """An empty 'cache' collection for `batch` rows of up to `max_len` tokens (no params computed)."""
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((batch, max_len), jnp.int32),
                         deterministic=True, decode=True)['cache'])
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _check_length(model: nn.Module, prompt_len: int, max_new_tokens: int) -> None:
  if max_new_tokens < 1:
    raise UserError(f'max_new_tokens={max_new_tokens} must be >= 1')
  config = getattr(model, 'config', None)
  limit = getattr(config, 'max_position_embeddings', None)
  if getattr(config, 'position', 'learned') != 'rotary' and limit and prompt_len + max_new_tokens > limit:
    # Learned positions past the table would read garbage silently.
    raise UserError(f'prompt length {prompt_len} + max_new_tokens={max_new_tokens} exceeds '
                    f'max_position_embeddings={limit}: shorten the prompt or max_new_tokens')


def _prefill(model, params, prompt_ids, prompt_mask, max_new_tokens):
  """Runs the left-padded prompt [B, P] through the model in one pass, writing cache slots 0..P-1.

  Returns the last position's logits [B, V], the cache (room for P + max_new_tokens slots) and each
  row's number of real prompt tokens [B].
  """
  batch, prompt_len = prompt_ids.shape
  _check_length(model, prompt_len, max_new_tokens)
  prompt_mask = prompt_mask.astype(jnp.int32)
  positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)
  cache = init_cache(model, batch, prompt_len + max_new_tokens)
  logits, updated = model.apply({'params': params, 'cache': cache}, prompt_ids, positions=positions,
                                segment_ids=prompt_mask, deterministic=True, decode=True,
                                mutable=['cache'])
  return logits[:, -1], updated['cache'], prompt_mask.sum(axis=1)


def _step(model, params, cache, token, positions):
  """One cached step: token [B, 1] at positions [B] -> (logits [B, V], updated cache)."""
  logits, updated = model.apply({'params': params, 'cache': cache}, token, positions=positions[:, None],
                                segment_ids=jnp.ones_like(token), deterministic=True, decode=True,
                                mutable=['cache'])
  return logits[:, -1], updated['cache']


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'temperature', 'top_k',
                                             'top_p', 'eos_id', 'pad_id'))
def generate(model: nn.Module, params, prompt_ids: jax.Array, prompt_mask: jax.Array,
             rng: jax.Array | None = None, *, max_new_tokens: int, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, eos_id: int | None = None,
             pad_id: int = 0) -> jax.Array:
  """Continues left-padded prompts.

  Args:
    model: a module called as model(ids, positions=, segment_ids=, deterministic=, decode=), e.g.
      `gpt.GPT`.
    params: its params (without the 'params' key).
    prompt_ids: [B, P] int, left-padded; every row needs at least one real token.
    prompt_mask: [B, P] int or bool, 1 = real token, 0 = padding (on the left).
    rng: a key, needed when temperature > 0.
    max_new_tokens: how many tokens to generate at most.
    temperature, top_k, top_p: see `sample_logits`; temperature 0 = greedy.
    eos_id: a row stops after producing it (it is included in the output); None = never.
    pad_id: fills a row after its EOS.

  Returns:
    [B, max_new_tokens] int32 new tokens.
  """
  if temperature > 0.0 and rng is None:
    raise UserError(f'sampling with temperature={temperature} needs a PRNG key: pass rng=, or '
                    f'temperature=0 for greedy decoding')
  batch, prompt_len = prompt_ids.shape
  logits, cache, lengths = _prefill(model, params, prompt_ids, prompt_mask, max_new_tokens)
  # After the last token its step is wasted, but keeps the loop uniform (the cache has the slot).
  return _sample_loop(
      lambda cache, token, t: _step(model, params, cache, token[:, None], lengths + t),
      logits, cache, rng, batch=batch, max_new_tokens=max_new_tokens, temperature=temperature,
      top_k=top_k, top_p=top_p, eos_id=eos_id, pad_id=pad_id)


def _sample_loop(step, logits, cache, rng, *, batch, max_new_tokens, temperature, top_k, top_p,
                 eos_id, pad_id):
  """Draws up to max_new_tokens tokens per row: token t from `logits`, then
  `step(cache, token, t) -> (logits, cache)` feeds it back. Rows stop at EOS, padded after it."""
  rng = jax.random.key(0) if rng is None else rng

  def cond(state):
    t, _, _, _, done, _ = state
    return (t < max_new_tokens) & ~jnp.all(done)

  def body(state):
    t, cache, logits, tokens, done, rng = state
    rng, key = jax.random.split(rng)
    token = sample_logits(logits, key, temperature=temperature, top_k=top_k, top_p=top_p)
    token = jnp.where(done, pad_id, token)
    tokens = tokens.at[:, t].set(token)
    if eos_id is not None:
      done = done | (token == eos_id)
    logits, cache = step(cache, token, t)
    return t + 1, cache, logits, tokens, done, rng

  tokens = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
  done = jnp.zeros((batch,), bool)
  return jax.lax.while_loop(cond, body, (0, cache, logits, tokens, done, rng))[3]


def _gather_beams(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, N, ...], index [B, M] -> [B, M, ...]: for each row, the beams at `index`."""
  return jax.vmap(lambda xb, ib: xb[ib])(x, index)


def _check_beams(num_beams: int, early_stopping) -> None:
  if num_beams < 1:
    raise UserError(f'num_beams={num_beams} must be >= 1')
  if early_stopping not in (True, False, 'never'):
    raise UserError(f'early_stopping={early_stopping!r} is not one of True, False, "never"')


def _repeat_beams(tree, num_beams: int):
  """Repeats every batch row num_beams times (row b * k + j is beam j of b)."""
  return jax.tree.map(lambda x: jnp.repeat(x, num_beams, axis=0), tree)


def _map_cache_rows(fn, cache):
  """fn(x, axis) on the batch axis of every cache leaf: axis 0, or 1 under `layers` (the stacked
  blocks of nn.scan, whose leading axis is the layer). Cache indices, scalars or one per layer,
  have no batch axis and stay."""

  def on_rows(path, x):
    axis = 1 if any(getattr(k, 'key', None) == 'layers' for k in path) else 0
    return fn(x, axis) if x.ndim > axis else x

  return jax.tree_util.tree_map_with_path(on_rows, cache)


def _beam_loop(step, logits, cache, *, batch, num_beams, max_new_tokens, eos_id, length_penalty,
               early_stopping, pad_id):
  """Beam search shared by decoder-only and encoder-decoder models (see `beam_search`).

  `logits` [B * k, V] and `cache` are already repeated per beam (row b * k + j is beam j of batch
  row b); `step(cache, tokens [B * k], t) -> (logits [B * k, V], cache)` feeds the t-th new tokens
  back, after the cache's rows have been reordered to their beams' parents.

  Returns the best finished hypothesis per row [B, max_new_tokens] and its score [B].
  """
  k = num_beams
  keep = 2 * k  # as HF with one EOS id: enough candidates that k stay unfinished
  neg = -1.0e9
  vocab = logits.shape[-1]

  running = jnp.full((batch, k, max_new_tokens), pad_id, jnp.int32)
  # Only beam 0 is live at first, so the first step does not pick k copies of the same token.
  running_scores = jnp.tile(jnp.array([0.0] + [neg] * (k - 1), jnp.float32), (batch, 1))
  finished = jnp.full((batch, k, max_new_tokens), pad_id, jnp.int32)
  finished_scores = jnp.full((batch, k), neg, jnp.float32)
  is_finished = jnp.zeros((batch, k), bool)
  may_improve = jnp.ones((batch,), bool)
  top_k_mask = jnp.arange(keep) < k  # only the first k candidates may become finished hypotheses

  def cond(state):
    t, *_, may_improve, all_hit = state
    return (t < max_new_tokens) & jnp.any(may_improve) & ~all_hit

  def body(state):
    (t, cache, logits, running, running_scores, finished, finished_scores, is_finished,
     may_improve, _) = state
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, k, vocab)
    log_probs = (log_probs + running_scores[:, :, None]).reshape(batch, k * vocab)
    cand_scores, cand = jax.lax.top_k(log_probs, keep)  # [B, 2k]
    parent, token = cand // vocab, (cand % vocab).astype(jnp.int32)
    cand_seqs = _gather_beams(running, parent).at[:, :, t].set(token)  # [B, 2k, max_new]
    hits = jnp.broadcast_to(t + 1 == max_new_tokens, token.shape)
    if eos_id is not None:
      hits = hits | (token == eos_id)

    # The k best unfinished continuations keep running.
    order = jax.lax.top_k(cand_scores + hits * neg, k)[1]  # [B, k]
    running = _gather_beams(cand_seqs, order)
    running_scores = _gather_beams(cand_scores + hits * neg, order)
    beam_parent = _gather_beams(parent, order)  # [B, k], the beam each new beam continues

    # Finished continuations among the first k join the finished hypotheses if they rank.
    just_finished = hits & top_k_mask[None, :]
    scores = cand_scores / (t + 1.0) ** length_penalty
    full = jnp.all(is_finished, axis=1, keepdims=True) & (early_stopping is True)
    scores = scores + full * neg + (~may_improve[:, None]) * neg + (~just_finished) * neg
    merged_scores = jnp.concatenate([finished_scores, scores], axis=1)
    best = jax.lax.top_k(merged_scores, k)[1]
    finished = _gather_beams(jnp.concatenate([finished, cand_seqs], axis=1), best)
    finished_scores = _gather_beams(merged_scores, best)
    is_finished = _gather_beams(jnp.concatenate([is_finished, just_finished], axis=1), best)

    # Can a running beam still beat the worst finished hypothesis?
    if early_stopping == 'never' and length_penalty > 0.0:
      best_length = float(max_new_tokens)
    else:
      best_length = t + 1.0
    best_running = running_scores[:, :1] / best_length ** length_penalty
    worst_finished = jnp.where(is_finished, jnp.min(finished_scores, axis=1, keepdims=True), neg)
    may_improve = may_improve & jnp.any(best_running > worst_finished, axis=1)
    if early_stopping is True:
      may_improve = may_improve & ~jnp.all(is_finished)  # HF checks this over the whole batch

    # Reorder the cache to the surviving beams, then feed them their new tokens.
    rows = (jnp.arange(batch)[:, None] * k + beam_parent).reshape(-1)
    cache = _map_cache_rows(lambda x, axis: jnp.take(x, rows, axis=axis), cache)
    token = running[:, :, t].reshape(-1)
    logits, cache = step(cache, token, t)
    return (t + 1, cache, logits, running, running_scores, finished, finished_scores, is_finished,
            may_improve, jnp.all(hits))

  state = (0, cache, logits, running, running_scores, finished, finished_scores, is_finished,
           may_improve, jnp.array(False))
  state = jax.lax.while_loop(cond, body, state)
  finished, finished_scores = state[5], state[6]
  return finished[:, 0], finished_scores[:, 0]


@functools.partial(jax.jit, static_argnames=('model', 'num_beams', 'max_new_tokens', 'eos_id',
                                             'length_penalty', 'early_stopping', 'pad_id'))
def beam_search(model: nn.Module, params, prompt_ids: jax.Array, prompt_mask: jax.Array, *,
                num_beams: int, max_new_tokens: int, eos_id: int | None = None,
                length_penalty: float = 1.0, early_stopping: bool | str = False,
                pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Beam search with HF `generate(num_beams=..., do_sample=False)` semantics, step for step.

  Each step expands the `num_beams` running beams to their 2 * num_beams best continuations by
  summed log-probability. Continuations ending in `eos_id` (or reaching max_new_tokens) that rank
  among the first num_beams become finished hypotheses, scored as in HF:

    score = sum of log-probs / (number of generated tokens, EOS included) ** length_penalty

  (HF's convention; T5X divides by ((5 + len) / 6) ** alpha instead). The best num_beams unfinished
  continuations keep running. `early_stopping` is HF's: True stops a row once it has num_beams
  finished hypotheses; False stops when the best running beam, scored at its current length, cannot
  beat the worst finished one; 'never' scores it at max length when length_penalty > 0. As in HF,
  the loop runs while any row may still improve.

  Args: as `generate` (left-padded prompts), plus num_beams, length_penalty and early_stopping.

  Returns:
    tokens [B, max_new_tokens] int32 of each row's best hypothesis (`pad_id` after its EOS), and its
    score [B] float32.
  """
  _check_beams(num_beams, early_stopping)
  batch = prompt_ids.shape[0]
  logits, cache, lengths = _prefill(model, params, prompt_ids, prompt_mask, max_new_tokens)
  # Every beam starts from the prompt.
  logits, lengths = _repeat_beams((logits, lengths), num_beams)
  cache = _map_cache_rows(lambda x, axis: jnp.repeat(x, num_beams, axis=axis), cache)
  # After the last token its step is wasted, but keeps the loop uniform (the cache has the slot).
  return _beam_loop(
      lambda cache, token, t: _step(model, params, cache, token[:, None], lengths + t),
      logits, cache, batch=batch, num_beams=num_beams, max_new_tokens=max_new_tokens,
      eos_id=eos_id, length_penalty=length_penalty, early_stopping=early_stopping, pad_id=pad_id)


def _seq2seq_start(model, params, input_ids, input_mask, *, max_new_tokens, decoder_start_id,
                   num_beams=1):
  """Encodes the source once and feeds the decoder its start token (cache slot 0).

  With num_beams > 1 every batch row becomes num_beams rows (row b * k + j is beam j of b) after
  encoding. Returns the start token's logits [B * num_beams, V], the cache (max_new_tokens slots)
  and `feed_back(cache, tokens, t) -> (logits, cache)` for the shared loops.
  """
  if max_new_tokens < 1:
    raise UserError(f'max_new_tokens={max_new_tokens} must be >= 1')
  config = getattr(model, 'config', None)
  limit = getattr(config, 'max_position_embeddings', None)
  if getattr(config, 'position', None) == 'sinusoidal' and limit and max_new_tokens > limit:
    # The position table would be read past its end, silently.
    raise UserError(f'max_new_tokens={max_new_tokens} exceeds max_position_embeddings={limit}: '
                    f'generate at most that many tokens')
  encoded = model.apply({'params': params}, input_ids, input_mask, deterministic=True,
                        method='encode')
  input_ids, input_mask, encoded = _repeat_beams((input_ids, input_mask, encoded), num_beams)
  rows = input_ids.shape[0]
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), input_ids, jnp.zeros((rows, max_new_tokens), jnp.int32),
      input_mask=input_mask, deterministic=True, decode=True)['cache'])
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def step(cache, token):
    logits, updated = model.apply({'params': params, 'cache': cache}, token[:, None], encoded,
                                  input_mask, deterministic=True, decode=True, mutable=['cache'],
                                  method='decode')
    return logits[:, -1], updated['cache']

  logits, cache = step(cache, jnp.full((rows,), decoder_start_id, jnp.int32))

  def feed_back(cache, token, t):
    # The cache has max_new_tokens slots: the start token and all new tokens but the last, which
    # is never fed back (its branch returns logits of the right shape that nothing reads).
    return jax.lax.cond(t + 1 < max_new_tokens, step, lambda c, _: (logits, c), cache, token)

  return logits, cache, feed_back


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'temperature', 'top_k',
                                             'top_p', 'eos_id', 'pad_id', 'decoder_start_id'))
def seq2seq_generate(model: nn.Module, params, input_ids: jax.Array, input_mask: jax.Array,
                     rng: jax.Array | None = None, *, max_new_tokens: int, temperature: float = 0.0,
                     top_k: int = 0, top_p: float = 1.0, eos_id: int | None = None,
                     pad_id: int = 0, decoder_start_id: int = 0) -> jax.Array:
  """Generates targets for encoder-decoder inputs (HF `generate` for `T5ForConditionalGeneration`).

  Args:
    model: a module with `encode(input_ids, input_mask, deterministic=)` and `decode(ids, encoded,
      input_mask, deterministic=, decode=)`, called as model(input_ids, decoder_ids, input_mask=,
      deterministic=, decode=) to init, e.g. `t5.T5`.
    params: its params (without the 'params' key).
    input_ids: [B, Ls] int source tokens, padded anywhere `input_mask` says.
    input_mask: [B, Ls] int or bool, 1 = real token.
    rng, max_new_tokens, temperature, top_k, top_p, eos_id, pad_id: as `generate`.
    decoder_start_id: the decoder's first input (T5: 0, its pad id).

  Returns:
    [B, max_new_tokens] int32 new tokens (without the start token).
  """
  if temperature > 0.0 and rng is None:
    raise UserError(f'sampling with temperature={temperature} needs a PRNG key: pass rng=, or '
                    f'temperature=0 for greedy decoding')
  logits, cache, feed_back = _seq2seq_start(model, params, input_ids, input_mask,
                                            max_new_tokens=max_new_tokens,
                                            decoder_start_id=decoder_start_id)
  return _sample_loop(feed_back, logits, cache, rng, batch=input_ids.shape[0],
                      max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                      top_p=top_p, eos_id=eos_id, pad_id=pad_id)


@functools.partial(jax.jit, static_argnames=('model', 'num_beams', 'max_new_tokens', 'eos_id',
                                             'length_penalty', 'early_stopping', 'pad_id',
                                             'decoder_start_id'))
def seq2seq_beam_search(model: nn.Module, params, input_ids: jax.Array, input_mask: jax.Array, *,
                        num_beams: int, max_new_tokens: int, eos_id: int | None = None,
                        length_penalty: float = 1.0, early_stopping: bool | str = False,
                        pad_id: int = 0, decoder_start_id: int = 0
                        ) -> tuple[jax.Array, jax.Array]:
  """Beam search for encoder-decoder inputs (HF `generate(num_beams=..., do_sample=False)` for
  `T5ForConditionalGeneration`), with `beam_search`'s semantics and scores: the length penalty
  counts generated tokens only, not the decoder start token.

  Args: as `seq2seq_generate` (without sampling), plus num_beams, length_penalty and early_stopping
    as `beam_search`.

  Returns:
    tokens [B, max_new_tokens] int32 of each row's best hypothesis (without the start token,
    `pad_id` after its EOS), and its score [B] float32.
  """
  _check_beams(num_beams, early_stopping)
  logits, cache, feed_back = _seq2seq_start(model, params, input_ids, input_mask,
                                            max_new_tokens=max_new_tokens,
                                            decoder_start_id=decoder_start_id, num_beams=num_beams)
  return _beam_loop(feed_back, logits, cache, batch=input_ids.shape[0], num_beams=num_beams,
                    max_new_tokens=max_new_tokens, eos_id=eos_id, length_penalty=length_penalty,
                    early_stopping=early_stopping, pad_id=pad_id)
