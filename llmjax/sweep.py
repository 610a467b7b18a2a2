"""Hyperparameter sweeps: the runs a config file lists beside `get_config`, run, tabulated, plotted.

  python -m llmjax.sweep --config=configs/bert_classify.py --workdir=runs/lr_sweep
  python -m llmjax.sweep --config=configs/bert_classify.py --workdir=runs/lr_sweep --parallel=2
  python -m llmjax.sweep --config=configs/bert_classify.py --workdir=gs://b/lr_sweep --print
  python -m llmjax.sweep --config=configs/bert_classify.py --workdir=runs/lr_sweep --collect

A config file defines its sweep as `sweep(add)`, which calls `add(**overrides)` once per run with
dotted config keys (big_vision's `get_hyper`, simpler); `product` builds a grid to loop over:

  def sweep(add):
    for point in llmjax.sweep.product({'optim.lr': [3e-5, 5e-5], 'seed': [0, 1]}):
      add(**point)

Each point trains in `WORKDIR/<name>`, its name built from its overrides (`optim.lr=3e-05,seed=0`),
on the config of `--config` (its `:args` and `--config.KEY=VALUE` overrides apply to every point)
with the point's overrides on top. By default the points train in this process one after another;
`--parallel=N` runs N at a time as separate `python -m llmjax.main` processes, each logging to
`WORKDIR/<name>/log.txt`. A point with `results.json` is finished and skipped; an unfinished one
resumes from its checkpoints. `--print` prints the `python -m llmjax.main` command of every point
(one per line, shell-quoted: what a pod or cluster job array runs) and trains nothing; `--collect`
only tabulates and plots the points that have finished.

Every invocation ends by collecting the finished points: `WORKDIR/sweep.csv` and `WORKDIR/sweep.md`
(one row per point: its overrides, the validation metrics at the best step, the last validation
value of `eval.metric`, the test metrics of the best checkpoint, the last epoch's train loss),
`WORKDIR/curves.png` (train loss and validation `eval.metric` against step, one line per run) and
`WORKDIR/<key>.png` for each swept key (the metric against its values; a log axis for positive
numbers spanning more than 10x, as learning rates are swept).
"""

import concurrent.futures
import copy
import csv
import dataclasses
import difflib
import importlib.util
import itertools
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Any

import ml_collections
from absl import logging

from llmjax import errors
from llmjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep: its directory name under the sweep's workdir and its config overrides."""
  name: str
  overrides: dict[str, Any]


