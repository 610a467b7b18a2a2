"""The process an llmjax command runs in: glibc's malloc keeps what it frees, on huge pages.

XLA's CPU runtime allocates a step's temporaries anew at every step and frees them after (1.1 GB for
T5-small at 16 x 128, 540 MB for MiniLM at 32 x 64). glibc serves blocks that large with mmap and
returns them with munmap, so every step faults its temporaries in again, 4 KiB at a time: 280,000
page faults and 0.45 s of system time per T5-small step. Four glibc tunables make freed memory
stay in the process, to be reused by the next step:

  glibc.malloc.arena_max=1                one heap for every thread (another thread's arena maps a
                                          large block alone whatever mmap_max says)
  glibc.malloc.mmap_max=0                 large blocks from that heap too, never mapped alone
  glibc.malloc.trim_threshold=2^40        freed memory is never given back to the kernel
  glibc.malloc.hugetlb=1                  the heap on transparent huge pages of 2 MiB, where THP is
                                          in `madvise` mode (most distributions' default; glibc 2.35+)

After its first steps a T5-small step (benchmark case d) faulted no page at all, and took 1.86 s
instead of 2.00 s with the default malloc (means of 6 and 8 steps). Huge pages alone (the first
version of this module) brought MiniLM's faults under 1,000 per step but left T5's step alternating
between 1.9 s and 3.2 s, every other step spending 2 s in the kernel. The process keeps its peak
memory until it exits, as PyTorch's and TensorFlow's caching allocators do.

A glibc tunable is read when a process starts, so an llmjax command (`python -m llmjax.NAME`, or the
`llmjax` script) executes itself again once with them set, before anything heavy is imported
(`llmjax/__init__.py`). A tunable already in GLIBC_TUNABLES keeps its value. Nothing happens when
LLMJAX_MALLOC=default, off Linux or glibc, with a glibc older than 2.26 (which lacks the tunables),
or when another program imports llmjax (tests, notebooks; a script can call
`exec_with_malloc_tunables()` itself, as the benchmarks do).
"""

import os
import sys

# (name, value, the glibc version that reads it)
TUNABLES = (
    ('glibc.malloc.arena_max', '1', (2, 26)),
    ('glibc.malloc.mmap_max', '0', (2, 26)),
    ('glibc.malloc.trim_threshold', str(2 ** 40), (2, 26)),
    ('glibc.malloc.hugetlb', '1', (2, 35)),
)
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


def _glibc_version() -> tuple[int, int] | None:
  version = os.confstr('CS_GNU_LIBC_VERSION') if 'CS_GNU_LIBC_VERSION' in os.confstr_names else ''
  if not version.startswith('glibc '):
    return None
  major, minor = (int(x) for x in version.split()[1].split('.')[:2])
  return major, minor


def _thp_mode() -> str:
  try:
    with open(_THP_MODE) as f:
      text = f.read()
  except OSError:
    return ''
  return text[text.find('[') + 1:text.find(']')] if '[' in text else ''


def tunables() -> list[str]:
  """The `name=value` tunables this machine's glibc reads (see the module docstring); huge pages
  only where THP is in `madvise` mode (with `always` every mapping gets them already)."""
  version = _glibc_version() if sys.platform == 'linux' else None
  if version is None:
    return []
  return [f'{name}={value}' for name, value, since in TUNABLES
          if version >= since and (name != 'glibc.malloc.hugetlb' or _thp_mode() == 'madvise')]


def malloc_environment(environ) -> dict[str, str] | None:
  """The environment to run with, or None when there is nothing to do (see the module docstring)."""
  if environ.get('LLMJAX_MALLOC') == 'default':
    return None
  current = environ.get('GLIBC_TUNABLES', '')
  names = {t.split('=')[0] for t in current.split(':') if t}
  missing = [t for t in tunables() if t.split('=')[0] not in names]
  if not missing:
    return None
  return {**environ, 'GLIBC_TUNABLES': ':'.join(filter(None, (current, *missing)))}


def exec_with_malloc_tunables() -> None:
  """Executes this process's command line again with the tunables set (does not return), or does
  nothing (see `malloc_environment`)."""
  environ = malloc_environment(os.environ)
  if environ is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)


if __name__ == '__main__':
  # `python -m llmjax.host` prints what a command runs with (the tests read it).
  print(os.environ.get('GLIBC_TUNABLES', ''))
