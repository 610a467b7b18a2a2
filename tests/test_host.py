"""llmjax.host: which command lines re-execute with the malloc tunables, with what environment,
and that a command really runs with them set and reuses freed memory."""

import os
import subprocess
import sys

import pytest

from llmjax import host


@pytest.mark.parametrize('argv,expected', [
    (['python', '-m', 'llmjax.main', '--config=c.py'], True),
    (['python', '-u', '-X', 'faulthandler', '-m', 'llmjax.bench'], True),
    (['/venv/bin/python', '/venv/bin/llmjax', '--workdir=w'], True),  # the console script
    (['python', '-m', 'pytest', '-q'], False),
    (['python', 'benchmarks/x.py', '-m', 'llmjax.main'], False),  # the script's own arguments
    (['python', '-c', 'import llmjax'], False),
    (['python'], False),
])
def test_commands_are_told_from_other_programs(argv, expected):
  assert host.is_command(argv) is expected


def test_the_environment_adds_the_tunables_once_and_respects_the_users(monkeypatch):
  monkeypatch.setattr(host, '_thp_mode', lambda: 'madvise')
  monkeypatch.setattr(host, '_glibc_version', lambda: (2, 36))
  monkeypatch.setattr(sys, 'platform', 'linux')
  ours = ':'.join(host.tunables())
  assert len(host.tunables()) == 4
  assert host.malloc_environment({'A': '1'}) == {'A': '1', 'GLIBC_TUNABLES': ours}
  assert host.malloc_environment({'GLIBC_TUNABLES': ours}) is None  # once
  # A user's own value is kept, and the others added after it.
  env = host.malloc_environment({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=4:glibc.other=1'})
  assert env['GLIBC_TUNABLES'].split(':')[:2] == ['glibc.malloc.arena_max=4', 'glibc.other=1']
  assert [t.split('=')[0] for t in env['GLIBC_TUNABLES'].split(':')].count(
      'glibc.malloc.arena_max') == 1
  assert len(env['GLIBC_TUNABLES'].split(':')) == 5
  assert host.malloc_environment({'LLMJAX_MALLOC': 'default'}) is None
  # Huge pages only where THP is in madvise mode; the others wherever glibc reads them.
  for mode in ('always', 'never', ''):
    monkeypatch.setattr(host, '_thp_mode', lambda mode=mode: mode)
    assert 'glibc.malloc.hugetlb=1' not in host.tunables() and len(host.tunables()) == 3
  monkeypatch.setattr(host, '_thp_mode', lambda: 'madvise')
  monkeypatch.setattr(host, '_glibc_version', lambda: (2, 31))
  assert 'glibc.malloc.hugetlb=1' not in host.tunables() and len(host.tunables()) == 3
  monkeypatch.setattr(host, '_glibc_version', lambda: (2, 17))
  assert host.malloc_environment({}) is None
  monkeypatch.setattr(host, '_glibc_version', lambda: None)  # musl, or not Linux
  assert host.malloc_environment({}) is None


def test_a_command_runs_with_the_tunables_where_they_apply():
  environ = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  expected = host.malloc_environment(environ)
  # `python -m llmjax.host` prints the GLIBC_TUNABLES it runs with.
  out = subprocess.run([sys.executable, '-m', 'llmjax.host'], env=environ, capture_output=True,
                       text=True, check=True, timeout=60).stdout.strip()
  assert out == (expected['GLIBC_TUNABLES'] if expected else '')


def test_memory_freed_by_a_step_is_reused_by_the_next():
  """Under the tunables a large block freed and allocated again faults no new page."""
  environ = host.malloc_environment({k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'})
  if environ is None:
    pytest.skip('this machine\'s glibc reads none of the tunables')
  code = (
      'import numpy as np, resource\n'
      'def step():\n'
      '  a = np.ones(64 * 2**20 // 8)\n'  # 64 MiB, far above glibc's largest mmap threshold
      '  del a\n'
      'step()\n'
      'before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n'
      'for _ in range(5): step()\n'
      'print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n')
  faults = {}
  for name, env in (('tuned', environ), ('default', {**environ, 'GLIBC_TUNABLES': ''})):
    faults[name] = int(subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                                      text=True, check=True, timeout=60).stdout)
  # Mapped afresh, each block faults in again (2,720 faults on the machine this was written on,
  # where numpy asks for huge pages itself); reused, none.
  assert faults['tuned'] < 50 < faults['default'], faults
