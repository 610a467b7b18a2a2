"""Preemption: SIGTERM saves a checkpoint at the current step and ends the run with exit code 0;
the next start resumes there and ends with the parameters of a run never interrupted. Of a job of 2
processes, SIGTERM to one makes both save the same step."""

import json
import os
import re
import signal
import time

import numpy as np
import pytest

from conftest import ONE, REPO, tiny_config
from llmjax import train
from test_distributed import start_job
from test_faults import edit_train_batches, equal, saved_state
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


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_makes_both_save_the_same_step(fake_cache_dir, tmp_path):
  """The scheduler signals one host: both processes save the same step and exit 0."""
  workdir = tmp_path / 'run'
  procs, logs = start_job(fake_cache_dir, tmp_path, [
      f'--config={REPO}/configs/bert_classify.py:tiny', f'--workdir={workdir}',
      '--config.num_train_steps=2000', '--config.log_every_steps=1',
      '--config.checkpoint.every_steps=1000', '--config.checkpoint.preemption_sync_steps=3',
      # One bucket length, one train step to compile: the processes have no compilation cache.
      '--config.data.buckets=(32,)',
      # Generous: on a loaded machine a busy peer can be silent for many seconds.
      '--heartbeat_timeout=60', '--initialization_timeout=300'])
  try:
    # Until process 1 has trained two steps: its handler is installed only when the loop starts (a
    # SIGTERM before that ends it as it would any program), and from the second step on the
    # processes are in their steps' collectives, where a signal must not break them either.
    deadline = time.time() + 300
    while not re.search(r'step ([2-9]|\d\d+)/2000 \|', logs[1].read_text()):
      assert time.time() < deadline and all(p.poll() is None for p in procs), [
          log.read_text()[-2000:] for log in logs]
      time.sleep(0.1)
    reached = max(int(s) for s in re.findall(r'step (\d+)/2000 \|', logs[1].read_text()))
    procs[1].send_signal(signal.SIGTERM)
    signalled = time.time()
    codes = [p.wait(timeout=300) for p in procs]
    waited = time.time() - signalled
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  texts = [log.read_text() for log in logs]
  assert codes == [0, 0], [t[-3000:] for t in texts]
  saved = [re.findall(r'Preempted \(SIGTERM\): saved the checkpoint of step (\d+)', t)
           for t in texts]
  assert len(saved[0]) == 1 and saved[0] == saved[1], saved
  step = int(saved[0][0])
  # The first sync point (every 3 steps) after the signal, not a periodic checkpoint.
  assert step % 3 == 0 and step >= reached and step in _finished_steps(workdir)
  meta = json.loads((workdir / 'checkpoints' / str(step) / 'meta' / 'metadata').read_text())
  assert meta['step'] == step and meta['data']['process_count'] == 2
  assert not (workdir / 'results.json').exists()
  assert waited < 60, waited
