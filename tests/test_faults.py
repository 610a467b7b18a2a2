"""Faults that lose nothing: a step with a non-finite loss skipped or stopping the run before
anything non-finite is saved (`on_nonfinite`), and a damaged latest checkpoint set aside for the
one before it."""

import json

import jax
import numpy as np
import pytest

from conftest import ONE, tiny_config
from llmjax import checkpoint as checkpoint_lib
from llmjax import tasks, train
from llmjax.errors import UserError
from test_checkpoint import _damage_data


def edit_train_batches(monkeypatch, edit):
  """Passes every train batch through `edit(step, batch)` (0-based global step) on its way from
  the data to the loop, for the runs `train.train_and_evaluate` starts while `monkeypatch` lasts."""
  build = tasks.build_data

  def build_data(*args, **kwargs):
    data = build(*args, **kwargs)
    clean = data.train_iter

    def train_iter(start_step=0):
      for step, batch in enumerate(clean(start_step), start_step):
        yield edit(step, batch)

    data.train_iter = train_iter
    return data

  monkeypatch.setattr(tasks, 'build_data', build_data)


def _poison(monkeypatch, bad_step):
  """NaN example weights in the batch of 0-based step `bad_step`: a NaN loss and NaN gradients,
  as a corrupt record or an overflow would give."""
  edit_train_batches(monkeypatch, lambda step, batch: batch if step != bad_step else {
      **batch, 'weight': np.full_like(batch['weight'], np.nan)})


def saved_state(workdir, step):
  """The train state (a tree of arrays) in the checkpoint of `step` of the run in `workdir`."""
  checkpoints = checkpoint_lib.Checkpointer(workdir / 'checkpoints', keep=100)
  try:
    return checkpoints.restore(step, None)[0]
  finally:
    checkpoints.close()


def equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


def test_nonfinite_step_is_skipped(fake_cache, monkeypatch, tmp_path):
  _poison(monkeypatch, bad_step=3)
  config = tiny_config(num_train_steps=6, log_every_steps=1, on_nonfinite='skip',
                       **{'checkpoint.every_steps': 1, 'checkpoint.keep': 10})
  result = train.train_and_evaluate(config, tmp_path, devices=ONE)
  assert result['steps'] == 6 and result['skipped_steps'] == 1
  # Step 4 (the batch of 0-based step 3) changed nothing: not the parameters, not Adam's moments
  # and count. The steps around it trained.
  before, after = saved_state(tmp_path, 3), saved_state(tmp_path, 4)
  assert equal(before['params'], after['params'])
  assert equal(before['opt_state'], after['opt_state'])
  assert not equal(after['params'], saved_state(tmp_path, 5)['params'])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved_state(tmp_path, 6)['params']))
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  train_rows = {r['step']: r for r in rows if r['split'] == 'train'}
  assert [train_rows[s]['skipped_steps'] for s in range(1, 7)] == [0, 0, 0, 1, 1, 1]
  # The skipped step's loss counts nowhere: every logged loss is a number.
  assert all(np.isfinite(train_rows[s]['loss']) for s in (1, 2, 3, 5, 6))
  assert np.isfinite(result['epoch_loss'][0])


def test_nonfinite_step_stops_with_the_last_good_checkpoint(fake_cache, monkeypatch, tmp_path):
  _poison(monkeypatch, bad_step=4)
  # 6 steps, as the next test's run: the same step, compiled once.
  config = tiny_config(num_train_steps=6, log_every_steps=1, **{'checkpoint.every_steps': 2})
  assert config.on_nonfinite == 'stop'  # The default.
  with pytest.raises(UserError, match=r'^step 5: the loss \(nan\) or gradient norm \(nan\) is not '
                     r'finite; stopped \(the latest checkpoint, of step 4, precedes it\).*'
                     r'on_nonfinite=skip'):
    train.train_and_evaluate(config, tmp_path, devices=ONE)
  checkpoints = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir())
  assert checkpoints == [2, 4]
  state = saved_state(tmp_path, 4)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


def test_damaged_latest_checkpoint_falls_back_to_the_previous(fake_cache, tmp_path, caplog):
  caplog.set_level('INFO')
  config = tiny_config(num_train_steps=6, **{'checkpoint.every_steps': 2, 'checkpoint.keep': 3})
  first = train.train_and_evaluate(config, tmp_path, devices=ONE)
  _damage_data(tmp_path / 'checkpoints' / '6', 'truncate')
  again = train.train_and_evaluate(config, tmp_path, devices=ONE)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert any(m.startswith('The checkpoint of step 6 does not restore (') for m in warnings)
  assert any(m.startswith('Moved the damaged checkpoint of step 6 to ') and
             m.endswith('resuming from step 4.') for m in warnings)
  assert any('Resumed from the checkpoint of step 4' in r.getMessage() for r in caplog.records)
  # Set aside (not deleted), and step 6 was trained again from 4: exactly as the first time.
  assert [p.name.split('.')[0] for p in (tmp_path / 'damaged_checkpoints').iterdir()] == ['6']
  assert again['steps'] == 6 and again['test'] == first['test']


def test_no_restorable_checkpoint_is_one_error_and_moves_nothing(tmp_path):
  state = {'w': np.arange(4, dtype=np.float32)}
  checkpoints = checkpoint_lib.Checkpointer(tmp_path / 'checkpoints', keep=2)
  try:
    for step in (1, 2):
      checkpoints.save(step, state, {'step': step})
      checkpoints.wait()
      _damage_data(tmp_path / 'checkpoints' / str(step), 'zero')
    with pytest.raises(UserError, match=r'checkpoint .*/2 cannot be restored'):
      checkpoints.restore_latest({'w': jax.ShapeDtypeStruct((4,), np.float32)})
    # A config that no longer matches fails every checkpoint: none of them is set aside.
    assert checkpoints.all_steps() == [1, 2]
    assert not (tmp_path / 'damaged_checkpoints').exists()
  finally:
    checkpoints.close()
