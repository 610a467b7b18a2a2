"""The launchers of launch/: the exact commands each `--dry-run` prints (quoting included), the
sbatch script run against stand-ins for srun and scontrol, and the local launcher stopping the
others when one process fails. Nothing here reaches gcloud, SLURM or the network."""

import importlib.util
import os
import shlex
import subprocess
import sys
import time

import pytest

from conftest import REPO

MAIN_ARGS = ['--', '--config=configs/bert_classify.py:lr=5e-5', '--config.optim.lr=5e-5']


def launcher(name):
  """launch/NAME.py as a module. launch/ holds scripts, not a package: `python launch/NAME.py` puts
  launch/ on sys.path, where they find their shared `launch_args`; so does this."""
  sys.path.insert(0, str(REPO / 'launch'))
  try:
    spec = importlib.util.spec_from_file_location(f'launch_{name}', REPO / 'launch' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(REPO / 'launch'))
  return module


def _dry_run(name, argv, capsys):
  assert launcher(name).main(['--dry-run', *argv]) == 0
  return capsys.readouterr().out


def test_local_dry_run_prints_one_command_per_process(capsys, monkeypatch):
  # The parent's XLA flags reach the processes, with their own device count.
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/d')
  out = _dry_run('local', ['--processes=3', '--devices_per_process=2', '--port=1234', '--',
                           '--config=configs/bert_classify.py:tiny', '--workdir=/tmp/a run'],
                 capsys)
  env = ("JAX_PLATFORMS=cpu 'XLA_FLAGS=--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=2' "
         'JAX_ENABLE_COMPILATION_CACHE=false')
  assert out.splitlines() == [
      f"{env} {sys.executable} -m llmjax.main --config=configs/bert_classify.py:tiny "
      f"'--workdir=/tmp/a run' --coordinator_address=127.0.0.1:1234 --num_processes=3 "
      f"--process_id={i}" for i in range(3)]


def test_local_launcher_stops_the_others_when_one_fails():
  local = launcher('local')
  sleeper = [sys.executable, '-c', 'import time; time.sleep(120)']
  failing = [sys.executable, '-c', 'import sys, time; time.sleep(1); sys.exit(3)']
  start = time.time()
  assert local.run([({}, sleeper), ({}, failing), ({}, sleeper)], grace_s=5) == 3
  assert time.time() - start < 30
  # Killed by a signal, a process reports 128 + the signal's number, as a shell does.
  assert local.run([({}, [sys.executable, '-c', 'import os; os.kill(os.getpid(), 9)'])]) == 137
  assert local.run([({}, [sys.executable, '-c', 'pass'])] * 2) == 0


def test_tpu_pod_dry_run_creates_copies_installs_runs_and_deletes(capsys):
  out = _dry_run('tpu_pod', [
      '--name=pod', '--zone=us-west4-a', '--project=proj', '--bucket=gs://bkt/runs/x',
      '--create', '--accelerator_type=v5litepod-16', '--runtime_version=v2-alpha-tpuv5-lite',
      '--spot', '--delete', *MAIN_ARGS], capsys)
  where = '--zone=us-west4-a --project=proj'
  ssh = f'gcloud compute tpus tpu-vm ssh pod {where} --worker=all'
  install = (
      "'--command=cd ~/llmjax && python3 -m pip install -q -e . '\"'\"'jax[tpu]==0.10.2'\"'\"' && "
      '{ command -v gcsfuse >/dev/null || { echo "deb '
      '[signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt '
      'gcsfuse-$(lsb_release -c -s) main" | sudo tee '
      '/etc/apt/sources.list.d/gcsfuse.list >/dev/null && curl -fsSL '
      'https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee '
      '/usr/share/keyrings/cloud.google.asc >/dev/null && sudo apt-get update -q && '
      'sudo apt-get install -y -q gcsfuse; }; } && sudo mkdir -p /mnt/bkt && '
      'sudo chown "$USER" /mnt/bkt && { mountpoint -q /mnt/bkt || gcsfuse --implicit-dirs bkt '
      "/mnt/bkt; }'")
  assert out.splitlines() == [
      f'gcloud compute tpus tpu-vm create pod {where} --accelerator-type=v5litepod-16 '
      '--version=v2-alpha-tpuv5-lite --spot',
      f"{ssh} '--command=mkdir -p ~/llmjax'",
      f'gcloud compute tpus tpu-vm scp --recurse {where} --worker=all {REPO}/llmjax {REPO}/configs '
      f"{REPO}/pyproject.toml {REPO}/README.md 'pod:~/llmjax/'",
      f'{ssh} {install}',
      f"{ssh} '--command=cd ~/llmjax && python3 -m llmjax.main --distributed=on "
      "--config=configs/bert_classify.py:lr=5e-5 --config.optim.lr=5e-5 "
      "--workdir=/mnt/bkt/runs/x'",
      f'gcloud compute tpus tpu-vm delete pod {where} --quiet',
  ]
  # What the workers' shells run parses.
  for line in out.splitlines()[1:5]:
    if '--command=' not in line:
      continue
    command = shlex.split(line)[-1].removeprefix('--command=')
    subprocess.run(['bash', '-n', '-c', command], check=True)


