"""Multi-host start-up: when a process joins a JAX job (flags, environment, bad combinations), and
the acceptance tests of issue 6 on localhost: 2 processes x 4 fake devices train like 1 process x 8,
their checkpoint restores in one process, and a dead peer ends the other in bounded time."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, tiny_config
from test_launch import launcher
from llmjax import distributed, train
from llmjax.errors import UserError

SLURM_STEP = {'SLURM_JOB_ID': '77', 'SLURM_NTASKS': '4', 'SLURM_PROCID': '1', 'SLURM_LOCALID': '1',
              'SLURM_STEP_NODELIST': 'gpu[01-02]'}


@pytest.mark.parametrize('kwargs, environ, expected', [
    ({}, {}, None),
    (dict(coordinator_address='10.0.0.2:1234', num_processes=4, process_id=3), {},
     distributed.Plan('explicit', '10.0.0.2:1234', 4, 3)),
    ({}, {'JAX_COORDINATOR_ADDRESS': 'host:99', 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '0'},
     distributed.Plan('explicit', 'host:99', 2, 0)),
    # A flag wins over its environment variable.
    (dict(process_id=1), {'JAX_COORDINATOR_ADDRESS': '[::1]:99', 'JAX_NUM_PROCESSES': '2',
                          'JAX_PROCESS_ID': '0'}, distributed.Plan('explicit', '[::1]:99', 2, 1)),
    ({}, SLURM_STEP, distributed.Plan('slurm')),
    ({}, {**SLURM_STEP, 'SLURM_NTASKS': '1'}, None),  # One task: a plain single-process job.
    ({}, {'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3'}, distributed.Plan('tpu')),
    ({}, {'TPU_WORKER_HOSTNAMES': 'localhost'}, None),  # A single-host TPU VM.
    ({}, {'MEGASCALE_COORDINATOR_ADDRESS': '10.0.0.9'}, distributed.Plan('tpu')),
    (dict(mode='on'), {}, distributed.Plan('on')),
    (dict(mode='off', coordinator_address='h:1', num_processes=2, process_id=0), SLURM_STEP, None),
])
def test_plan_follows_flags_then_environment(kwargs, environ, expected):
  assert distributed.plan(environ=environ, **kwargs) == expected


@pytest.mark.parametrize('kwargs, environ, message', [
    (dict(coordinator_address='h:1'), {},
     '^--coordinator_address given without --num_processes \\(or JAX_NUM_PROCESSES\\) and '
     '--process_id \\(or JAX_PROCESS_ID\\): a multi-process job needs all three'),
    (dict(coordinator_address='10.0.0.2', num_processes=2, process_id=0), {},
     '^--coordinator_address=10.0.0.2 is not HOST:PORT: pass .* e.g. 10.0.0.2:1234$'),
    (dict(coordinator_address='h:99999', num_processes=2, process_id=0), {}, 'is not HOST:PORT'),
    (dict(coordinator_address='h:1', num_processes=2, process_id=2), {},
     r'^--process_id=2 is not in 0..1 \(--num_processes=2\): number the processes from 0$'),
    (dict(coordinator_address='h:1', process_id=0), {'JAX_NUM_PROCESSES': 'two'},
     '^JAX_NUM_PROCESSES=two is not an integer'),
    (dict(coordinator_address='h:1', num_processes=0, process_id=0), {}, 'must be >= 1'),
    ({}, {**SLURM_STEP, 'SLURM_STEP_NODELIST': None}, '^SLURM_NTASKS=4 but this process is not a '
     'task of an srun job step: start it with srun'),
    (dict(mode='sometimes'), {}, 'is not one of auto, on, off'),
])
def test_bad_combinations_are_one_line_user_errors(kwargs, environ, message):
  environ = {k: v for k, v in environ.items() if v is not None}
  with pytest.raises(UserError, match=message):
    distributed.plan(environ=environ, **kwargs)


def test_single_process_initialize_touches_nothing():
  assert distributed.initialize(environ={}) is None
  with pytest.raises(UserError, match='--heartbeat_timeout=0 must be > 0 seconds'):
    distributed.initialize(heartbeat_timeout=0, environ={})


def _env(cache):
  return {**os.environ, 'LLMJAX_CACHE': str(cache)}


@pytest.mark.parametrize('flags, message', [
    (['--coordinator_address=localhost', '--num_processes=2', '--process_id=0'],
     "--coordinator_address=localhost is not HOST:PORT: pass process 0's host and a free port, "
     'e.g. 10.0.0.2:1234'),
    # Found by jax.distributed.initialize itself: nothing here says where the other processes are.
    (['--distributed=on'], 'jax.distributed.initialize found no cluster to join '
     '(coordinator_address should be defined.) although --distributed=on asked for one: pass '
     '--coordinator_address, --num_processes and --process_id, or --distributed=off'),
])
def test_cli_reports_a_job_it_cannot_join_in_one_line(fake_cache_dir, tmp_path, flags, message):
  run = subprocess.run(
      [sys.executable, '-m', 'llmjax.main', f'--config={REPO}/configs/bert_classify.py:tiny',
       f'--workdir={tmp_path}', *flags], cwd=REPO, env=_env(fake_cache_dir),
      capture_output=True, text=True, timeout=120)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == f'llmjax: error: {message}'


def _train_losses(workdir):
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [r['loss'] for r in rows if r['split'] == 'train']


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_checkpoint_restores_in_one(fake_cache, tmp_path):
  """The acceptance test of issue 6: 2 processes x 4 fake devices = 1 process x 8 devices."""
  steps = 4
  overrides = [f'--config.num_train_steps={steps}', '--config.log_every_steps=1']
  run = subprocess.run(
      [sys.executable, 'launch/local.py', '--processes=2', '--devices_per_process=4', '--',
       f'--config={REPO}/configs/bert_classify.py:tiny', f'--workdir={tmp_path / "two"}',
       *overrides, '--heartbeat_timeout=10', '--initialization_timeout=120'],
      cwd=REPO, env=_env(fake_cache), capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  for i in range(2):
    assert f'Process {i} of 2 (explicit): 4 local devices, 8 global devices.' in run.stderr
  # Process 0 alone writes the files that are not checkpoints and prints the summary.
  assert run.stdout.count('test (best checkpoint, step 4)') == 1

  train.train_and_evaluate(tiny_config(num_train_steps=steps, log_every_steps=1), tmp_path / 'one')
  two, one = _train_losses(tmp_path / 'two'), _train_losses(tmp_path / 'one')
  assert len(two) == len(one) == steps
  np.testing.assert_allclose(two, one, rtol=1e-5)

  # Written by both processes together, the checkpoint restores in this one process (8 devices).
  workdir = tmp_path / 'two'
  restored = train.evaluate_checkpoint(train.run_config(workdir), workdir, 'test',
                                       tmp_path / 'metrics.json')
  trained = json.loads((workdir / 'results.json').read_text())['test']
  assert restored['step'] == steps
  assert all(np.isfinite(v) for v in restored.values() if isinstance(v, float))
  np.testing.assert_allclose([restored[k] for k in trained], list(trained.values()), rtol=1e-5)


def start_job(cache, log_dir, main_args: list[str]):
  """(processes, their log files): 2 processes x 4 fake devices of one job, as launch/local.py
  starts them, each writing to its own log so that a test can watch and signal each."""
  local = launcher('local')
  cmds = local.commands(2, 4, local.free_port(), main_args)
  logs = [log_dir / f'{i}.log' for i in range(2)]
  procs = [subprocess.Popen(argv, cwd=REPO, env={**_env(cache), **env},
                            stdout=log.open('w'), stderr=subprocess.STDOUT)
           for (env, argv), log in zip(cmds, logs)]
  return procs, logs


@pytest.mark.slow
def test_a_dead_peer_ends_the_other_process_in_bounded_time(fake_cache_dir, tmp_path):
  procs, logs = start_job(fake_cache_dir, tmp_path, [
      f'--config={REPO}/configs/bert_classify.py:tiny', f'--workdir={tmp_path / "run"}',
      '--heartbeat_timeout=10', '--initialization_timeout=120'])
  try:
    deadline = time.time() + 300
    while time.time() < deadline and not all('global devices' in log.read_text() for log in logs):
      assert all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
      time.sleep(0.1)
    assert time.time() < deadline, 'the processes never joined one job'
    # Process 1 dies while process 0, which hosts the coordinator, prepares the run: only the
    # missing heartbeats can tell process 0, and they must within --heartbeat_timeout.
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    status = procs[0].wait(timeout=60)
    assert time.time() - killed < 60
    assert status != 0
    assert 'stopped sending heartbeats' in logs[0].read_text()
  finally:
    for p in procs:
      p.kill()
      p.wait()
