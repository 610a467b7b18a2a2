"""Exact resumption (issue 6, item 4): a run killed with SIGKILL at random points, between steps and
in the middle of checkpoint saves, ends with bitwise the parameters of a run never interrupted; the
data position in every checkpoint's meta; a checkpoint resumed on another mesh and process count."""

import json
import random
import re
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from conftest import ONE, tiny_config
from llmjax import tasks, train
from test_faults import equal, saved_state
from test_train import _main, _train_losses

STEPS = 30  # The tiny config: 16 steps an epoch, evaluations at 10, 16, 20 and 30.
KILLED_RUN = (f'--config.num_train_steps={STEPS}', '--config.log_every_steps=1',
              '--config.checkpoint.every_steps=2')


def _start_and_kill(workdir, cache, target: int, in_save: bool, delay: float) -> dict:
  """Starts (or resumes) the run in `workdir` and SIGKILLs it once it has logged step `target` or
  later: at once when a checkpoint save is in progress (`in_save`), else after `delay` seconds."""
  run = _main(workdir, cache, *KILLED_RUN)
  resumed, logged = 0, None
  watchdog = threading.Timer(300, run.kill)  # A run that hangs silent ends the loop below.
  watchdog.start()
  try:
    for line in run.stdout:
      found = re.search(r'Resumed from the checkpoint of step (\d+)', line)
      resumed = int(found.group(1)) if found else resumed
      found = re.search(rf'step (\d+)/{STEPS} \|', line)
      if found and int(found.group(1)) >= target:
        logged = int(found.group(1))
        break
  finally:
    watchdog.cancel()
  assert logged is not None, f'the run ended before step {target}: {run.communicate()[0][-3000:]}'
  checkpoints = workdir / 'checkpoints'
  if in_save:
    # Orbax writes a save into `<step>.orbax-checkpoint-tmp*` and renames it when complete.
    deadline = time.time() + 120
    while not any('.orbax-checkpoint-tmp' in p.name for p in checkpoints.iterdir()):
      assert time.time() < deadline and run.poll() is None, 'no checkpoint save was seen'
      time.sleep(0.001)
  else:
    time.sleep(delay)
  run.send_signal(signal.SIGKILL)
  run.communicate(timeout=60)
  assert run.returncode == -signal.SIGKILL
  assert not (workdir / 'results.json').exists()  # Killed before the end.
  return {'resumed': resumed, 'logged': logged, 'in_save': in_save,
          'left': sorted(p.name for p in checkpoints.iterdir())}


@pytest.mark.slow
def test_killed_at_3_random_points_ends_with_the_uninterrupted_parameters(fake_cache_dir, tmp_path):
  """SIGKILL 3 times at seeded random steps: 2 kills a random moment after a step's log line (in a
  step, an evaluation or a save), 1 while a checkpoint is being written; each start resumes."""
  # The uninterrupted run is a command too: 1 device of this process's 8 computes other last bits.
  normal = _main(tmp_path / 'normal', fake_cache_dir, *KILLED_RUN)
  out, _ = normal.communicate(timeout=300)
  assert normal.returncode == 0, out[-3000:]

  rng = random.Random(0)
  killed = tmp_path / 'killed'
  kills = [_start_and_kill(killed, fake_cache_dir, target, in_save=i % 2 == 1,
                           delay=rng.uniform(0.0, 0.5))
           for i, target in enumerate(sorted(rng.sample(range(1, STEPS - 3), 3)))]
  resumed = _main(killed, fake_cache_dir, *KILLED_RUN)
  out, _ = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, out[-3000:]
  # Every start resumed from the latest checkpoint the kill before it left complete (none: step
  # 0); a save cut short left only its temporary directory, which no start took for a checkpoint.
  latest = [max([int(n) for n in k['left'] if n.isdigit()], default=0) for k in kills]
  restarts = [k['resumed'] for k in kills[1:]] + [
      int(s) for s in re.findall(r'Resumed from the checkpoint of step (\d+)', out)]
  assert restarts == latest, kills
  assert any('.orbax-checkpoint-tmp' in n for k in kills for n in k['left']), kills

  a = saved_state(tmp_path / 'normal', STEPS)
  b = saved_state(killed, STEPS)
  assert int(b['step']) == STEPS
  assert equal(a, b), kills  # np.array_equal on every leaf: parameters and optimizer state.
  a, b = (json.loads((d / 'results.json').read_text()) for d in (tmp_path / 'normal', killed))
  for key in ('steps', 'best_step', 'test', 'validation', 'epoch_loss'):
    assert b[key] == a[key], (key, kills)