def test_tpu_pod_uses_an_existing_slice_without_create(capsys):
  out = _dry_run('tpu_pod', ['--name=pod', '--zone=z', '--bucket=gs://bkt', *MAIN_ARGS], capsys)
  lines = out.splitlines()
  assert len(lines) == 4 and lines[0].startswith('gcloud compute tpus tpu-vm ssh pod --zone=z ')
  assert lines[-1].endswith("--config.optim.lr=5e-5 --workdir=/mnt/bkt'")


@pytest.mark.parametrize('argv, message', [
    (['--bucket=/data/runs', *MAIN_ARGS], 'is not gs://BUCKET/PATH'),
    (['--bucket=gs://b', *MAIN_ARGS, '--workdir=/tmp/x'], '--workdir is set by the launcher'),
    (['--bucket=gs://b', '--create', *MAIN_ARGS], '--create needs --accelerator_type'),
])
def test_tpu_pod_refuses_what_cannot_work(argv, message, capsys):
  with pytest.raises(SystemExit):
    launcher('tpu_pod').main(['--dry-run', '--name=pod', '--zone=z', *argv])
  captured = capsys.readouterr()
  assert message in captured.err and not captured.out


SBATCH_ARGS = ['--nodes=2', '--gpus_per_node=4', '--partition=gpu', '--time=2:00:00',
               '--setup=source ~/venv/bin/activate', '--port=1234', '--',
               '--config=configs/bert_classify.py', "--workdir=/shared/runs/it's here"]


def test_slurm_dry_run_prints_the_script_and_the_sbatch_command(capsys):
  out = _dry_run('slurm', SBATCH_ARGS, capsys)
  assert out == f"""#!/bin/bash
#SBATCH --job-name=llmjax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --output=llmjax-%j.out
#SBATCH --partition=gpu
#SBATCH --time=2:00:00
set -euo pipefail
cd {REPO}
source ~/venv/bin/activate
# Process 0 runs on the first node of the allocation and hosts the coordinator.
COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)":1234
srun --kill-on-bad-exit=1 bash -c 'exec python -m llmjax.main "$@" --num_processes="$SLURM_NTASKS" \
--process_id="$SLURM_PROCID"' llmjax --config=configs/bert_classify.py \
'--workdir=/shared/runs/it'"'"'s here' --coordinator_address="$COORDINATOR"
sbatch llmjax.sbatch
"""
  per_node = _dry_run('slurm', ['--per=node', *SBATCH_ARGS], capsys)
  assert '#SBATCH --ntasks-per-node=1\n' in per_node
  assert '\nexport JAX_LOCAL_DEVICE_IDS=0,1,2,3\n' in per_node


def test_slurm_script_gives_every_task_its_rank_and_the_first_node(capsys, tmp_path):
  """The script, run with stand-ins for scontrol, srun (2 tasks) and python, passes each task
  llmjax's arguments unchanged plus the coordinator flags."""
  script = _dry_run('slurm', [arg for arg in SBATCH_ARGS if not arg.startswith('--setup')],
                    capsys).rsplit('sbatch ', 1)[0]
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  stubs = {
      'scontrol': 'printf "gpu07\\ngpu08\\n"',
      'srun': 'shift; for i in 0 1; do SLURM_NTASKS=2 SLURM_PROCID=$i "$@"; done',
      'python': f'printf "%s\\n" "$@" > {tmp_path}/task$SLURM_PROCID',
  }
  for name, body in stubs.items():
    (bin_dir / name).write_text(f'#!/bin/bash\n{body}\n')
    (bin_dir / name).chmod(0o755)
  env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}',
         'SLURM_JOB_NODELIST': 'gpu[07-08]'}
  subprocess.run(['bash', '-c', script], env=env, check=True)
  for i in range(2):
    assert (tmp_path / f'task{i}').read_text().splitlines() == [
        '-m', 'llmjax.main', '--config=configs/bert_classify.py',
        "--workdir=/shared/runs/it's here", '--coordinator_address=gpu07:1234',
        '--num_processes=2', f'--process_id={i}']


def test_slurm_refuses_a_run_without_a_shared_workdir(capsys):
  with pytest.raises(SystemExit):
    launcher('slurm').main(['--nodes=2', '--gpus_per_node=8', '--dry-run', '--',
                             '--config=configs/bert_classify.py'])
  assert 'no --workdir among the llmjax arguments' in capsys.readouterr().err


@pytest.mark.parametrize('name, own_args', [
    ('local', []), ('tpu_pod', ['--name=pod', '--zone=z', '--bucket=gs://b']),
    ('slurm', ['--nodes=1', '--gpus_per_node=1'])])
def test_a_dry_run_after_the_separator_is_refused_not_run(name, own_args, capsys):
  """Past `--` the flag would reach llmjax, and the job would start for real."""
  with pytest.raises(SystemExit):
    launcher(name).main([*own_args, '--', '--config=c.py', '--workdir=w', '--dry-run'])
  assert '--dry-run comes after --' in capsys.readouterr().err
