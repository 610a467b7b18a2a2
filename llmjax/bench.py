"""How fast a config trains: compile time, step time, tokens/s, FLOP/s, MFU, memory, input throughput.

  python -m llmjax.bench --config=configs/gpt_lm.py [--steps=20 --warmup=3 --out=bench.json]
  python -m llmjax.bench --config=configs/bert_classify.py:batch=32,max_len=64 --config.KEY=VALUE

The step is the one `llmjax.train` runs (`make_train_step`: the same jit, shardings, donation and
optimizer), on the state it would create (random initialisation: pretrained weights do not change the
speed) and on real batches of the config's data pipeline, placed on the devices beforehand so the
timing is of the step alone. Reported:

  compile        seconds to lower and compile the step (the persistent compilation cache is off);
  step           median wall time of `--steps` steps after `--warmup`, each step synced;
  tokens/s       positions computed per second: batch x length (an encoder-decoder: inputs + targets),
                 padding included, as transformers' figures count them;
  FLOP/s, MFU    model FLOPs from the analytical count of `llmjax.model_info.train_flops` (6 per weight
                 of every multiply per token it acts on, the output head at every position, plus
                 attention) per second, and
                 their fraction of the devices' peak: on CPU the measured rate of a 4096 x 4096 float32
                 matmul (printed beside it), on GPU/TPU the chip's datasheet figure for the compute
                 dtype;
  memory         per device: the compiled step's arguments, outputs and temporaries (XLA's
                 memory_analysis), the device's peak bytes in use where the runtime reports it, and
                 the host's peak resident memory;
  input          tokens/s the data pipeline delivers on its own (`train_iter`, prefetch included) and
                 its ratio to what the step consumes: below 1 the step would wait for data.

With `--profile=DIR`, `--profile_steps` more steps run under `jax.profiler.trace(DIR)`, and the time
their operations took is printed by kind and for the slowest operations (`llmjax.profiling`).

`StepBench` is the same measurement as a library, used by benchmarks/throughput_vs_transformers.py to
alternate llmjax and PyTorch steps in one process.
"""

import collections
import contextlib
import json
import resource
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from llmjax import errors, lora, model_info, optim, profiling, sharding, tasks, train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args].')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (the median is reported).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
_BATCHES = flags.DEFINE_integer('batches', 4, 'Distinct data batches the timed steps cycle through.')
_INPUT_BATCHES = flags.DEFINE_integer('input_batches', 50, 'Batches read to time the input pipeline.')
_OUT = flags.DEFINE_string('out', None, 'Also write the figures as JSON to this file.')
_PROFILE = flags.DEFINE_string('profile', None, 'Also trace steps with jax.profiler into this '
                               'directory and print where their time went.')
_PROFILE_STEPS = flags.DEFINE_integer('profile_steps', 3, 'Steps traced with --profile.')

# Datasheet peak FLOP/s per JAX device, dense, by a substring of `device_kind` and compute dtype.
# NVIDIA float32 matmuls run on tensor cores as TF32 under XLA's default precision. A TPU v2/v3
# JAX device is one core (half a chip); v4 and later are one chip (megacore).
_PEAK = (
    ('H200', {'bfloat16': 989e12, 'float16': 989e12, 'float32': 494.7e12}),
    ('H100', {'bfloat16': 989e12, 'float16': 989e12, 'float32': 494.7e12}),
    ('A100', {'bfloat16': 312e12, 'float16': 312e12, 'float32': 156e12}),
    ('TPU v6', {'bfloat16': 918e12}),
    ('TPU v5p', {'bfloat16': 459e12}),
    ('TPU v5', {'bfloat16': 197e12}),  # v5e, "TPU v5 lite"
    ('TPU v4', {'bfloat16': 275e12}),
    ('TPU v3', {'bfloat16': 61.5e12}),
    ('TPU v2', {'bfloat16': 22.5e12}),
)
PEAK_MATMUL_SIZE = 4096  # n of the n x n x n matmul that measures a CPU's peak
_CPU_PEAK = {}  # (dtype, n, compiler options) -> measured FLOP/s, once per process


def matmul_peak(dtype=jnp.float32, n: int = PEAK_MATMUL_SIZE, repeats: int = 5,
                compiler_options: dict | None = None) -> float:
  """FLOP/s of the best of `repeats` n x n x n matmuls on the default device: CPU's attainable peak,
  through the product library the step uses (`train.compiler_options`)."""
  key = (dtype, n, tuple(sorted((compiler_options or {}).items())))
  if key not in _CPU_PEAK:
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    matmul = jax.jit(jnp.matmul, compiler_options=compiler_options)
    matmul(a, a).block_until_ready()
    best = float('inf')
    for _ in range(repeats):
      start = time.perf_counter()
      matmul(a, a).block_until_ready()
      best = min(best, time.perf_counter() - start)
    _CPU_PEAK[key] = 2 * n ** 3 / best
  return _CPU_PEAK[key]


