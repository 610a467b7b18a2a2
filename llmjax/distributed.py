"""Multi-host start-up: joins this process to a JAX job of several processes, or leaves it alone.

JAX's multi-controller runtime runs the same program in every process (one per host, or one per
GPU); `jax.distributed.initialize` connects them through a coordinator (process 0's address), after
which `jax.devices()` lists the devices of all processes and every jitted step runs on all of them.
`initialize` decides whether to do that, before any other JAX call, from the flags of `llmjax.main`
or the environment, in this order:

  explicit    --coordinator_address=HOST:PORT --num_processes=N --process_id=I, or the environment
              variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (a flag wins
              over its variable). All three are needed. `launch/local.py` starts processes so.
  SLURM       SLURM_JOB_ID is set and SLURM_NTASKS > 1 (one task per GPU or per node, started by
              srun): JAX's SlurmCluster reads the rest (coordinator = the step's first node).
  TPU pod     MEGASCALE_COORDINATOR_ADDRESS (multislice), or TPU_WORKER_HOSTNAMES /
              TPU_PROCESS_ADDRESSES naming more than one host (GKE): JAX's TPU clusters read the
              rest. A TPU VM slice created with gcloud says so only through its metadata server,
              so `launch/tpu_pod.py` passes --distributed=on there.

`--distributed=auto` (the default) follows that list and runs a single process when none applies;
`on` always initializes (letting JAX detect a cluster where no coordinator is given); `off` never
does. `initialization_timeout` bounds the wait for peers that never come; `heartbeat_timeout` is how
long a peer may be silent (dead) before the others abort, so no process ever hangs on a lost peer.
"""

import dataclasses
import os
from collections.abc import Mapping

import jax
from absl import logging

from llmjax.errors import UserError

MODES = ('auto', 'on', 'off')
# The environment variables of the explicit flags (JAX reads the first itself, too).
ENV = {'coordinator_address': 'JAX_COORDINATOR_ADDRESS', 'num_processes': 'JAX_NUM_PROCESSES',
       'process_id': 'JAX_PROCESS_ID'}


@dataclasses.dataclass(frozen=True)
class Plan:
  """How to call `jax.distributed.initialize`; None fields are left to JAX's cluster detection."""
  source: str  # 'explicit', 'slurm', 'tpu' or 'on' (detected by JAX).
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def plan(mode: str = 'auto', coordinator_address: str | None = None,
         num_processes: int | None = None, process_id: int | None = None,
         environ: Mapping[str, str] | None = None) -> Plan | None:
  """What `initialize` will do: a Plan, or None for a single process. Raises UserError for a bad
  combination of flags and environment."""
  environ = os.environ if environ is None else environ
  if mode not in MODES:
    raise UserError(f'--distributed={mode} is not one of {", ".join(MODES)}: pick one')
  if mode == 'off':
    return None
  explicit = _explicit(coordinator_address, num_processes, process_id, environ)
  if explicit is not None:
    return explicit
  if _slurm_tasks(environ) > 1:
    if 'SLURM_STEP_NODELIST' not in environ or 'SLURM_PROCID' not in environ:
      raise UserError(f'SLURM_NTASKS={environ["SLURM_NTASKS"]} but this process is not a task of '
                      'an srun job step: start it with srun (see launch/slurm.py), or pass '
                      '--distributed=off for one process')
    return Plan('slurm')
  if _tpu_pod(environ):
    return Plan('tpu')
  return Plan('on') if mode == 'on' else None


def _explicit(coordinator_address, num_processes, process_id, environ) -> Plan | None:
  """The Plan of the explicit flags (or their environment variables), None if none is given."""
  given = {'coordinator_address': coordinator_address, 'num_processes': num_processes,
           'process_id': process_id}
  source = {}
  for name, value in given.items():
    if value is not None:
      source[name] = f'--{name}'
    elif environ.get(ENV[name]):
      given[name], source[name] = environ[ENV[name]], ENV[name]
  if not source:
    return None
  missing = [f'--{n} (or {ENV[n]})' for n in given if n not in source]
  if missing:
    raise UserError(f'{" and ".join(source.values())} given without {" and ".join(missing)}: '
                    'a multi-process job needs all three of coordinator address, process count '
                    'and process id')
  for name in ('num_processes', 'process_id'):
    try:
      given[name] = int(given[name])
    except ValueError:
      raise UserError(f'{source[name]}={given[name]} is not an integer: pass a whole '
                      'number') from None
  address, n, i = given['coordinator_address'], given['num_processes'], given['process_id']
  host, _, port = address.rpartition(':')
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f'{source["coordinator_address"]}={address} is not HOST:PORT: pass process '
                    "0's host and a free port, e.g. 10.0.0.2:1234")
  if n < 1:
    raise UserError(f'{source["num_processes"]}={n} must be >= 1: pass the number of processes')
  if not 0 <= i < n:
    raise UserError(f'{source["process_id"]}={i} is not in 0..{n - 1} ({source["num_processes"]}'
                    f'={n}): number the processes from 0')
  return Plan('explicit', address, n, i)


def _slurm_tasks(environ) -> int:
  if 'SLURM_JOB_ID' not in environ:
    return 0
  value = environ.get('SLURM_NTASKS', '1')
  if not value.isdigit():
    raise UserError(f'SLURM_NTASKS={value} is not an integer: check the job\'s --ntasks')
  return int(value)


def _tpu_pod(environ) -> bool:
  if environ.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return True
  hosts = environ.get('TPU_PROCESS_ADDRESSES') or environ.get('TPU_WORKER_HOSTNAMES') or ''
  return len([h for h in hosts.split(',') if h]) > 1


def initialize(mode: str = 'auto', coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None, *,
               initialization_timeout: int = 300, heartbeat_timeout: int = 100,
               environ: Mapping[str, str] | None = None) -> Plan | None:
  """Joins the JAX job that the flags or the environment describe (see the module docstring);
  must run before any other JAX call. Logs this process's place in the job; returns the Plan."""
  for name, value in (('initialization_timeout', initialization_timeout),
                      ('heartbeat_timeout', heartbeat_timeout)):
    if value <= 0:
      raise UserError(f'--{name}={value} must be > 0 seconds: pass e.g. --{name}=60')
  p = plan(mode, coordinator_address, num_processes, process_id, environ)
  if p is not None:
    try:
      jax.distributed.initialize(
          p.coordinator_address, p.num_processes, p.process_id,
          initialization_timeout=initialization_timeout,
          heartbeat_timeout_seconds=heartbeat_timeout)
    except ValueError as e:  # JAX found no cluster to fill in what was not given.
      reason = {'on': '--distributed=on', 'slurm': 'SLURM_NTASKS > 1',
                'tpu': 'the TPU environment names several hosts'}.get(p.source, 'the flags')
      raise UserError(f'jax.distributed.initialize found no cluster to join ({e}) although '
                      f'{reason} asked for one: pass --coordinator_address, --num_processes and '
                      '--process_id, or --distributed=off') from e
  logging.info('Process %d of %d (%s): %d local devices, %d global devices.', jax.process_index(),
               jax.process_count(), p.source if p else 'single process', jax.local_device_count(),
               jax.device_count())
  return p
