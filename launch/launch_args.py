"""The command line the launchers share: their own options, then `--` and the arguments of
`python -m llmjax.main`, which every process of the job runs."""

import argparse


def parser(doc: str) -> argparse.ArgumentParser:
  """A launcher's parser, with `--dry-run` and the llmjax arguments; it adds its own options."""
  p = argparse.ArgumentParser(description=doc.split('\n\n')[0],
                              usage='%(prog)s [options] -- LLMJAX_MAIN_ARGS...')
  p.add_argument('--dry-run', action='store_true', help='Print what would run; run nothing.')
  p.add_argument('main_args', nargs=argparse.REMAINDER,
                 help='Arguments of python -m llmjax.main, after --.')
  return p


def parse(p: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  """(the launcher's options, the llmjax arguments)."""
  args = p.parse_args(argv)
  main_args = args.main_args[1:] if args.main_args[:1] == ['--'] else args.main_args
  if not main_args:
    p.error('no llmjax arguments: add e.g. -- --config=configs/bert_classify.py --workdir=DIR')
  # After --, it would reach llmjax and the launcher would start the job for real.
  if '--dry-run' in main_args:
    p.error('--dry-run comes after --: put the launcher\'s options before --')
  return args, main_args