def peak_flops(config: ml_collections.ConfigDict, devices=None) -> tuple[float, str]:
  """The devices' peak FLOP/s for the config's compute dtype, and where the figure comes from."""
  devices = list(jax.devices() if devices is None else devices)
  dtype = np.dtype(config.model.get('dtype', 'float32')).name
  kind = devices[0].device_kind
  if devices[0].platform == 'cpu':
    # Fake CPU devices share the same cores: the host's matmul rate is the peak of all of them.
    n, options = PEAK_MATMUL_SIZE, train.compiler_options(config, devices)
    library = ' (oneDNN)' if options else ''
    return (matmul_peak(jnp.dtype(dtype), n, compiler_options=options),
            f'measured {dtype} {n}^3 matmul on the host CPU{library}')
  for name, peaks in _PEAK:
    if name in kind and dtype in peaks:
      return peaks[dtype] * len(devices), f'{kind} datasheet, {dtype}, x {len(devices)} devices'
  return float('nan'), f'no datasheet peak for {kind!r} in {dtype}'


class StepBench:
  """One config's train step on real batches: built on construction, compiled and timed on demand."""

  def __init__(self, config: ml_collections.ConfigDict, *, batches: int = 4, devices=None):
    self.devices = list(jax.devices() if devices is None else devices)
    self.config, self.data = config, data = train.prepare(config, len(self.devices))
    self.mesh = sharding.make_mesh(config, self.devices)
    self.task = tasks.task_for(config, data)
    tx = optim.make(config.optim, train.total_steps(config, data), lora.trainable(config))
    self.state, shardings = train.create_train_state(self.task, tx, self.mesh, config,
                                                     jax.random.key(config.seed))
    self._rules = sharding.rules(config)
    with self._context():
      self._step = train.make_train_step(self.task, tx, config, self.mesh, shardings)
    # One step shape is timed: of the first 4 x `batches` batches, those of the most common shape
    # (bucketed data compiles one step per bucket length; each would be timed alone).
    iterator = data.train_iter(0)
    first = [next(iterator) for _ in range(4 * batches)]
    counts = collections.Counter(model_info.batch_shape(b) for b in first)
    shape = max(counts, key=lambda s: (counts[s], s))
    self.batches = [b for b in first if model_info.batch_shape(b) == shape][:batches]
    self._device_batches = [sharding.global_batch(b, self.mesh, config) for b in self.batches]
    size, inputs, targets = shape
    self.batch_shape = (size * jax.process_count(), inputs, targets)
    self.tokens_per_step = self.batch_shape[0] * (inputs + targets)
    self.flops_per_step = self.batch_shape[0] * model_info.train_flops(
        config, self.state.params, inputs, targets)
    self._index = 0
    self.compiled = None

  @contextlib.contextmanager
  def _context(self):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self._rules):
      yield

  def compile(self) -> float:
    """Lowers and compiles the step; returns the seconds it took."""
    start = time.perf_counter()
    with self._context():
      self.compiled = self._step.lower(self.state, self._device_batches[0]).compile()
    return time.perf_counter() - start

  def time_steps(self, n: int) -> list[float]:
    """Runs n steps, each synced before the next starts; returns their wall times in seconds."""
    if self.compiled is None:
      self.compile()
    times = []
    with self._context():
      for _ in range(n):
        batch = self._device_batches[self._index % len(self._device_batches)]
        self._index += 1
        start = time.perf_counter()
        self.state, metrics = self.compiled(self.state, batch)
        jax.block_until_ready((self.state, metrics))
        times.append(time.perf_counter() - start)
    return times

  def profile(self, n: int, log_dir: str) -> dict:
    """Runs n steps under `jax.profiler.trace(log_dir)`; returns `profiling.summarize`'s figures."""
    if self.compiled is None:
      self.compile()
    with jax.profiler.trace(log_dir):
      times = self.time_steps(n)
    return profiling.summarize(log_dir, self.compiled.as_text(), n, statistics.median(times))

  def memory(self) -> dict[str, float]:
    """Bytes per device: what the compiled step holds, the device's peak, the host's peak."""
    if self.compiled is None:
      self.compile()
    out = {}
    analysis = self.compiled.memory_analysis()
    if analysis is not None:
      for name in ('argument', 'output', 'temp', 'generated_code'):
        out[f'{name}_bytes'] = float(getattr(analysis, f'{name}_size_in_bytes'))
    stats = self.devices[0].memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
      out['device_peak_bytes'] = float(stats['peak_bytes_in_use'])
    out['host_peak_bytes'] = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return out

  def input_throughput(self, n: int) -> float:
    """Positions per second the data pipeline delivers alone, over n batches after the first."""
    iterator = self.data.train_iter(0)
    next(iterator)  # Opening the source and starting the prefetch thread are not throughput.
    start, tokens = time.perf_counter(), 0
    for _ in range(n):
      size, inputs, targets = model_info.batch_shape(next(iterator))
      tokens += size * (inputs + targets)
    return tokens * jax.process_count() / (time.perf_counter() - start)


