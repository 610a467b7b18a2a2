"""`llmjax.sweep`: the 4-run sweep of the tiny sentiment config end to end (table, plots, skipping
finished runs), the printed commands, runs N processes at a time, and one-line errors."""

import csv
import functools
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ONE, REPO, tiny_config
from llmjax import sweep, train
from llmjax.errors import UserError

CONFIG = 'configs/bert_classify.py:tiny'
# Short runs: 4 steps, evaluated twice.
COMMON = {'num_train_steps': 4, 'eval.every_steps': 2, 'checkpoint.every_steps': 2,
          'log_every_steps': 1}
RUNS = ['optim.lr=3e-05,seed=0', 'optim.lr=3e-05,seed=1', 'optim.lr=5e-05,seed=0',
        'optim.lr=5e-05,seed=1']
PNG = b'\x89PNG\r\n\x1a\n'


def test_grid_names_and_flag_values():
  assert sweep.product({'a': [1, 2], 'b.c': ['x', 'y']}) == [
      {'a': 1, 'b.c': 'x'}, {'a': 1, 'b.c': 'y'}, {'a': 2, 'b.c': 'x'}, {'a': 2, 'b.c': 'y'}]
  assert sweep.point_name({'optim.lr': 3e-5, 'model.init_from': 'runs/a b'}) == \
      'optim.lr=3e-05,model.init_from=runs_a_b'
  assert sweep.point_name({}) == 'default'
  assert [sweep.flag_value(v) for v in (True, 1e-4, 7, (16, 32), 'asset:x')] == \
      ['true', '0.0001', '7', '(16, 32)', 'asset:x']


def test_tiny_sweep_runs_tabulates_plots_and_skips_finished_runs(fake_cache, tmp_path, monkeypatch):
  config_file = f'{REPO / "configs" / "bert_classify.py"}:tiny'
  # On one device: the test is of the sweep, not of meshes.
  monkeypatch.setattr(train, 'train_and_evaluate',
                      functools.partial(train.train_and_evaluate, devices=ONE))
  rows = sweep.run_sweep(config_file, tiny_config(**COMMON), str(tmp_path), overrides=COMMON)
  assert [r['run'] for r in rows] == RUNS
  for row in rows:
    run = tmp_path / row['run']
    written = json.loads((run / 'config.json').read_text())  # The run's full config.
    assert (written['optim']['lr'], written['seed']) == (row['optim.lr'], row['seed'])
    assert written['num_train_steps'] == 4
    result = json.loads((run / 'results.json').read_text())
    best = next(e for e in result['validation'] if e['step'] == result['best_step'])
    assert row['validation_accuracy'] == best['accuracy']
    assert row['last_validation_accuracy'] == result['validation'][-1]['accuracy']
    assert row['test_accuracy'] == result['test']['accuracy'] and row['steps'] == 4
  # Seeds differ in initialisation and data order, so do their losses.
  assert rows[0]['train_loss'] != rows[1]['train_loss']

  with open(tmp_path / 'sweep.csv') as f:
    table = list(csv.DictReader(f))
  assert [(r['run'], r['optim.lr'], r['seed']) for r in table] == [
      (name, lr, seed) for name, (lr, seed) in zip(
          RUNS, [('3e-05', '0'), ('3e-05', '1'), ('5e-05', '0'), ('5e-05', '1')])]
  assert [float(r['test_accuracy']) for r in table] == [r['test_accuracy'] for r in rows]
  markdown = (tmp_path / 'sweep.md').read_text().splitlines()
  assert markdown[0] == f'# Sweep of {config_file} (4 runs)'
  assert markdown[2].startswith('| run | optim.lr | seed | steps | best_step | validation_loss |')
  assert [line.split(' | ')[1:3] for line in markdown[4:]] == [
      ['3e-05', '0'], ['3e-05', '1'], ['5e-05', '0'], ['5e-05', '1']]
  from matplotlib import image
  for name in ('curves.png', 'optim.lr.png', 'seed.png'):
    assert (tmp_path / name).read_bytes()[:8] == PNG
    pixels = image.imread(tmp_path / name)
    assert pixels.ndim == 3 and np.ptp(pixels) > 0  # Something is drawn.

  # Run again: every run has finished, so nothing trains and the table is the same.
  stamps = {r: (tmp_path / r / 'results.json').stat().st_mtime_ns for r in RUNS}
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('trained again'))
  again = sweep.run_sweep(config_file, tiny_config(**COMMON), str(tmp_path), overrides=COMMON)
  assert again == rows
  assert stamps == {r: (tmp_path / r / 'results.json').stat().st_mtime_ns for r in RUNS}


