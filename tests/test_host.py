"""llmjax.host: which command lines re-execute with malloc on huge pages, with what environment,
and that a command really runs with the tunable set."""

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


def test_the_environment_adds_the_tunable_once_and_respects_opt_outs(monkeypatch):
  monkeypatch.setattr(host, '_thp_mode', lambda: 'madvise')
  monkeypatch.setattr(host, '_glibc_has_tunable', lambda: True)
  monkeypatch.setattr(sys, 'platform', 'linux')
  assert host.huge_pages_environment({'A': '1'}) == {'A': '1', 'GLIBC_TUNABLES': host.TUNABLE}
  assert host.huge_pages_environment({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}) == {
      'GLIBC_TUNABLES': f'glibc.malloc.arena_max=2:{host.TUNABLE}'}
  assert host.huge_pages_environment({'GLIBC_TUNABLES': host.TUNABLE}) is None  # once
  assert host.huge_pages_environment({'LLMJAX_HUGE_PAGES': '0'}) is None
  for mode in ('always', 'never', ''):
    monkeypatch.setattr(host, '_thp_mode', lambda mode=mode: mode)
    assert host.huge_pages_environment({}) is None
  monkeypatch.setattr(host, '_thp_mode', lambda: 'madvise')
  monkeypatch.setattr(host, '_glibc_has_tunable', lambda: False)
  assert host.huge_pages_environment({}) is None


def test_a_command_runs_with_the_tunable_where_it_applies():
  environ = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  applies = host.huge_pages_environment(environ) is not None
  # `python -m llmjax.host` prints the GLIBC_TUNABLES it runs with.
  out = subprocess.run([sys.executable, '-m', 'llmjax.host'], env=environ, capture_output=True,
                       text=True, check=True, timeout=60).stdout.strip()
  assert out == (host.TUNABLE if applies else '')
