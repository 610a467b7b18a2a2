"""Which XLA flags pay for a config's train step: `llmjax.bench` under each candidate `XLA_FLAGS`.

  python benchmarks/xla_flags.py --config=configs/bert_classify.py:batch=32,max_len=64
  python benchmarks/xla_flags.py --config=configs/gpt_lm.py --candidate=--xla_cpu_use_onednn=true

XLA reads its flags once, when the backend starts, so each candidate runs in its own process
(`python -m llmjax.bench`, same config, same steps); the rounds alternate between candidates so a
machine's slow minutes hit every candidate alike. Prints, per candidate, the median step time over all
its rounds, tokens/s and the speed-up against the first candidate (the baseline: no extra flags).
Without --candidate, the CPU candidates below are tried. `--out` writes the table as JSON.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent

# XLA:CPU options that change how dots and fusions are emitted (see xla/debug_options_flags.cc).
CPU_CANDIDATES = (
    '',
    '--xla_cpu_use_onednn=true',
    '--xla_cpu_experimental_onednn_custom_call=true',
    '--xla_cpu_use_xnnpack=true',
    '--xla_cpu_enable_fast_math=true',
    '--xla_cpu_prefer_vector_width=512',
)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--config', required=True, help='configs/FILE.py[:ARGS]')
  p.add_argument('--candidate', action='append', default=None,
                 help='an XLA_FLAGS value to try (repeat; the baseline "" is always first)')
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument('--steps', type=int, default=5, help='timed steps per round')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--out', default='', help='also write the table as JSON to this file')
  p.add_argument('--timeout', type=float, default=1800, help='seconds per benchmark process')
  return p.parse_args(argv)


def run_bench(config: str, xla_flags: str, steps: int, warmup: int, timeout: float) -> dict:
  """One `llmjax.bench` process with `xla_flags` (added to a parent's own XLA_FLAGS)."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = ' '.join(filter(None, (os.environ.get('XLA_FLAGS', ''), xla_flags)))
  env['PYTHONPATH'] = os.pathsep.join(filter(None, (str(REPO), env.get('PYTHONPATH'))))
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / 'bench.json'
    run = subprocess.run(
        [sys.executable, '-m', 'llmjax.bench', f'--config={config}', f'--steps={steps}',
         f'--warmup={warmup}', '--input_batches=1', f'--out={out}'],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if run.returncode != 0:
      # A flag this XLA build does not know, or one that breaks compilation: report, go on.
      return {'error': (run.stderr.strip().splitlines() or ['exit %d' % run.returncode])[-1]}
    return json.loads(out.read_text())


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  candidates = [''] + [c for c in (args.candidate or CPU_CANDIDATES) if c]
  steps = {c: [] for c in candidates}
  results = {}
  for _ in range(args.rounds):
    for c in candidates:
      if 'error' in results.get(c, {}):
        continue
      r = run_bench(args.config, c, args.steps, args.warmup, args.timeout)
      results[c] = r
      if 'error' not in r:
        steps[c].append(r['step_s'])
  base = statistics.median(steps['']) if steps[''] else float('nan')
  table = []
  print(f'{args.config}: median step over {args.rounds} rounds of {args.steps} steps')
  print(f'{"XLA_FLAGS":52s} {"step (ms)":>10s} {"tokens/s":>10s} {"speed-up":>9s}')
  for c in candidates:
    r = results[c]
    if 'error' in r:
      print(f'{c or "(none)":52s} failed: {r["error"]}')
      table.append({'xla_flags': c, 'error': r['error']})
      continue
    step = statistics.median(steps[c])
    row = {'xla_flags': c, 'step_s': step, 'tokens_per_s': r['tokens_per_s'] * r['step_s'] / step,
           'speedup': base / step, 'compile_s': r['compile_s']}
    table.append(row)
    print(f'{c or "(none)":52s} {1e3 * step:10.1f} {row["tokens_per_s"]:10,.0f} '
          f'{row["speedup"]:8.2f}x')
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(table, indent=2))
  return table


if __name__ == '__main__':
  main()
