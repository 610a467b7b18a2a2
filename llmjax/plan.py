"""Plans a training run for hardware this machine lacks: does the config's train step fit a TPU
slice (or N GPUs), and how does it use each device's memory?

  python -m llmjax.plan --config=configs/bert_mlm.py:bert_base --target=v5e:4x4 \
      --config.mesh.data=1 --config.mesh.fsdp=-1 [--out=plan.json]

The step is the one `llmjax.train` runs (`make_train_step`: the same jit, shardings, donation and
optimizer) on the state it would create (`abstract_train_state`), lowered for the target's devices
without them and compiled by the target's own compiler: libtpu makes compile-only devices of any
TPU slice (`jax.experimental.topologies`), so the figures are those of the program the real chips
would run. Printed per device:

  parameters, optimizer state   this device's shards of them (from their shardings);
  batch                         this device's rows of the batch;
  layout padding                what the arguments take beyond those: TPUs store arrays in tiles
                                (8 x 128 for float32), so a shard's last dimensions are padded up;
  temporaries                   XLA's temp buffers: gradients, activations kept for the backward
                                pass, collectives' and fusions' scratch;
  code                          the generated program, which a TPU holds in HBM;
  total                         arguments + outputs - donated (aliased) buffers + temporaries +
                                code, against the chip's HBM;
  step FLOPs                    the analytical model FLOPs of `llmjax.model_info.train_flops`
                                (whole batch, and per device), and XLA's count for the compiled
                                per-device program where the compiler gives one (it counts a
                                loop's body once: one layer with `scan_layers`, one microbatch
                                with `optim.grad_accum_steps`).

A step that does not fit fails to compile with RESOURCE_EXHAUSTED: reported as DOES NOT FIT with
the compiler's one-line account, the sharded state's sizes still printed. The exit status is 0
either way (the JSON of `--out` says `fits`); a UserError (a bad target, config or mesh) exits 2.

Targets: a TPU slice by topology (`v5e:4x4`, `v6e:8x8`, `v4:2x2x4`, `v5p:4x4x4`) or by its Cloud
name (`v5e-16` and `v5litepod-16` count chips; `v4-32` and `v5p-32` count TensorCores, two per
chip). v4 and v5p chips are one JAX device each (megacore), as on a real slice. Planning needs
libtpu, an optional extra (`pip install -e '.[tpu]'`), but no TPU; libtpu takes a lock file, so
one planning process at a time per machine. `8xH100` (up to 8, or hosts of 8) compiles with XLA's
GPU compiler from JAX's CUDA plugin (`pip install -e '.[plan-cuda]'`; no CUDA libraries or GPU
needed, but for cuDNN's with `model.attention_kernel=cudnn_flash`: JAX reads its version while
tracing); that compiler does not fail a program too large, so its verdict is the step's buffers
against the memory of an H100.

No data is read: the batch is `config.batch_size` empty rows of the task's packed-text format
(`llmjax.data.lm`: the row layout the data pipeline emits), so a config whose corpus or tokenizer
lives elsewhere (C4, English Wikipedia) plans on any machine. Hence the tasks planned are the
packed-text ones (causal_lm, mlm, span_corruption, translation, summarization, sft); the
fine-tuning tasks' rows come from their data and are bucketed by length.
"""

import dataclasses
import importlib.util
import json
import math
import os
import re
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from llmjax import config_lib, errors, lora, model_info, models, optim, sharding, tasks, train
from llmjax.data import lm, translation
from llmjax.data import sft as sft_data
from llmjax.errors import UserError

# Planning compiles for the target and runs nothing on a local accelerator: JAX's default backend
# stays the CPU, unless JAX_PLATFORMS says otherwise (with libtpu or the CUDA plugin installed, JAX
# would probe for a TPU or GPU when it first runs something). Set before any backend starts, not in
# the environment: importing llmjax has imported JAX already.
if not os.environ.get('JAX_PLATFORMS'):
  jax.config.update('jax_platforms', 'cpu')

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class TpuChip:
  """A TPU generation: HBM per chip, how its Cloud names count (TensorCores per chip: 2 in
  `v4-32`), whether its two cores form one device (megacore), its Cloud name and the rank of its
  topologies."""
  hbm_bytes: int
  cores_per_name: int
  megacore: bool
  cloud_name: str
  topology_rank: int