def measure(config: ml_collections.ConfigDict, *, steps: int = 10, warmup: int = 2,
            batches: int = 4, input_batches: int = 50, devices=None, profile_dir: str | None = None,
            profile_steps: int = 3) -> dict:
  """Every figure of the module docstring for `config`, as a dict; with `profile_dir`, also
  'profile': `StepBench.profile`'s figures for `profile_steps` steps after the timed ones."""
  if profile_dir:
    profiling.prepare(profile_dir)
  bench = StepBench(config, batches=batches, devices=devices)
  compile_s = bench.compile()
  bench.time_steps(warmup)
  step_s = statistics.median(bench.time_steps(steps))
  peak, peak_source = peak_flops(bench.config, bench.devices)
  tokens_per_s = bench.tokens_per_step / step_s
  flops_per_s = bench.flops_per_step / step_s
  input_tokens_per_s = bench.input_throughput(input_batches)
  m = bench.config.model
  result = {
      'model': m.name,
      'task': bench.config.task.name,
      'devices': f'{len(bench.devices)} x {bench.devices[0].device_kind}',
      'batch': bench.batch_shape[0],
      'length': bench.batch_shape[1],
      'target_length': bench.batch_shape[2],
      'dtype': np.dtype(m.get('dtype', 'float32')).name,
      'compile_s': compile_s,
      'step_s': step_s,
      'tokens_per_s': tokens_per_s,
      'flops_per_step': bench.flops_per_step,
      'flops_per_s': flops_per_s,
      'peak_flops_per_s': peak,
      'peak_source': peak_source,
      'mfu': flops_per_s / peak,
      'memory': bench.memory(),
      'input_tokens_per_s': input_tokens_per_s,
      'input_ratio': input_tokens_per_s / tokens_per_s,
  }
  if profile_dir:
    result['profile'] = bench.profile(profile_steps, profile_dir)
  return result


def format_table(r: dict) -> str:
  """The figures of `measure` as an aligned two-column table."""
  rows = [
      ('model / task', f'{r["model"]} / {r["task"]} on {r["devices"]}'),
      ('batch', f'{r["batch"]} x {r["length"]}'
                + (f' in, {r["target_length"]} out' if r['target_length'] else '')
                + f', {r["dtype"]}'),
      ('compile', f'{r["compile_s"]:.2f} s'),
      ('step (median)', f'{r["step_s"] * 1e3:.1f} ms'),
      ('tokens/s', f'{r["tokens_per_s"]:,.0f}'),
      ('model FLOP/step', f'{r["flops_per_step"] / 1e9:,.2f} G'),
      ('FLOP/s', f'{r["flops_per_s"] / 1e9:,.1f} G'),
      ('peak FLOP/s', f'{r["peak_flops_per_s"] / 1e9:,.1f} G ({r["peak_source"]})'),
      ('MFU', f'{100 * r["mfu"]:.1f}%'),
  ]
  for name, value in r['memory'].items():
    rows.append((f'memory {name[:-len("_bytes")]}', model_info.human(value, 'B')))
  rows.append(('input tokens/s', f'{r["input_tokens_per_s"]:,.0f} '
                                 f'({r["input_ratio"]:.1f}x what the step consumes)'))
  width = max(len(name) for name, _ in rows)
  return '\n'.join(f'{name:{width}s}  {value}' for name, value in rows)


def main(argv):
  del argv
  result = measure(_CONFIG.value, steps=_STEPS.value, warmup=_WARMUP.value,
                   batches=_BATCHES.value, input_batches=_INPUT_BATCHES.value,
                   profile_dir=_PROFILE.value, profile_steps=_PROFILE_STEPS.value)
  print(format_table(result))
  if 'profile' in result:
    print(profiling.format_summary(result['profile']))
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  errors.run(main)
