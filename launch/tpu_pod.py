"""Runs one llmjax command on every worker of a Cloud TPU VM slice, creating the slice if asked.

  python launch/tpu_pod.py --name=NAME --zone=ZONE --bucket=gs://BUCKET/runs/RUN [--project=P] \
      [--create --accelerator_type=v5litepod-16 --runtime_version=v2-alpha-tpuv5-lite [--spot]] \
      [--delete] [--dry-run] -- --config=configs/bert_classify.py [--config.KEY=VALUE ...]

The steps, each one `gcloud` command run from this machine:

  1. with `--create`: `gcloud compute tpus tpu-vm create` the slice;
  2. copy this checkout's code (llmjax/, configs/, pyproject.toml, README.md) to ~/llmjax on every
     worker (`tpu-vm scp --worker=all`);
  3. on every worker (`tpu-vm ssh --worker=all`): install llmjax with the jax[tpu] of the version
     installed here, and mount the bucket with gcsfuse at /mnt/BUCKET (installed from Google's apt
     repository if missing), so that the workdir is one directory that all workers share, where
     checkpoints are written by all processes together and the other files by process 0;
  4. on every worker: `python3 -m llmjax.main --distributed=on ARGS --workdir=/mnt/BUCKET/PATH`.
     A slice says that it is one only through its metadata server, which `jax.distributed` reads
     once --distributed=on asks it to; the workers then form one JAX job over all the chips;
  5. with `--delete`: delete the slice when the run has finished (whatever its status).

`--dry-run` prints the commands, one line each, and runs nothing. A step that fails stops the rest.
"""

import argparse
import importlib.metadata
import os
import shlex
import subprocess
import sys

import launch_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = ('llmjax', 'configs', 'pyproject.toml', 'README.md')  # What a worker needs to run llmjax.
# gcsfuse from Google's apt repository, as its install guide has it.
GCSFUSE = ('{ command -v gcsfuse >/dev/null || { '
           'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] '
           'https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" '
           '| sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && '
           'curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg '
           '| sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && '
           'sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }; }')


def split_bucket(url: str) -> tuple[str, str] | None:
  """gs://BUCKET/PATH -> (BUCKET, PATH); None for another kind of URL."""
  bucket, _, path = url.removeprefix('gs://').partition('/')
  return (bucket, path.strip('/')) if url.startswith('gs://') and bucket else None


def commands(args: argparse.Namespace, main_args: list[str]) -> list[list[str]]:
  """The gcloud commands of the run, in order."""
  where = [f'--zone={args.zone}'] + ([f'--project={args.project}'] if args.project else [])
  tpu_vm = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  bucket, path = split_bucket(args.bucket)
  mount = f'/mnt/{bucket}'
  jax_version = importlib.metadata.version('jax')
  install = ' && '.join([
      'cd ~/llmjax',
      f'python3 -m pip install -q -e . {shlex.quote(f"jax[tpu]=={jax_version}")}',
      GCSFUSE,
      f'sudo mkdir -p {mount}',
      f'sudo chown "$USER" {mount}',
      f'{{ mountpoint -q {mount} || gcsfuse --implicit-dirs {bucket} {mount}; }}'])
  workdir = f'{mount}/{path}' if path else mount
  train = 'cd ~/llmjax && ' + shlex.join(
      ['python3', '-m', 'llmjax.main', '--distributed=on', *main_args, f'--workdir={workdir}'])
  cmds = []
  if args.create:
    cmds.append(tpu_vm + ['create', args.name, *where,
                          f'--accelerator-type={args.accelerator_type}',
                          f'--version={args.runtime_version}'] + (['--spot'] if args.spot else []))
  cmds += [
      tpu_vm + ['ssh', args.name, *where, '--worker=all', '--command=mkdir -p ~/llmjax'],
      tpu_vm + ['scp', '--recurse', *where, '--worker=all',
                *(os.path.join(REPO, c) for c in CODE), f'{args.name}:~/llmjax/'],
      tpu_vm + ['ssh', args.name, *where, '--worker=all', f'--command={install}'],
      tpu_vm + ['ssh', args.name, *where, '--worker=all', f'--command={train}'],
  ]
  if args.delete:
    cmds.append(tpu_vm + ['delete', args.name, *where, '--quiet'])
  return cmds


def main(argv: list[str]) -> int:
  parser = launch_args.parser(__doc__)
  parser.add_argument('--name', required=True, help='The TPU VM slice.')
  parser.add_argument('--zone', required=True, help='Its zone, e.g. us-west4-a.')
  parser.add_argument('--project', default=None, help="The Cloud project (default: gcloud's).")
  parser.add_argument('--bucket', required=True,
                      help='gs://BUCKET/PATH: the workdir, shared by all workers.')
  parser.add_argument('--create', action='store_true', help='Create the slice first.')
  parser.add_argument('--accelerator_type', default=None, help='With --create, e.g. v5litepod-16.')
  parser.add_argument('--runtime_version', default=None,
                      help='With --create, the TPU VM image, e.g. v2-alpha-tpuv5-lite.')
  parser.add_argument('--spot', action='store_true', help='With --create, a Spot slice.')
  parser.add_argument('--delete', action='store_true', help='Delete the slice after the run.')
  args, main_args = launch_args.parse(parser, argv)
  if not any(a.startswith('--config') for a in main_args):
    parser.error('no --config among the llmjax arguments: add e.g. -- '
                 '--config=configs/bert_classify.py')
  if any(a.startswith('--workdir') for a in main_args):
    parser.error('--workdir is set by the launcher from --bucket: leave it out')
  if split_bucket(args.bucket) is None:
    parser.error(f'--bucket={args.bucket} is not gs://BUCKET/PATH: name a Cloud Storage bucket '
                 'that all workers can write')
  if args.create and not (args.accelerator_type and args.runtime_version):
    parser.error('--create needs --accelerator_type and --runtime_version')
  cmds = commands(args, main_args)
  if args.dry_run:
    print('\n'.join(shlex.join(c) for c in cmds))
    return 0
  status = 0
  for c in cmds[:-1] if args.delete else cmds:
    status = subprocess.run(c).returncode
    if status:
      print(f'tpu_pod.py: {shlex.join(c[:5])} ... failed with status {status}', file=sys.stderr)
      break
  if args.delete:
    status = subprocess.run(cmds[-1]).returncode or status
  return status


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
