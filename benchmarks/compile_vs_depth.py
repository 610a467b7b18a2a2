"""Compile time of the train step against depth, with and without `nn.scan` over the layers.

  python benchmarks/compile_vs_depth.py [--configs=gpt_lm,bert_mlm,t5_span] [--layers=2,24]
      [--unscanned] [--out=FILE.json]

For each config (configs/NAME.py at its default width, float32) and each depth, the step that
`llmjax.train` runs (`make_train_step`: the same jit, shardings, donation and optimizer) is lowered
on its abstract state and a batch of the task's row format (`llmjax.plan.abstract_batch`: nothing
is read or run) and compiled for this machine's CPU, with the persistent compilation cache off.
Printed per config: the compile time (wall and the compiler's CPU seconds, which a busy machine
stretches less) at each depth and the ratio of the deepest to the shallowest. With `nn.scan` the
layers are one loop body, so the program, and its compile, stay the same size as depth grows;
`--unscanned` adds the unrolled layout for comparison (a deep unrolled step takes minutes).
"""

import argparse
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # Run as a script from anywhere, without installing.
  sys.path.insert(0, str(REPO))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from llmjax import config_lib, host, lora, models, optim, plan, sharding, tasks, train  # noqa: E402

# One config of each family: decoder, encoder, encoder-decoder (T5's depth is per stack).
CONFIGS = ('gpt_lm', 'bert_mlm', 't5_span')


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--configs', default=','.join(CONFIGS), help='comma-separated configs/NAME.py')
  p.add_argument('--layers', default='2,24', help='comma-separated depths')
  p.add_argument('--args', default='', help='more config arguments, e.g. width=128')
  p.add_argument('--unscanned', action='store_true', help='also compile the unrolled layout')
  p.add_argument('--out', default='', help='also write the figures as JSON to this file')
  args = p.parse_args(argv)
  args.configs = [c for c in args.configs.split(',') if c]
  unknown = [c for c in args.configs if c not in CONFIGS]
  if unknown:
    p.error(f'--configs: unknown {",".join(unknown)}; choose among {",".join(CONFIGS)}')
  args.layers = sorted(int(n) for n in args.layers.split(','))
  return args


def load_config(name: str, layers: int, extra: str, scan: bool):
  """configs/NAME.py at `layers` deep, on one device, scanned or not."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(extra or None)
  config.model.update(num_layers=layers, scan_layers=scan)
  if 'num_decoder_layers' in config.model:
    config.model.num_decoder_layers = layers
  config.mesh.update(data=1, fsdp=1, tensor=1)
  return config


def compile_seconds(config) -> tuple[float, float]:
  """(wall, CPU) seconds to lower and compile the config's train step on one CPU device."""
  config_lib.validate(config, 1)
  models.resolve(config)
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  task = tasks.task_for(config)
  tx = optim.make(config.optim, max(config.num_train_steps, 1), lora.trainable(config))
  state = train.abstract_train_state(task, tx, mesh, config, jax.random.key(config.seed))
  batch = plan.abstract_batch(config, mesh)
  step = train.make_train_step(task, tx, config, mesh, jax.tree.map(lambda x: x.sharding, state))
  start, cpu = time.perf_counter(), time.process_time()
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
    step.lower(state, batch).compile()
  return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None) -> dict:
  args = parse_args(argv)
  layouts = [True, False] if args.unscanned else [True]
  results = {}
  cached = jax.config.jax_enable_compilation_cache
  jax.config.update('jax_enable_compilation_cache', False)  # Every compile is timed whole.
  try:
    for name in args.configs:
      for scan in layouts:
        key = f'{name} {"scan" if scan else "unrolled"}'
        times = results[key] = {n: compile_seconds(load_config(name, n, args.args, scan))
                                for n in args.layers}
        deep, shallow = times[args.layers[-1]], times[args.layers[0]]
        cells = '  '.join(f'{n} layers {w:6.1f} s ({c:5.1f} s CPU)' for n, (w, c) in times.items())
        print(f'{key:18s} {cells}  ratio {deep[0] / shallow[0]:.2f} '
              f'(CPU {deep[1] / shallow[1]:.2f})', flush=True)
  finally:
    jax.config.update('jax_enable_compilation_cache', cached)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(
        {k: {str(n): {'wall_s': w, 'cpu_s': c} for n, (w, c) in v.items()}
         for k, v in results.items()}, indent=2))
  return results


if __name__ == '__main__':
  host.exec_with_malloc_tunables()  # As llmjax's own commands run (llmjax/host.py).
  main()