TPUS = {
    'v4': TpuChip(32 * GIB, 2, True, 'v4', 3),
    'v5p': TpuChip(95 * GIB, 2, True, 'v5p', 3),
    'v5e': TpuChip(16 * GIB, 1, False, 'v5litepod', 2),
    'v6e': TpuChip(32 * GIB, 1, False, 'v6e', 2),
}
_TPU_ALIASES = {'v5litepod': 'v5e', 'v5lite': 'v5e', 'v6litepod': 'v6e'}

# What XLA's GPU compiler needs to know of a GPU it cannot see (XLA's TargetConfig proto, as
# xla/tools/hlo_opt/gpu_specs/ holds them): an H100 SXM 80GB.
_H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 84929347584
  shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 }
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 8 }
runtime_version { major: 13 minor: 0 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
# GPU model -> (its name, the memory CUDA reports, XLA's target config).
GPUS = {'h100': ('H100', 84929347584, _H100_TARGET_CONFIG)}
GPUS_PER_HOST = 8
# JAX's GPU allocator takes this fraction of a GPU's memory unless XLA_PYTHON_CLIENT_MEM_FRACTION
# says otherwise.
GPU_MEM_FRACTION = 0.75
_TARGET_HELP = ('a TPU slice such as v5e:4x4, v5e-16, v4:2x2x4 or v4-32 (generations '
                f'{", ".join(TPUS)}), or N GPUs such as 8xH100')


@dataclasses.dataclass(frozen=True)
class Target:
  """Hardware to plan for: a TPU slice of `chip` laid out as `dims`, or `dims[0]` GPUs `chip`."""
  chip: str
  dims: tuple[int, ...]

  @property
  def platform(self) -> str:
    return 'tpu' if self.chip in TPUS else 'cuda'

  @property
  def num_devices(self) -> int:
    return math.prod(self.dims)

  @property
  def name(self) -> str:
    """'v5e:4x4' (the topology name libtpu takes) or '8xH100'."""
    if self.platform == 'cuda':
      return f'{self.dims[0]}x{GPUS[self.chip][0]}'
    return f'{self.chip}:{"x".join(map(str, self.dims))}'

  @property
  def hbm_bytes(self) -> int:
    return TPUS[self.chip].hbm_bytes if self.platform == 'tpu' else GPUS[self.chip][1]

  @property
  def cloud_name(self) -> str:
    """A TPU slice's Cloud accelerator type, e.g. 'v5litepod-16', 'v4-32'."""
    chip = TPUS[self.chip]
    return f'{chip.cloud_name}-{self.num_devices * chip.cores_per_name}'


def parse_target(text: str) -> Target:
  """'v5e:4x4', 'v5e-16', 'v5litepod-16', 'v4:2x2x4', 'v4-32', '8xH100' -> a Target; anything
  else is a UserError."""
  name = re.sub(r'\s+', '', text.strip().lower())
  gpus = re.fullmatch(r'(\d+)x([a-z]\d+)', name)
  if gpus and gpus[2] in GPUS:
    count = int(gpus[1])
    if count < 1 or (count > GPUS_PER_HOST and count % GPUS_PER_HOST):
      raise UserError(f'--target={text!r}: plan up to {GPUS_PER_HOST} GPUs, or hosts of '
                      f'{GPUS_PER_HOST} (a multiple of {GPUS_PER_HOST})')
    return Target(gpus[2], (count,))
  match = re.fullmatch(r'(v\d+[a-z]*)(?::(\d+(?:x\d+)*)|-(\d+))', name)
  generation = match and _TPU_ALIASES.get(match[1], match[1])
  if not match or generation not in TPUS:
    raise UserError(f'--target={text!r} is not a known target: use {_TARGET_HELP}')
  chip = TPUS[generation]
  if match[2]:
    dims = tuple(int(d) for d in match[2].split('x'))
    if len(dims) != chip.topology_rank or min(dims) < 1:
      example = 'x'.join(['2'] * chip.topology_rank)
      raise UserError(f'--target={text!r}: a {generation} slice has {chip.topology_rank} '
                      f'dimensions, e.g. {generation}:{example}')
    return Target(generation, dims)
  count = int(match[3])
  if count % chip.cores_per_name:
    raise UserError(f'--target={text!r}: {generation}-N counts TensorCores, {chip.cores_per_name} '
                    f'per chip: use a multiple of {chip.cores_per_name}')
  return Target(generation, _slice_dims(count // chip.cores_per_name, chip, text))


def _slice_dims(chips: int, chip: TpuChip, text: str) -> tuple[int, ...]:
  """The topology Cloud gives a slice of `chips` chips: 1, then 2x2 (2x2x1) doubled along its
  smallest, last dimension first (v5e-16 -> 4x4, v5e-256 -> 16x16, v4-32 -> 2x2x4)."""
  if chips == 1:
    return (1,) * chip.topology_rank
  if chips < 4 or chips & (chips - 1):
    raise UserError(f'--target={text!r} has {chips} chips, which is no slice of a power of two '
                    '>= 4 chips: give the topology instead, e.g. v5e:2x4 or v4:2x2x3')
  dims = [2, 2] + [1] * (chip.topology_rank - 2)
  while math.prod(dims) < chips:
    smallest = min(dims)
    last = max(i for i, d in enumerate(dims) if d == smallest)
    dims[last] *= 2
  return tuple(dims)


def target_devices(target: Target) -> list:
  """Compile-only devices of `target`, from libtpu or JAX's CUDA plugin (no TPU or GPU needed); a
  UserError when the package is missing or rejects the topology."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  if target.platform == 'cuda':
    if (importlib.util.find_spec('jax_plugins') is None
        or importlib.util.find_spec('jax_plugins.xla_cuda13') is None):
      raise UserError(f'planning for {target.name} needs JAX\'s CUDA plugin, which is not '
                      "installed: install it with pip install -e '.[plan-cuda]' (in its own "
                      'environment: with it, every JAX program probes for a GPU)')
    # The plugin checks the CUDA libraries of a local GPU at start-up; a GPU is what this lacks.
    os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
    hosts, per_host = max(target.num_devices // GPUS_PER_HOST, 1), min(target.num_devices,
                                                                       GPUS_PER_HOST)
    return list(topologies.get_topology_desc(platform='cuda', target_config=GPUS[target.chip][2],
                                             topology=f'1x{hosts}x{per_host}').devices)
  if importlib.util.find_spec('libtpu') is None:
    raise UserError(f'planning for {target.name} needs libtpu, which is not installed: install '
                    "it with pip install -e '.[tpu]' (in its own environment: with libtpu, every "
                    'JAX program probes for a TPU)')
  # Off a TPU VM libtpu cannot ask the metadata server what it runs on; telling it keeps its
  # start-up warnings away. A real TPU VM has these set already.
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', target.cloud_name)
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  # A slice smaller than one host's 2x2 chips (v5e-1) says so; larger ones span several hosts.
  dims = target.dims + (1,) * (3 - len(target.dims))
  options = {'chips_per_host_bounds': tuple(min(d, b) for d, b in zip(dims, (2, 2, 1)))}
  if TPUS[target.chip].megacore:
    options['chip_config_name'] = 'megacore'
  try:
    return list(topologies.get_topology_desc(topology_name=target.name, platform='tpu',
                                             **options).devices)
  except jax.errors.JaxRuntimeError as e:
    if 'lockfile' in str(e):
      raise UserError('libtpu is in use by another process (it holds /tmp/libtpu_lockfile): plan '
                      'one target at a time, or remove the file if no process holds it (lsof '
                      '/tmp/libtpu_lockfile)') from None
    raise UserError(f'libtpu rejects the topology {target.name}: {_first_line(e)}') from None


def _first_line(error: Exception) -> str:
  return str(error).strip().split('\n', 1)[0]


def row_format(config: ml_collections.ConfigDict) -> lm.ExampleFormat:
  """The row layout of the config's packed-text task, as its data builder makes it. Token ids do
  not change a row's shape: the special ids here are placeholders."""
  name, data = config.task.name, config.data
  if name == 'causal_lm':
    return lm.NEXT_TOKEN
  if name == 'sft':
    return sft_data.packed_format()
  if name == 'mlm':
    return lm.masked_lm_format(cls_id=1, sep_id=2, mask_id=3, vocab_size=config.model.vocab_size,
                               special_ids=(0, 1, 2, 3), rate=config.task.mask_rate)
  if name == 'span_corruption':
    return lm.span_corruption_format(
        inputs_length=data.max_len, sentinel_ids=np.arange(lm.NUM_SENTINELS), eos_id=1,
        noise_density=config.task.noise_density,
        mean_noise_span_length=config.task.mean_noise_span_length)
  if name in translation.PAIR_TASKS:
    return lm.translation_format(inputs_length=data.max_len, targets_length=data.target_max_len,
                                 eos_id=1)
  raise UserError(f'config.task.name={name!r}: llmjax.plan plans the packed-text tasks (causal_lm, '
                  'mlm, span_corruption, translation, summarization, sft), whose batches follow '
                  'from the config; time this one with python -m llmjax.bench on its hardware')


def abstract_batch(config: ml_collections.ConfigDict, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The global train batch as ShapeDtypeStructs, sharded as the step takes it."""
  fmt = row_format(config)
  row = fmt.empty_row(config.data.max_len)
  batch = {k: v[None] for k, v in row.items()}
  if fmt.finish is not None:  # e.g. masked LM's labels and weights
    batch = fmt.finish(batch, np.random.default_rng(0))
  target = sharding.batch_sharding(mesh, config)
  return {k: jax.ShapeDtypeStruct((config.batch_size,) + v.shape[1:], v.dtype, sharding=target)
          for k, v in batch.items()}


def _device_bytes(tree) -> int:
  """Bytes one device holds of the sharded ShapeDtypeStructs in `tree` (its shard of each)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def plan(config: ml_collections.ConfigDict, target: Target, devices=None) -> dict:
  """Compiles the train step of `config` for `target` (its compile-only `devices`, by default
  `target_devices(target)`) and returns the figures of the module docstring."""
  num_devices = target.num_devices if devices is None else len(devices)
  # As train.prepare completes a config, without opening its data; a config or task that cannot be
  # planned fails here, before the compiler loads.
  config = ml_collections.ConfigDict(config.to_dict())
  config_lib.validate(config, num_devices)
  models.resolve(config)
  config_lib.validate(config, num_devices)
  row_format(config)
  devices = target_devices(target) if devices is None else list(devices)
  mesh = sharding.make_mesh(config, devices)
  task = tasks.task_for(config)
  steps = max(config.num_train_steps, 1)  # The schedule's length does not change the memory.
  tx = optim.make(config.optim, steps, lora.trainable(config))
  try:
    state = train.abstract_train_state(task, tx, mesh, config, jax.random.key(config.seed))
  except RuntimeError as e:
    if 'cuDNN not found' not in str(e):
      raise
    raise UserError("model.attention_kernel='cudnn_flash' is traced with cuDNN's library, which "
                    "this environment lacks: pip install nvidia-cudnn-cu13 beside the plan-cuda "
                    "extra, or plan with model.attention_kernel='dot_product'") from None
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  batch = abstract_batch(config, mesh)
  rows, inputs, targets = model_info.batch_shape(batch)
  flops = rows * model_info.train_flops(config, state.params, inputs, targets)
  m = config.model
  result = {
      'model': m.name,
      'task': config.task.name,
      'target': target.name,
      'platform': target.platform,
      'devices': f'{len(devices)} x {devices[0].device_kind}',
      'num_devices': len(devices),
      'mesh': config_lib.mesh_shape(config.mesh, len(devices)),
      'batch': rows,
      'length': inputs,
      'target_length': targets,
      'param_dtype': m.param_dtype,
      'dtype': m.dtype,
      'optimizer': config.optim.name,
      'hbm_bytes': target.hbm_bytes,
      'params': sum(x.size for x in jax.tree.leaves(state.params)),
      'param_bytes': _device_bytes(state.params),
      'optimizer_state_bytes': _device_bytes(state.opt_state),
      'flops_per_step': flops,
      'flops_per_device': flops / len(devices),
  }
  # Built outside the mesh's context: it makes its dropout key eagerly, which compile-only devices
  # cannot run (the CPU does).
  step = train.make_train_step(task, tx, config, mesh, state_shardings)
  start, cpu_start = time.perf_counter(), time.process_time()
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.rules(config)):
      compiled = step.lower(state, batch).compile()
  except jax.errors.JaxRuntimeError as e:
    if not str(e).startswith('RESOURCE_EXHAUSTED'):
      raise
    result.update(compile_s=time.perf_counter() - start,
                  compile_cpu_s=time.process_time() - cpu_start, compiled=False, fits=False,
                  verdict=f'DOES NOT FIT: {_oom_line(e)}')
    return result
  # The CPU seconds of all the compiler's threads: what a busy machine does not stretch.
  result.update(compile_s=time.perf_counter() - start,
                compile_cpu_s=time.process_time() - cpu_start)
  memory = compiled.memory_analysis()
  arguments = memory.argument_size_in_bytes
  result.update(
      compiled=True,
      batch_bytes=_device_bytes(batch),
      # What the arguments take beyond their shards' own bytes: TPUs store arrays in tiles (8 x 128
      # for 32-bit types), so a shard's last dimensions are padded up to them.
      padding_bytes=arguments - _device_bytes((state, batch)),
      temp_bytes=memory.temp_size_in_bytes,
      code_bytes=memory.generated_code_size_in_bytes,
      argument_bytes=arguments,
      output_bytes=memory.output_size_in_bytes,
      alias_bytes=memory.alias_size_in_bytes,
  )
  total = result['total_bytes'] = (
      arguments + memory.output_size_in_bytes - memory.alias_size_in_bytes
      + memory.temp_size_in_bytes + memory.generated_code_size_in_bytes)
  if target.platform == 'tpu':
    # The TPU compiler fails a program that does not fit (above), with the HBM it reserves for
    # itself counted: that it compiled is the verdict.
    result.update(fits=True, verdict='FITS')
  else:
    result['fits'], result['verdict'] = gpu_verdict(total, target.hbm_bytes)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if cost and cost.get('flops', -1) > 0:
    result['xla_flops_per_device'] = float(cost['flops'])
    # XLA counts a loop's body once, whatever its trip count.
    loops = (['one layer of the scanned stack'] if m.get('scan_layers') else []) + (
        ['one microbatch'] if config.optim.grad_accum_steps > 1 else [])
    result['xla_flops_note'] = ' and '.join(loops)
  return result


def gpu_verdict(total_bytes: int, hbm_bytes: int) -> tuple[bool, str]:
  """(fits, verdict) of a step whose buffers take `total_bytes` of each GPU's `hbm_bytes`: XLA's GPU
  compiler compiles whatever the memory, so the step fits if its buffers do."""
  if total_bytes > hbm_bytes:
    return False, f'DOES NOT FIT: {_gib(total_bytes)} exceed the {_gib(hbm_bytes)} of a GPU'
  if total_bytes > GPU_MEM_FRACTION * hbm_bytes:
    return True, (f'FITS, above the {GPU_MEM_FRACTION:.0%} of the memory JAX allocates by default: '
                  'run it with XLA_PYTHON_CLIENT_MEM_FRACTION=0.95')
  return True, 'FITS'


def _oom_line(error: Exception) -> str:
  """The compiler's account of an allocation that does not fit, in one line."""
  text = str(error)
  match = re.search(r'(Ran out of memory[^\n]*|Used [^\n]* of [^\n]*)', text)
  return (match[1] if match else _first_line(text)).strip()


def _gib(n: float) -> str:
  """Bytes in binary units, as HBM sizes are quoted."""
  for scale, unit in ((GIB, 'GiB'), (2 ** 20, 'MiB'), (2 ** 10, 'KiB')):
    if abs(n) >= scale / 10:
      return f'{n / scale:.2f} {unit}' if scale == GIB else f'{n / scale:.1f} {unit}'
  return f'{n:.0f} B'


def format_table(r: dict) -> str:
  """The figures of `plan` as an aligned two-column table."""
  mesh = ' '.join(f'{k}={v}' for k, v in r['mesh'].items())
  rows = [
      ('model / task', f'{r["model"]} / {r["task"]}, {r["params"]:,} parameters'),
      ('target', f'{r["target"]}: {r["devices"]}, {_gib(r["hbm_bytes"])} HBM each; mesh {mesh}'),
      ('batch', f'{r["batch"]} x {r["length"]}'
                + (f' in, {r["target_length"]} out' if r['target_length'] else '')
                + f'; parameters {r["param_dtype"]}, compute {r["dtype"]}'),
      ('compile', f'{r["compile_s"]:.1f} s ({r["compile_cpu_s"]:.0f} s of CPU)'),
      ('per device:', ''),
      ('  parameters', _gib(r['param_bytes'])),
      ('  optimizer state', f'{_gib(r["optimizer_state_bytes"])} ({r["optimizer"]})'),
  ]
  if r['compiled']:
    rows += [
        ('  batch', _gib(r['batch_bytes'])),
        *([('  layout padding', f'{_gib(r["padding_bytes"])} (storing the arguments above '
                                  'in tiles)')] if r['padding_bytes'] else []),
        ('  temporaries', f'{_gib(r["temp_bytes"])} (gradients, activations, scratch)'),
        *([('  code', _gib(r['code_bytes']))] if r['code_bytes'] else []),  # GPUs report none
        ('  total', f'{_gib(r["total_bytes"])} of {_gib(r["hbm_bytes"])} '
                    f'({100 * r["total_bytes"] / r["hbm_bytes"]:.0f}%)'),
    ]
  flops = (f'{model_info.human(r["flops_per_step"], "FLOP")} analytical '
           f'({model_info.human(r["flops_per_device"], "FLOP")} per device)')
  if 'xla_flops_per_device' in r:
    flops += f'; XLA: {model_info.human(r["xla_flops_per_device"], "FLOP")} per device'
    if r['xla_flops_note']:
      flops += f' (counting {r["xla_flops_note"]})'
  rows.append(('step FLOPs', flops))
  rows.append(('verdict', r['verdict']))
  width = max(len(name) for name, _ in rows)
  return '\n'.join(f'{name:{width}s}  {value}'.rstrip() for name, value in rows)


def main(argv):
  del argv
  result = plan(flags.FLAGS.config, parse_target(flags.FLAGS.target))
  print(format_table(result))
  if flags.FLAGS.out:
    with open(flags.FLAGS.out, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  # Defined here, not on import: the tests import this module beside llmjax.bench's --config.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file[:args].')
  flags.DEFINE_string('target', None, f'The hardware to plan for: {_TARGET_HELP}.')
  flags.DEFINE_string('out', None, 'Also write the figures as JSON to this file.')
  flags.mark_flags_as_required(['config', 'target'])
  errors.run(main)