def product(grid: dict[str, list]) -> list[dict[str, Any]]:
  """Every combination of `grid`'s values (dotted key -> values), the last key varying fastest."""
  return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def flag_value(value: Any) -> str:
  """`value` as the text of a `--config.KEY=` flag that ml_collections parses back to it."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (tuple, list, dict)):
    return repr(tuple(value) if isinstance(value, list) else value)
  return str(value)  # str(3e-05) == '3e-05': floats round-trip.


def point_name(overrides: dict[str, Any]) -> str:
  """`key=value,...` in the order given, with characters unsafe in a file name replaced by `_`."""
  return _file_name(','.join(f'{k}={flag_value(v)}' for k, v in overrides.items()) or 'default')


def _file_name(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9._=,+-]', '_', text)


def points(config_file: str) -> list[Point]:
  """The runs of `config_file` (`path.py[:args]`, as --config takes it): its `sweep(add)` called."""
  path = config_file.split(':', 1)[0]
  spec = importlib.util.spec_from_file_location('llmjax_sweep_config', path)
  if spec is None or not os.path.isfile(path):
    raise UserError(f'config file {path} not found: pass --config=configs/FILE.py[:ARGS]')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not callable(getattr(module, 'sweep', None)):
    raise UserError(f'{path} defines no sweep: add `def sweep(add):` beside get_config, calling '
                    "add(**{'optim.lr': 3e-5}) once per run")
  added = []
  module.sweep(lambda **overrides: added.append(Point(point_name(overrides), overrides)))
  if not added:
    raise UserError(f'the sweep of {path} adds no run: call add(**overrides) at least once')
  names = [p.name for p in added]
  twice = sorted({n for n in names if names.count(n) > 1})
  if twice:
    raise UserError(f'the sweep of {path} adds the run {twice[0]} more than once: give each '
                    'add() other values')
  return added


def point_config(config: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
  """A copy of `config` with the point's overrides set; an unknown key or a wrong type is a
  UserError, found before anything trains."""
  config = copy.deepcopy(config)
  for key, value in point.overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      known = list(node) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(leaf, known, n=1)
      hint = (f'did you mean {".".join([*parents, close[0]])}?' if close
              else 'use a key of llmjax.config_lib.base_config()')
      raise UserError(f'sweep run {point.name}: unknown config key {key}: {hint}')
    try:
      node[leaf] = value
    except TypeError:
      kind = type(node[leaf]).__name__
      raise UserError(f'sweep run {point.name}: config.{key} is of type {kind}, not {value!r}: '
                      f'add a value of type {kind}') from None
  return config


def command(config_file: str, workdir: str, overrides: dict[str, Any],
            python: str = 'python') -> list[str]:
  """The argv of `python -m llmjax.main` that trains one point (`overrides`: every --config.KEY)."""
  return [python, '-m', 'llmjax.main', f'--config={config_file}', f'--workdir={workdir}',
          *(f'--config.{k}={flag_value(v)}' for k, v in overrides.items())]


def run_processes(jobs: list[tuple[list[str], pathlib.Path]], parallel: int) -> list[pathlib.Path]:
  """Runs each (argv, workdir) as a process, `parallel` at a time, its output in workdir/log.txt;
  returns the workdirs whose process failed."""

  def run(job):
    argv, workdir = job
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / 'log.txt', 'a') as log:
      return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT).returncode

  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    codes = list(pool.map(run, jobs))
  return [workdir for (_, workdir), code in zip(jobs, codes) if code != 0]


def finished(workdir: pathlib.Path) -> bool:
  return (workdir / 'results.json').exists()


def _read_metrics(workdir: pathlib.Path) -> list[dict]:
  path = workdir / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def collect(points_: list[Point], workdir: pathlib.Path, title: str) -> list[dict[str, Any]]:
  """Tabulates and plots the finished points (see the module docstring); returns the rows."""
  rows, runs = [], []
  for point in points_:
    run_dir = workdir / point.name
    if not finished(run_dir):
      continue
    result = json.loads((run_dir / 'results.json').read_text())
    metric = json.loads((run_dir / 'config.json').read_text())['eval']['metric']
    evals = result['validation']
    best = next((e for e in evals if e['step'] == result['best_step']), {})
    row = {'run': point.name, **point.overrides, 'steps': result['steps'],
           'best_step': result['best_step']}
    row.update({f'validation_{k}': v for k, v in best.items() if k != 'step'})
    if evals:
      row[f'last_validation_{metric}'] = evals[-1][metric]
    row.update({f'test_{k}': v for k, v in result['test'].items()})
    if result['epoch_loss']:
      row['train_loss'] = result['epoch_loss'][max(result['epoch_loss'], key=int)]
    rows.append(row)
    runs.append((point, metric, _read_metrics(run_dir), row))
  if len(rows) < len(points_):
    logging.info('%d of %d sweep runs have finished; the table and plots show those.', len(rows),
                 len(points_))
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(workdir / 'sweep.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    swept = {k for p in points_ for k in p.overrides}
    writer.writerows({k: flag_value(v) if k in swept else v for k, v in row.items()}
                     for row in rows)
  (workdir / 'sweep.md').write_text(f'# {title}\n\n{markdown_table(rows, columns)}\n')
  if runs:
    _plot(runs, workdir)
  return rows


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
  def cell(value):
    if isinstance(value, float):
      return f'{value:.4g}'
    return '' if value is None else flag_value(value).replace('|', '\\|')

  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(cell(row.get(c)) for c in columns) + ' |' for row in rows]
  return '\n'.join(lines)


def _plot(runs: list, workdir: pathlib.Path) -> None:
  """curves.png, and <key>.png per swept key (runs: (point, eval metric, metrics.jsonl, row))."""
  import matplotlib  # Imported here: only collecting needs it, and never a display.
  matplotlib.use('Agg')
  from matplotlib import figure

  metric = runs[0][1]
  fig = figure.Figure(figsize=(12, 4.5), layout='constrained')
  loss_ax, metric_ax = fig.subplots(1, 2)
  for point, _, records, _ in runs:
    for ax, split, name in [(loss_ax, 'train', 'loss'), (metric_ax, 'validation', metric)]:
      series = [(r['step'], r[name]) for r in records if r['split'] == split and name in r]
      if series:
        ax.plot(*zip(*series), marker='.' if split == 'validation' else None, label=point.name)
  loss_ax.set(xlabel='step', ylabel='train loss', title='training loss')
  metric_ax.set(xlabel='step', ylabel=f'validation {metric}', title=f'validation {metric}')
  metric_ax.legend(fontsize='small')
  fig.savefig(workdir / 'curves.png', dpi=100)

  for key in dict.fromkeys(k for point, *_ in runs for k in point.overrides):
    values = [point.overrides.get(key) for point, *_ in runs]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
      x = values
    else:  # Categories (strings, bools, tuples) in the order the sweep adds them.
      labels = list(dict.fromkeys(flag_value(v) for v in values))
      x = [labels.index(flag_value(v)) for v in values]
    fig = figure.Figure(figsize=(6, 4.5), layout='constrained')
    ax = fig.subplots()
    for column, label in [(f'validation_{metric}', 'validation (best step)'),
                          (f'test_{metric}', 'test (best checkpoint)')]:
      pairs = [(xi, row[column]) for xi, (*_, row) in zip(x, runs) if column in row]
      if pairs:
        ax.plot(*zip(*pairs), 'o', label=label)
    if numeric and min(x) > 0 and max(x) > 10 * min(x):
      ax.set_xscale('log')
    if numeric:  # A tick at each swept value, written as the run names write it.
      labels = [flag_value(v) for v in sorted(set(x))]
      ax.set_xticks(sorted(set(x)), labels, minor=False)
      ax.minorticks_off()
    else:
      ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=key, ylabel=metric, title=f'{metric} against {key}')
    ax.legend(fontsize='small')
    fig.savefig(workdir / f'{_file_name(key)}.png', dpi=100)


def run_sweep(config_file: str, config: ml_collections.ConfigDict, workdir: str, *,
              overrides: dict[str, Any] | None = None, parallel: int = 1, print_only: bool = False,
              collect_only: bool = False) -> list[dict[str, Any]]:
  """What the command does. `config`: `config_file` loaded with the common `overrides` applied
  (as --config parses it). Returns the table's rows (none with `print_only`)."""
  swept = points(config_file)
  configs = {p.name: point_config(config, p) for p in swept}  # Bad keys stop everything here.
  overrides = dict(overrides or {})
  if print_only:
    for p in swept:
      print(shlex.join(command(config_file, os.path.join(workdir, p.name),
                               {**overrides, **p.overrides})), flush=True)
    return []
  root = pathlib.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  todo = [p for p in swept if not finished(root / p.name)]
  for p in swept:
    if p not in todo:
      logging.info('Sweep run %s has finished already: skipped.', p.name)
  failed = []
  if collect_only:
    todo = []
  elif parallel > 1:
    jobs = [(command(config_file, str(root / p.name), {**overrides, **p.overrides},
                     python=sys.executable), root / p.name) for p in todo]
    failed = [f'{d.name} (see {d / "log.txt"})' for d in run_processes(jobs, parallel)]
  else:
    from llmjax import train  # Imported here: printing and collecting train nothing.
    for i, p in enumerate(todo):
      logging.info('Sweep run %d of %d: %s', i + 1, len(todo), p.name)
      try:
        train.train_and_evaluate(configs[p.name], root / p.name)
      except UserError as e:  # The other runs may still work (e.g. a smaller learning rate).
        logging.error('Sweep run %s failed: %s', p.name, e)
        failed.append(f'{p.name} ({e})')
  rows = collect(swept, root, f'Sweep of {config_file} ({len(swept)} runs)')
  print((root / 'sweep.md').read_text(), end='', flush=True)
  if failed:
    raise UserError(f'{len(failed)} of {len(todo)} sweep runs failed: {failed[0]}; fix the cause '
                    'and run the sweep again (finished runs are skipped)')
  return rows