def _edit_meta(step_dir, edit) -> None:
  """Rewrites the JSON meta item of a checkpoint on disk with `edit(meta)`."""
  path = step_dir / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  edit(meta)
  path.write_text(json.dumps(meta))


def _copy_checkpoint(workdir, step, to) -> None:
  shutil.copytree(workdir / 'checkpoints' / str(step), to / 'checkpoints' / str(step))


def test_resume_on_another_mesh_restores_exact_parameters_and_checks_the_data_position(
    fake_cache, tmp_path, caplog):
  """Saved on 8 devices (data=2, fsdp=2, tensor=2), step 5 resumes on 1 device: its parameters
  bitwise, the losses after it those of the 8-device run (the same global batches). A checkpoint
  without a data position (an older llmjax's) resumes; one whose position differs from the config
  resumes with a note of what that changes."""
  caplog.set_level('INFO')
  config = tiny_config(num_train_steps=10, log_every_steps=1, mesh=dict(data=2, fsdp=2, tensor=2))
  eight = tmp_path / 'eight'
  train.train_and_evaluate(config, eight)
  assert json.loads((eight / 'checkpoints' / '5' / 'meta' / 'metadata').read_text())['data'] == {
      'step': 5, 'seed': 0, 'batch_size': 16, 'process_count': 1, 'order': 'global'}

  # On one device, from a checkpoint as an older llmjax wrote it: without a data position.
  one = tmp_path / 'one'
  _copy_checkpoint(eight, 5, one)
  _edit_meta(one / 'checkpoints' / '5', lambda meta: meta.pop('data'))
  one_config = tiny_config(num_train_steps=10, log_every_steps=1,
                           mesh=dict(data=1, fsdp=1, tensor=1))
  prepared, data = train.prepare(one_config, len(ONE))
  params, _, mesh = train.restore_params(tasks.task_for(prepared, data), prepared, one, 5,
                                         devices=ONE)
  assert mesh.devices.size == 1
  assert equal(params, saved_state(eight, 5)['params'])
  result = train.train_and_evaluate(one_config, one, devices=ONE)
  messages = [r.getMessage() for r in caplog.records]
  assert any(m.startswith('The checkpoint of step 5 has no data position') for m in messages)
  assert any(f'Resumed from the checkpoint of step 5 in {one}' in m for m in messages)
  assert result['steps'] == 10
  losses, resumed = _train_losses(eight), _train_losses(one)
  assert sorted(resumed) == list(range(6, 11))
  np.testing.assert_allclose([resumed[s] for s in range(6, 11)], [losses[s] for s in range(6, 11)],
                             rtol=1e-4)
  assert json.loads((one / 'checkpoints' / '10' / 'meta' / 'metadata').read_text())['data'][
      'step'] == 10

  # A meta that says 2 processes with seed 1 wrote it (edited; the arrays are the 8-device run's):
  # the resumed run says what each difference means for its batches.
  caplog.clear()
  edited = tmp_path / 'edited'
  _copy_checkpoint(eight, 5, edited)
  _edit_meta(edited / 'checkpoints' / '5',
             lambda meta: meta['data'].update(process_count=2, seed=1))
  train.train_and_evaluate(config, edited)
  records = [(r.levelname, r.getMessage()) for r in caplog.records]
  assert any(level == 'WARNING' and m.startswith(
      'Resuming step 5 with config seed=0 (was 1): the batches from here on are not the ones')
      for level, m in records)
  assert any(m.startswith('The checkpoint of step 5 was written by 2 processes, resumed by 1: the '
                          'global batches are the same') for _, m in records)
  # The batches were in fact the same: on the same mesh, bitwise the uninterrupted state.
  assert equal(saved_state(edited, 10), saved_state(eight, 10))
