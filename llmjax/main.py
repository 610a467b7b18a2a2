"""Command line: flags only. Runs `train.train_and_evaluate(config, workdir)`.

  python -m llmjax.main --config=configs/bert_classify.py[:ARGS] --workdir=DIR [--config.KEY=VALUE ...]
"""

import logging as py_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from llmjax import assets
from llmjax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the config.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Orbax reports every step of every save at INFO; keep its warnings only.
  logging.get_absl_logger().addFilter(
      lambda record: record.levelno >= py_logging.WARNING or '/orbax/' not in record.pathname)
  # Recompiling the same step on every run costs seconds; the persistent cache makes it ~free.
  jax.config.update('jax_compilation_cache_dir', str(assets.cache_dir() / 'jax_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1)
  from llmjax import train  # Imported after flags, so --help stays fast.
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def run():
  # A mistake the user can fix is one line, whether it is found while the flags are parsed (a bad
  # config argument) or during the run (a bad value, a missing asset); tracebacks are for bugs.
  try:
    app.run(main)
  except UserError as e:
    logging.flush()
    print(f'llmjax: error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  run()