def _main(argv):
  from absl import app, flags
  from ml_collections import config_flags
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from llmjax import assets
  assets.use_compilation_cache()  # The runs of a sweep share their compiled steps.
  flag = flags.FLAGS['config']
  if flags.FLAGS.parallel < 1:
    raise UserError(f'--parallel={flags.FLAGS.parallel} must be >= 1: runs at a time')
  run_sweep(config_flags.get_config_filename(flag), flag.value, flags.FLAGS.workdir,
            overrides=config_flags.get_override_values(flag), parallel=flags.FLAGS.parallel,
            print_only=flags.FLAGS['print'].value, collect_only=flags.FLAGS.collect)


def run():
  """The command. Flags are defined here, not on import: the tests import this module beside
  other commands that define their own --config."""
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args] with a sweep.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'The sweep directory: one subdirectory per run.')
  flags.DEFINE_integer('parallel', 1, '1: train the runs in this process, one after another; '
                       'N: N `python -m llmjax.main` processes at a time.')
  flags.DEFINE_boolean('print', False, 'Print the training command of every run; train nothing.')
  flags.DEFINE_boolean('collect', False, 'Only tabulate and plot the finished runs.')
  flags.mark_flags_as_required(['config', 'workdir'])
  errors.run(_main)


if __name__ == '__main__':
  run()
