"""Command line: flags only. Trains, evaluates or predicts with the run in `--workdir`.

  python -m llmjax.main --config=configs/bert_classify.py[:ARGS] --workdir=DIR [--config.KEY=VALUE ...]
  python -m llmjax.main --mode=eval --workdir=DIR [--split=test] [--step=N] [--output=metrics.json]
  python -m llmjax.main --mode=predict --workdir=DIR --input=FILE --output=FILE [--step=N]

`train` (the default) runs or resumes the experiment of `--config`. `eval` scores the run's best
checkpoint (or `--step`) on a split and writes metrics.json (default: in the workdir). `predict`
writes one JSON line per line of `--input` (JSON objects with the data's text fields, or plain text
for single-text tasks): the input's fields and the prediction. Without `--config`, eval and predict
use the run's own config.json; with it (and its overrides) they can score e.g. another dataset.
"""

import logging as py_logging

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from llmjax import assets, distributed, errors
from llmjax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the config.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'predict'], 'What to do with the run.')
_SPLIT = flags.DEFINE_string('split', 'test', 'eval: the split to score.')
_STEP = flags.DEFINE_integer('step', None, 'eval/predict: the checkpoint step (default: the best).')
_INPUT = flags.DEFINE_string('input', None, 'predict: the file of inputs, one per line.')
_OUTPUT = flags.DEFINE_string('output', None, 'eval: metrics file (default WORKDIR/metrics.json); '
                              'predict: the JSON-lines file to write.')
# Multi-host: see llmjax/distributed.py for when a process joins a job of several.
_DISTRIBUTED = flags.DEFINE_enum('distributed', 'auto', list(distributed.MODES),
                                 'auto: join a multi-process job when the flags below or the '
                                 'environment (SLURM, TPU pod) say so; on: always; off: never.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'Multi-process: HOST:PORT of '
                                   'process 0 (default: $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-process: the number of '
                                      'processes (default: $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-process: this process, 0..N-1 '
                                   '(default: $JAX_PROCESS_ID).')
_INIT_TIMEOUT = flags.DEFINE_integer('initialization_timeout', 300, 'Multi-process: seconds to '
                                     'wait for all processes to join before failing.')
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer('heartbeat_timeout', 100, 'Multi-process: seconds a '
                                          'silent (dead) peer makes the others wait before they '
                                          'fail.')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Orbax reports every step of every save at INFO; keep its warnings only.
  logging.get_absl_logger().addFilter(
      lambda record: record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname)
  assets.use_compilation_cache()
  # Before any other JAX call: joining a job changes what jax.devices() lists.
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value, initialization_timeout=_INIT_TIMEOUT.value,
                         heartbeat_timeout=_HEARTBEAT_TIMEOUT.value)
  from llmjax import train  # Imported after flags, so --help stays fast.
  if _MODE.value == 'train':
    if _CONFIG.value is None:
      raise UserError('--config is required to train: pass e.g. --config=configs/bert_classify.py')
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    return
  config = _CONFIG.value if _CONFIG.value is not None else train.run_config(_WORKDIR.value)
  if _MODE.value == 'eval':
    train.evaluate_checkpoint(config, _WORKDIR.value, _SPLIT.value, _OUTPUT.value, _STEP.value)
  else:
    if not _INPUT.value or not _OUTPUT.value:
      raise UserError('--mode=predict needs --input=FILE (one input per line) and --output=FILE')
    train.predict_file(config, _WORKDIR.value, _INPUT.value, _OUTPUT.value, _STEP.value)


def run():
  errors.run(main)


if __name__ == '__main__':
  run()
