"""Writes and submits an sbatch script that runs one llmjax job on the GPUs of several SLURM nodes.

  python launch/slurm.py --nodes=2 --gpus_per_node=8 [--per=gpu|node] [--port=29500] \
      [--partition=P] [--time=24:00:00] [--job_name=llmjax] [--setup='source venv/bin/activate'] \
      [--script=FILE] [--dry-run] -- --config=configs/bert_classify.py --workdir=/shared/runs/x

The script asks for `--nodes` nodes with `--gpus_per_node` GPUs each and starts the llmjax processes
with `srun`: one per GPU (`--per=gpu`, the default: each process drives the GPU of its local rank,
as jax.distributed does under SLURM) or one per node (`--per=node`: each process drives all the
GPUs of its node). Process 0 runs on the first node of the allocation (`scontrol show hostnames
$SLURM_JOB_NODELIST`), which hosts the coordinator at `--port`; every process gets
`--coordinator_address`, `--num_processes=$SLURM_NTASKS` and `--process_id=$SLURM_PROCID`.
`srun --kill-on-bad-exit=1` ends the job when one process fails. The workdir must be on a file
system that all nodes share. The script runs from this checkout's directory after the `--setup`
line (e.g. activating the environment where llmjax is installed).

The script is written to `--script` (default: JOB_NAME.sbatch in the current directory) and
submitted with `sbatch`. `--dry-run` prints the script and then the sbatch command, and writes and
submits nothing.
"""

import argparse
import os
import shlex
import subprocess
import sys

import launch_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(args: argparse.Namespace, main_args: list[str]) -> str:
  """The sbatch script."""
  tasks_per_node = args.gpus_per_node if args.per == 'gpu' else 1
  directives = [f'--job-name={args.job_name}', f'--nodes={args.nodes}',
                f'--ntasks-per-node={tasks_per_node}', f'--gpus-per-node={args.gpus_per_node}',
                f'--output={args.job_name}-%j.out']
  directives += [f'--partition={args.partition}'] if args.partition else []
  directives += [f'--time={args.time}'] if args.time else []
  lines = ['#!/bin/bash'] + [f'#SBATCH {d}' for d in directives] + [
      'set -euo pipefail', f'cd {shlex.quote(REPO)}']
  lines += [args.setup] if args.setup else []
  if args.per == 'node':
    # Under SLURM, jax.distributed gives each process the GPU of its local rank; a process per
    # node drives all of them.
    lines.append('export JAX_LOCAL_DEVICE_IDS=' + ','.join(map(str, range(args.gpus_per_node))))
  lines += [
      # sed reads all of scontrol's output: head would leave it a broken pipe, fatal with pipefail.
      '# Process 0 runs on the first node of the allocation and hosts the coordinator.',
      'COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"'
      f':{args.port}',
      # Each task's own bash expands its rank; "$@" passes llmjax's arguments through unchanged.
      "srun --kill-on-bad-exit=1 bash -c 'exec python -m llmjax.main \"$@\" "
      '--num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"\' llmjax ' + shlex.join(
          main_args) + ' --coordinator_address="$COORDINATOR"',
  ]
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> int:
  parser = launch_args.parser(__doc__)
  parser.add_argument('--nodes', type=int, required=True, help='How many nodes.')
  parser.add_argument('--gpus_per_node', type=int, required=True, help='GPUs of each node.')
  parser.add_argument('--per', choices=('gpu', 'node'), default='gpu',
                      help='One process per GPU (default) or per node.')
  parser.add_argument('--port', type=int, default=29500, help="The coordinator's port.")
  parser.add_argument('--partition', default=None, help='The SLURM partition.')
  parser.add_argument('--time', default=None, help='Time limit, e.g. 24:00:00.')
  parser.add_argument('--job_name', default='llmjax', help='The job name (and output file prefix).')
  parser.add_argument('--setup', default=None,
                      help='A shell line run before llmjax, e.g. "source venv/bin/activate".')
  parser.add_argument('--script', default=None, help='Where to write the script '
                      '(default: JOB_NAME.sbatch in the current directory).')
  args, main_args = launch_args.parse(parser, argv)
  if not any(a.startswith('--workdir') for a in main_args):
    parser.error('no --workdir among the llmjax arguments: add e.g. -- '
                 '--config=configs/bert_classify.py --workdir=/shared/runs/x (on a file system '
                 'all nodes share)')
  if args.nodes < 1 or args.gpus_per_node < 1:
    parser.error('--nodes and --gpus_per_node must be >= 1')
  if not 0 < args.port < 65536:
    parser.error(f'--port={args.port} is not a port: pick one in 1..65535')
  text = script(args, main_args)
  path = args.script or f'{args.job_name}.sbatch'
  submit = ['sbatch', path]
  if args.dry_run:
    print(text + shlex.join(submit))
    return 0
  with open(path, 'w') as f:
    f.write(text)
  return subprocess.run(submit).returncode


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
