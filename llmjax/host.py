"""The process an llmjax command runs in: glibc's malloc backed by transparent huge pages.

XLA's CPU runtime allocates a step's temporaries anew at every step and frees them after (540 MB for
MiniLM at 32 x 64), and glibc maps blocks that large afresh each time, so every step faults its
temporaries in, 4 KiB at a time: 132,000 page faults and 0.18 s of system time per step there. With
glibc's tunable `glibc.malloc.hugetlb=1` malloc asks the kernel for transparent huge pages of 2 MiB
(where THP is in `madvise` mode, most distributions' default): under 1,000 faults per step, and fewer
TLB misses besides.

A glibc tunable is read when a process starts, so an llmjax command (`python -m llmjax.NAME`, or the
`llmjax` script) executes itself again once with it set, before anything heavy is imported
(`llmjax/__init__.py`). Nothing happens when GLIBC_TUNABLES already sets it, when
LLMJAX_HUGE_PAGES=0, off Linux, with a glibc older than 2.35 (which lacks the tunable), when THP is
`never` or `always` (every mapping gets huge pages already), or when another program imports llmjax
(tests, notebooks; a script can call `exec_with_huge_pages()` itself, as the benchmarks do).
"""

import os
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
_THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'


def is_command(argv: list[str]) -> bool:
  """Whether the interpreter's command line `argv` (sys.orig_argv) runs an llmjax command."""
  if len(argv) > 1 and os.path.basename(argv[1]) == 'llmjax':  # The console script.
    return True
  args = iter(argv[1:])
  for arg in args:
    if arg == '-m':
      return next(args, '').startswith('llmjax.')
    if arg in ('-X', '-W', '--check-hash-based-pycs'):  # Options that take a value.
      next(args, None)
    elif arg == '-c' or not arg.startswith('-'):  # Code or a script: what follows is theirs.
      return False
  return False


def _glibc_has_tunable() -> bool:
  version = os.confstr('CS_GNU_LIBC_VERSION') if 'CS_GNU_LIBC_VERSION' in os.confstr_names else ''
  if not version.startswith('glibc '):
    return False
  major, minor = (int(x) for x in version.split()[1].split('.')[:2])
  return (major, minor) >= (2, 35)


def _thp_mode() -> str:
  try:
    with open(_THP_MODE) as f:
      text = f.read()
  except OSError:
    return ''
  return text[text.find('[') + 1:text.find(']')] if '[' in text else ''


def huge_pages_environment(environ) -> dict[str, str] | None:
  """The environment to run with so that malloc uses huge pages, or None when there is nothing to
  do (see the module docstring)."""
  tunables = environ.get('GLIBC_TUNABLES', '')
  if (sys.platform != 'linux' or environ.get('LLMJAX_HUGE_PAGES') == '0'
      or 'glibc.malloc.hugetlb' in tunables or _thp_mode() != 'madvise'
      or not _glibc_has_tunable()):
    return None
  return {**environ, 'GLIBC_TUNABLES': ':'.join(filter(None, (tunables, TUNABLE)))}


def exec_with_huge_pages() -> None:
  """Executes this process's command line again with the tunable set (does not return), or does
  nothing (see `huge_pages_environment`)."""
  environ = huge_pages_environment(os.environ)
  if environ is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)


if __name__ == '__main__':
  # `python -m llmjax.host` prints what a command runs with (the tests read it).
  print(os.environ.get('GLIBC_TUNABLES', ''))