def test_print_writes_the_main_command_of_every_run(tmp_path):
  workdir = tmp_path / 's'
  out = subprocess.run(
      [sys.executable, '-m', 'llmjax.sweep', f'--config={CONFIG}', f'--workdir={workdir}',
       '--print', '--config.num_train_steps=4', '--config.data.buckets=(16, 32)'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines() == [
      f"python -m llmjax.main --config={CONFIG} --workdir={workdir}/optim.lr={lr},seed={seed} "
      f"--config.num_train_steps=4 '--config.data.buckets=(16, 32)' --config.optim.lr={lr} "
      f"--config.seed={seed}" for lr in ('3e-05', '5e-05') for seed in (0, 1)]
  assert not workdir.exists()  # Printing trains nothing.


def test_processes_run_n_at_a_time_and_failures_are_reported(tmp_path):
  # a and b each wait for the other's file: both finish only if they run at the same time.
  wait = tmp_path / 'wait.py'
  wait.write_text('import pathlib, sys, time\n'
                  'pathlib.Path(sys.argv[1]).touch()\n'
                  'deadline = time.time() + 60\n'
                  'while not pathlib.Path(sys.argv[2]).exists() and time.time() < deadline:\n'
                  '  time.sleep(0.1)\n'
                  'sys.exit(0 if pathlib.Path(sys.argv[2]).exists() else 1)\n')
  a, b = tmp_path / 'a', tmp_path / 'b'
  jobs = [([sys.executable, str(wait), str(a / 'here'), str(b / 'here')], a),
          ([sys.executable, str(wait), str(b / 'here'), str(a / 'here')], b),
          ([sys.executable, '-c', 'print("bad run"); raise SystemExit(3)'], tmp_path / 'c')]
  assert sweep.run_processes(jobs, parallel=2) == [tmp_path / 'c']
  assert (tmp_path / 'c' / 'log.txt').read_text() == 'bad run\n'


def _config_file(tmp_path, sweep_body: str | None):
  path = tmp_path / 'exp.py'
  text = ('from llmjax import config_lib\n\n'
          'def get_config(arg=None):\n  return config_lib.base_config()\n')
  if sweep_body:
    text += f'\ndef sweep(add):\n  {sweep_body}\n'
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize('body, message', [
    (None, r'exp.py defines no sweep: add `def sweep\(add\):` beside get_config'),
    ("add(**{'optim.lrr': 1e-3})", r'sweep run optim.lrr=0.001: unknown config key optim.lrr: '
                                   r'did you mean optim.lr\?'),
    ("add(**{'seed': 'one'})",
     r"sweep run seed=one: config.seed is of type int, not 'one': add a value of type int"),
    ("add(seed=1); add(seed=1)", 'adds the run seed=1 more than once'),
])
def test_bad_sweeps_are_user_errors(tmp_path, body, message):
  from llmjax import config_lib
  with pytest.raises(UserError, match=message):
    sweep.run_sweep(_config_file(tmp_path, body), config_lib.base_config(), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_command_prints_a_bad_sweep_as_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'llmjax.sweep', f'--config={_config_file(tmp_path, None)}',
       f'--workdir={tmp_path / "w"}'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"llmjax: error: {tmp_path / 'exp.py'} defines no sweep: add `def sweep(add):` beside "
      "get_config, calling add(**{'optim.lr': 3e-5}) once per run"]
