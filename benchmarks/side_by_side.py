"""What the side-by-side scripts share: their entry point, a config file loaded as `--config` loads
it, llmjax trained on saved batches, and the transformers side's optimizer and threads set up as
llmjax's recipe says.

Not a script: the scripts of this folder import it (they put benchmarks/ on sys.path).
"""

import contextlib
import importlib.util
import json
import pathlib
import re
import sys
import tempfile
import time
from unittest import mock

import numpy as np

from llmjax import host, optim, tasks, train
from llmjax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parent.parent


def run(main) -> None:
  """A script's entry point: the process executed again with the malloc tunables llmjax's own
  commands run with (llmjax/host.py), so that both sides allocate alike; then `main()`, a UserError
  (a missing asset, a bad config) printed as one line with exit status 2, as llmjax's commands do."""
  host.exec_with_malloc_tunables()
  try:
    main()
  except UserError as e:
    print(f'llmjax: error: {e}', file=sys.stderr)
    sys.exit(2)


def load_config(spec: str):
  """`FILE.py[:ARG]`'s get_config(ARG), FILE relative to the repository unless absolute."""
  path, _, arg = spec.partition(':')
  path = pathlib.Path(path) if pathlib.Path(path).is_absolute() else REPO / path
  if not path.is_file():
    raise UserError(f'no config file {path}: give --config=FILE.py[:ARG], FILE absolute or '
                    'relative to the repository (e.g. configs/bert_classify.py)')
  module_spec = importlib.util.spec_from_file_location('config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def torch_adamw(model, config, total_steps: int | None = None):
  """(optimizer, scheduler): torch's fused AdamW over `model`'s trainable parameters with
  `config.optim`'s lr, betas, eps and weight decay, and with `total_steps` a LambdaLR over
  `llmjax.optim.learning_rate` (else None: a constant lr).

  Weight decay spares the parameters llmjax's default `optim.no_decay` spares, biases and norm
  scales: in a transformers model those are the parameters of one dimension (embeddings and
  kernels have two), whatever the model names them.
  """
  import torch
  o = config.optim
  no_decay = re.compile(o.no_decay)
  if not (no_decay.search('x/bias') and no_decay.search('x/scale')
          and not no_decay.search('x/kernel') and not no_decay.search('x/embedding')):
    raise UserError(f'config.optim.no_decay={o.no_decay!r}: the transformers side of this benchmark '
                    "spares biases and norm scales only (llmjax's default); keep the default")
  # parameters() lists a tied embedding and output layer once, as llmjax has one table.
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW([{'params': [p for p in params if p.ndim > 1],
                            'weight_decay': o.weight_decay},
                           {'params': [p for p in params if p.ndim <= 1], 'weight_decay': 0.0}],
                          lr=o.lr, betas=(o.b1, o.b2), eps=o.eps, fused=True)
  if total_steps is None:
    return opt, None
  # optax applies schedule(t) at update t (0-based); LambdaLR gives factor(t) after t scheduler steps.
  schedule = optim.learning_rate(o, total_steps)
  factors = np.asarray(schedule(np.arange(total_steps + 1)), np.float64) / o.lr
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      opt, lambda t: float(factors[min(t, len(factors) - 1)]))
  return opt, scheduler


@contextlib.contextmanager
def torch_threads(threads: int):
  """torch's intra-op threads set to `threads` within, restored after (a test session, or the
  other side in the same process, keeps its own)."""
  import torch
  previous = torch.get_num_threads()
  torch.set_num_threads(threads)
  try:
    yield
  finally:
    torch.set_num_threads(previous)


def train_llmjax(config, data) -> tuple[dict, float]:
  """(results, wall seconds) of `llmjax.train.train_and_evaluate(config)` in a temporary workdir,
  on one device (the comparison is of the computation, not of the parallelism), with
  `llmjax.tasks.build_data` returning `data`: saved batches replayed through the data interface,
  so the step, optimizer and evaluation are the ones an experiment runs. The results are the
  workdir's `results.json`."""
  import jax
  start = time.time()
  with tempfile.TemporaryDirectory() as workdir, \
      mock.patch.object(tasks, 'build_data', lambda config, **_: data):
    train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    results = json.loads((pathlib.Path(workdir) / 'results.json').read_text())
  return results, time.time() - start
