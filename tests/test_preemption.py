"""Preemption: SIGTERM saves a checkpoint at the current step and ends the run with exit code 0;
the next start resumes there and ends with the parameters of a run never interrupted."""

import json
import os
import re
import signal
import time

import numpy as np
import pytest

from conftest import tiny_config
from llmjax import train
from test_faults import ONE, edit_train_batches, equal, saved_state
from test_train import _finished_steps, _main


def test_sigterm_saves_the_current_step_and_resumes_exactly(fake_cache, monkeypatch, tmp_path):
  # Periodic checkpoints only at evaluations (step 8, the end): the one at 5 is the preemption's.
  config = tiny_config(num_train_steps=8, log_every_steps=1, **{'checkpoint.every_steps': 100})
  normal = train.train_and_evaluate(config, tmp_path / 'normal', devices=ONE)

  handler = signal.getsignal(signal.SIGTERM)
  with monkeypatch.context() as patch:
    # The scheduler's SIGTERM arrives while the batch of 0-based step 4 is read.
    edit_train_batches(patch, lambda step, batch: (
        step == 4 and os.kill(os.getpid(), signal.SIGTERM), batch)[1])
    stopped = train.train_and_evaluate(config, tmp_path / 'preempted', devices=ONE)
  assert stopped['preempted'] and stopped['steps'] == 5
  assert signal.getsignal(signal.SIGTERM) is handler  # The loop's handler is gone again.
  assert _finished_steps(tmp_path / 'preempted') == [5]
  assert not (tmp_path / 'preempted' / 'results.json').exists()  # Not finished: no test score.

  resumed = train.train_and_evaluate(config, tmp_path / 'preempted', devices=ONE)
  assert not resumed['preempted'] and resumed['steps'] == 8
  assert equal(saved_state(tmp_path / 'preempted', 8), saved_state(tmp_path / 'normal', 8))
  for key in ('test', 'validation', 'epoch_loss'):
    assert resumed[key] == normal[key], key


@pytest.mark.slow
def test_sigterm_to_the_command_exits_0_and_the_next_start_resumes(fake_cache_dir, tmp_path):
  run = _main(tmp_path, fake_cache_dir, '--config.num_train_steps=2000',
              '--config.log_every_steps=1', '--config.checkpoint.every_steps=1000')
  for line in run.stdout:  # Until it has trained a few steps (the run is far longer).
    logged = re.search(r'step (\d+)/2000 \|', line)
    if logged and int(logged.group(1)) >= 5:
      break
  start = time.time()
  run.send_signal(signal.SIGTERM)
  out, _ = run.communicate(timeout=120)
  assert run.returncode == 0, out
  assert time.time() - start < 30
  saved = re.search(r'Preempted \(SIGTERM\): saved the checkpoint of step (\d+)', out)
  assert saved, out
  step = int(saved.group(1))
  # The step it reached, not a periodic checkpoint (every 1000 steps, and each epoch's end).
  assert step >= int(logged.group(1)) and step in _finished_steps(tmp_path)
  assert not (tmp_path / 'results.json').exists()

  resumed = _main(tmp_path, fake_cache_dir, f'--config.num_train_steps={step + 3}',
                  '--config.log_every_steps=1')
  out, _ = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, out
  assert f'Resumed from the checkpoint of step {step}' in out
  assert [int(s) for s in re.findall(rf'step (\d+)/{step + 3} \|', out)] == [
      step + 1, step + 2, step + 3]
  result = json.loads((tmp_path / 'results.json').read_text())
  assert result['steps'] == step + 3 and not result['preempted']
  assert np.isfinite(result['test']['loss'])
