"""Starts one llmjax job of N processes on this machine, each with its own fake CPU devices.

  python launch/local.py [--processes=2] [--devices_per_process=4] [--port=PORT] [--dry-run] \
      -- --config=configs/bert_classify.py:tiny --workdir=/tmp/run [--config.KEY=VALUE ...]

Every process runs `python -m llmjax.main` with the arguments after `--`, plus
`--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I` (a free port unless `--port`
names one), on the CPU with `--devices_per_process` devices (the parent's XLA_FLAGS with the device
count replaced). Together the processes form one JAX job of N x D devices, as
the hosts of a TPU pod or a GPU cluster do: what the tests use to check multi-host code on one
machine. The launcher waits for all; if one fails, it stops the others and exits with that one's
status. `--dry-run` prints the commands, one line each, and starts nothing. Run it from the
checkout's root, or anywhere once llmjax is installed (`pip install -e .`).
"""

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import launch_args


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def commands(processes: int, devices_per_process: int, port: int,
             main_args: list[str]) -> list[tuple[dict[str, str], list[str]]]:
  """(environment settings, argv) of each process."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if not f.startswith('--xla_force_host_platform_device_count')]
  flags.append(f'--xla_force_host_platform_device_count={devices_per_process}')
  # No persistent compilation cache: on the CPU its keys differ between processes and only
  # process 0 writes it, so process 0 would skip a compile that the others do, and reach the first
  # collective so far ahead of them that gloo's 30 s rendezvous fails.
  env = {'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': ' '.join(flags),
         'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  return [(env, [sys.executable, '-m', 'llmjax.main', *main_args,
                 f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}',
                 f'--process_id={i}'])
          for i in range(processes)]


def shell_line(env: dict[str, str], argv: list[str]) -> str:
  return shlex.join([f'{k}={v}' for k, v in env.items()] + argv)


def run(cmds: list[tuple[dict[str, str], list[str]]], grace_s: float = 10.0) -> int:
  """Runs the processes until all finish; the first failure stops the rest. Returns the status."""
  procs = [subprocess.Popen(argv, env={**os.environ, **env}) for env, argv in cmds]
  status = 0
  try:
    while True:
      codes = [p.poll() for p in procs]  # Every process, each time: a failure may be anywhere.
      status = next((c for c in codes if c), 0)
      if status or None not in codes:
        break
      time.sleep(0.1)
  finally:
    _stop([p for p in procs if p.poll() is None], grace_s)
  if status:
    print(f'launch/local.py: a process exited with status {status}; stopped the others',
          file=sys.stderr)
  # A child killed by a signal has a negative status; report it the way a shell would.
  return 128 - status if status < 0 else status


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
  for p in procs:
    p.send_signal(signal.SIGTERM)
  deadline = time.time() + grace_s
  for p in procs:
    try:
      p.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def main(argv: list[str]) -> int:
  parser = launch_args.parser(__doc__)
  parser.add_argument('--processes', type=int, default=2, help='How many processes (hosts).')
  parser.add_argument('--devices_per_process', type=int, default=4,
                      help='Fake CPU devices of each process.')
  parser.add_argument('--port', type=int, default=None,
                      help="The coordinator's port (default: a free one).")
  args, main_args = launch_args.parse(parser, argv)
  if args.processes < 1 or args.devices_per_process < 1:
    parser.error('--processes and --devices_per_process must be >= 1')
  cmds = commands(args.processes, args.devices_per_process, args.port or free_port(), main_args)
  if args.dry_run:
    print('\n'.join(shell_line(env, a) for env, a in cmds))
    return 0
  return run(cmds)


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
