"""The instruction-tuning task: packed rows compute what their examples compute alone, the loss
counts response tokens only, and exact match comes from greedy generation (a model that memorised
a tiny set answers all of it; an untrained one none)."""

import json

import jax
import numpy as np
import optax

from llmjax import models, train
from llmjax.tasks import sft

from data.test_sft_data import EOS, make_data, numbered, word_tokenizer


def tiny_task(tokenizer, max_new_tokens=4):
  config = models.model_config('gpt', vocab_size=64, max_position_embeddings=16, hidden_size=32,
                               num_layers=2, num_heads=4, intermediate_size=64, embd_dropout=0.0,
                               attn_dropout=0.0, resid_dropout=0.0)
  return sft.SFTTask(models.build(config), tokenizer, max_new_tokens=max_new_tokens)


def test_packed_rows_equal_their_examples_alone():
  data = make_data({'train': numbered(12), 'validation': [], 'test': []})
  task = tiny_task(data.tokenizer)
  params = task.init(jax.random.key(0), 16)
  batch = next(data.train_iter())
  logits_fn, loss_fn = jax.jit(task.logits), jax.jit(task.loss)
  logits = logits_fn(params, batch)
  total, sums = loss_fn(params, batch, None)
  alone_loss, alone_weight, segments = 0.0, 0.0, 0
  for row in range(batch['inputs'].shape[0]):
    for s in set(batch['segment_ids'][row].tolist()) - {0}:
      where = batch['segment_ids'][row] == s
      n = int(where.sum())
      # The example alone at the start of a row of the same width (one compiled shape).
      single = {k: np.zeros((1, 16), v.dtype) for k, v in batch.items()}
      for k in ('inputs', 'targets', 'weights'):
        single[k][0, :n] = batch[k][row][where]
      single['positions'][0, :n] = np.arange(n)
      single['segment_ids'][0, :n] = 1
      np.testing.assert_allclose(logits[row][where], logits_fn(params, single)[0, :n], atol=1e-5)
      loss, single_sums = loss_fn(params, single, None)
      alone_loss += float(loss)
      alone_weight += float(single_sums['weight'])
      segments += 1
  assert segments > batch['inputs'].shape[0]  # several examples share a row
  np.testing.assert_allclose(float(total), alone_loss, rtol=1e-5)
  # Only response tokens and their EOS count: fewer than the real tokens.
  assert float(sums['weight']) == alone_weight == float(batch['weights'].sum())
  assert alone_weight < task.tokens(batch)


def test_exact_match_by_generation_on_a_memorised_set(tmp_path):
  convs = numbered(6)
  data = make_data({'train': convs, 'validation': convs, 'test': convs}, eval_batch_size=8)
  task = tiny_task(data.tokenizer)
  params = task.init(jax.random.key(0), 16)
  eval_step = jax.jit(task.eval_outputs)

  def scores(params):
    return task.summarize([jax.device_get(eval_step(params, b)) for b in data.eval_iter('test')])

  assert scores(params)['exact_match'] == 0.0  # an untrained model answers nothing right

  # Memorise the six answers from packed rows.
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch):
    grads = jax.grad(lambda p: (lambda loss, sums: loss / sums['weight'])(
        *task.loss(p, batch, None)))(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  it = data.train_iter()
  for _ in range(80):
    params, opt_state = step(params, opt_state, next(it))
  result = scores(params)
  assert result['exact_match'] == 1.0 and result['accuracy'] == 1.0, result
  assert result['loss'] < 0.1 and set(result) == set(sft.SFTTask.METRICS)

  # Predict mode: the generated answer per input line.
  path = tmp_path / 'prompts.txt'
  path.write_text(''.join(turns[0][1] + '\n' for turns in convs))
  predict = jax.jit(task.predict)
  rows = []
  for batch, inputs in data.predict_iter(path):
    rows += task.format_predictions(jax.device_get(predict(params, batch)), inputs)
  assert rows == [{'prediction': turns[1][1].strip()} for turns in convs]


def test_exact_match_compares_decoded_text_after_strip():
  tokenizer = word_tokenizer()
  task = tiny_task(tokenizer)
  hello = tokenizer.encode('hello')[0]
  outputs = [{'loss': np.float32(1.0), 'weight': np.float32(2.0), 'correct': np.float32(1.0),
              'generated': np.array([[hello, EOS, 0, 0],
                                     [hello, hello, EOS, 0], [hello, EOS, 0, 0]]),
              'reference': np.array([[hello, 0], [hello, 0], [hello, 0]]),
              'reference_length': np.array([1, 1, 1]), 'decode': np.array([1.0, 1.0, 0.0])}]
  result = task.summarize(outputs)
  # Row 0 matches, row 1 says more than the reference, row 2 is not decoded.
  assert result['exact_match'] == 0.5 and result['loss'] == 0.5


def test_tiny_run_then_eval_and_predict_modes(tiny_run, fake_cache, tmp_path):
  """configs/gpt_sft.py:tiny through the loop, then --mode=eval and --mode=predict on its run."""
  config, run, result = tiny_run('gpt_sft')  # 2 steps, evaluated at 2 (conftest.py)
  assert set(result['test']) == set(sft.SFTTask.METRICS)
  assert 0.0 <= result['test']['exact_match'] <= 1.0
  scored = train.evaluate_checkpoint(config, run, 'test', tmp_path / 'metrics.json')
  assert scored['exact_match'] == result['test']['exact_match']
  inputs = tmp_path / 'reviews.txt'
  inputs.write_text('the movie is good .\n\n{"sentence": "a dull mess ."}\nthe plot is bad .\n')
  assert train.predict_file(config, run, inputs, tmp_path / 'out.jsonl') == 3
  lines = [json.loads(line) for line in (tmp_path / 'out.jsonl').read_text().splitlines()]
  assert [line['sentence'] for line in lines] == ['the movie is good .', 'a dull mess .',
                                                  'the plot is bad .']
  assert all(isinstance(line['prediction'], str) for line in lines)
