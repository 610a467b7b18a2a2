"""Training throughput of llmjax and of transformers + PyTorch on the same shapes, side by side.

  python benchmarks/throughput_vs_transformers.py [--cases=a,b,c,d] [--rounds=3] [--steps=5] \
      [--warmup=2] [--warmup_rounds=3] [--threads=2] [--tiny] [--out=FILE.json]

The four cases of issue 5, each built from its experiment config (random initialisation: pretrained
weights do not change the speed):

  a  MiniLM-L6 sequence classification (6 layers, hidden 384, 12 heads, FFN 1536: the architecture
     of the all-MiniLM-L6-v2 asset), batch 32 x 64: `configs/bert_classify.py:batch=32,max_len=64`,
     every row padded to 64 (one bucket); transformers' `BertForSequenceClassification`.
  b  BERT masked LM, 4 layers, hidden 256, 4 heads, FFN 1024, vocab 30,522 (uncased BERT's
     WordPiece), batch 32 x 128: `configs/bert_mlm.py`; `BertForMaskedLM`, whose head computes
     logits at every position.
  c  GPT-2, 6 layers, hidden 384, 6 heads, vocab 50,257 (GPT-2's BPE), batch 16 x 256:
     `configs/gpt_lm.py:gpt2_bpe`; `GPT2LMHeadModel`.
  d  T5-small's shape (d_model 512, 6 + 6 layers, 8 heads, d_ff 2048, vocab 32,128), batch 16 x 128
     inputs by span corruption, whose targets are 29 tokens long for 128 inputs (T5's
     `random_spans_helper` formula; the issue rounds them to 32): `configs/t5_span.py` with the
     model's vocabulary padded to 32,128 as T5 pads its 32,000 pieces and 100 sentinels (the
     SentencePiece model of the Wikipedia sample has 8,000; the computation is the same);
     `T5ForConditionalGeneration`.

`--tiny` runs each config's `tiny` variant instead (two layers of width 32, batch 4 x 16), through
the same code: the test runs it.

Each side runs in a process of its own, this script started again with `--serve=llmjax` or
`--serve=torch` (`Worker`), which builds the same `llmjax.bench.StepBench` for each case and checks
that its initial parameters and batches are the other's (`_fingerprint`); the two take turns, never
run together. In one process the sides shared glibc's heap (one arena, see `llmjax.host`), which
grew whenever one side's temporaries no longer fitted where the other's had been freed: 5 of c's 15
timed llmjax steps took 5.8-10.3 s, the others 4.7-5.5 s; in a rerun counting faults, the two slow
ones of 15 (8.8 and 9.0 s) faulted 1,372 and 1,806 pages and spent 6.6 and 7.7 s in the kernel
(this VM's first touches of memory are slow). In processes of their own, 1 of 15 took 8.4 s and the
others 4.6-4.9 s.

llmjax side: `StepBench` on one device: the train step `llmjax.train` runs (same jit, shardings,
donation, optimizer) on real batches of the config's data pipeline.

transformers side: the model class named in the Hugging Face directory that llmjax's own exporter
(`llmjax.models.export`) writes from the llmjax side's initial parameters, so the architecture,
dropout and starting weights are the same; in training mode, float32, `torch.set_num_threads`
(`--threads`, default 2), on the CPU. torch AdamW (`fused=True`) with the config's lr, betas, eps
and weight decay (none on the one-dimensional parameters: biases and norm scales, as llmjax's
`optim.no_decay`), `clip_grad_norm_` at the config's norm, at constant lr (a schedule costs nothing
measurable). The loss is llmjax's: cross-entropy (with the config's label smoothing) summed over
the weighted targets and divided by their count. Both sides step through the same numpy batches,
taken from `StepBench.batches`, converted to torch tensors once before timing. Rows packed with
several documents pass to transformers as token ids, per-document positions and the padding mask
only, so a token may attend to the other documents of its row: that changes which scores are
masked, not the model FLOPs counted.

Timing: `--warmup_rounds` untimed rounds of `--warmup` llmjax steps then `--warmup` torch steps,
then `--rounds` rounds of `--steps` llmjax steps then `--steps` torch steps alternate, so a drift in
the machine's load reaches both. Per case and side: the median step time over all timed steps,
tokens/s (batch x length, an encoder-decoder's inputs + targets, padding included) and GFLOP/s,
both sides by llmjax's analytical FLOP count (`llmjax.model_info.train_flops`); the ratio llmjax /
transformers of tokens/s, and a 90% bootstrap interval of it over the timed steps
(`ratio_interval`: on this 2-core machine either side's steps of case d took 2.6-3.1 s within one
run, so a ratio whose interval holds 1 is a tie). llmjax's compile time is printed too. `--out`
writes everything as JSON, with the versions of the libraries.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
for path in (REPO, REPO / 'benchmarks'):  # Run as a script from anywhere, without installing.
  if str(path) not in sys.path:
    sys.path.insert(0, str(path))

import side_by_side  # noqa: E402
from llmjax import bench as llmjax_bench  # noqa: E402
from llmjax import models  # noqa: E402
from llmjax.errors import UserError  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
  title: str
  config: str  # configs/FILE.py:ARGS at the shape
  overrides: dict = dataclasses.field(default_factory=dict)  # dotted keys, the shape only

  def spec(self, tiny: bool) -> tuple[str, dict]:
    """(config file and arguments, dotted overrides): the issue's shape, or with `tiny` the file's
    tiny variant at batch 4 x 16."""
    if tiny:
      return self.config.partition(':')[0] + ':tiny', {'batch_size': 4, 'data.max_len': 16}
    return self.config, self.overrides

  def load(self, tiny: bool):
    spec, overrides = self.spec(tiny)
    config = side_by_side.load_config(spec)
    config.update_from_flattened_dict(overrides)
    # One step shape: rows padded to max_len (StepBench times one compiled step).
    config.data.buckets = (config.data.max_len,)
    # Only training batches are read: the held-out splits alias the train split, so a corpus with
    # few held-out documents (the tests' fake Wikipedia) opens as well as the real one.
    train = config.data.splits.train
    config.data.splits = dict(train=train, validation=train, test=train)
    return config


CASES = {
    'a': Case('MiniLM-L6 sequence classification',
              'configs/bert_classify.py:batch=32,max_len=64'),
    'b': Case('BERT MLM 4 x 256, vocab 30522',
              'configs/bert_mlm.py:layers=4,width=256,batch=32,max_len=128'),
    'c': Case('GPT-2 6 x 384, vocab 50257',
              'configs/gpt_lm.py:gpt2_bpe,layers=6,width=384,batch=16,max_len=256'),
    'd': Case('T5-small shape, vocab 32128',
              'configs/t5_span.py:layers=6,width=512,batch=16,max_len=128',
              {'model.vocab_size': 32128}),
}


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--cases', default=','.join(CASES), help='comma-separated, of ' + ','.join(CASES))
  p.add_argument('--rounds', type=int, default=3, help='alternations of llmjax and torch steps')
  p.add_argument('--steps', type=int, default=5, help='timed steps per side per round')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps per side per warm-up round')
  p.add_argument('--warmup_rounds', type=int, default=3,
                 help='untimed alternations of llmjax and torch steps first')
  p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  p.add_argument('--tiny', action='store_true', help="each config's tiny variant, batch 4 x 16")
  p.add_argument('--out', default='', help='also write the figures as JSON to this file')
  p.add_argument('--serve', choices=('llmjax', 'torch'), help=argparse.SUPPRESS)  # A `Worker`.
  args = p.parse_args(argv)
  args.cases = [c.strip() for c in args.cases.split(',') if c.strip()]
  unknown = [c for c in args.cases if c not in CASES]
  if unknown or not args.cases:
    p.error(f'--cases={",".join(args.cases)}: choose among {",".join(CASES)}')
  for name in ('rounds', 'steps'):
    if getattr(args, name) < 1:
      p.error(f'--{name} must be >= 1')
  return args


# --- transformers + PyTorch -----------------------------------------------------------------------


def model_inputs(task: str, batch: dict[str, np.ndarray]) -> tuple[dict, np.ndarray, np.ndarray]:
  """(transformers keyword arguments, labels, weights) of one llmjax batch of `task`."""
  if task == 'classification':
    return ({'input_ids': batch['input_ids'], 'token_type_ids': batch['token_type_ids'],
             'attention_mask': batch['attention_mask']}, batch['label'], batch['weight'])
  if task == 'mlm':
    return ({'input_ids': batch['input_ids'], 'token_type_ids': batch['token_type_ids'],
             'attention_mask': batch['segment_ids'] > 0, 'position_ids': batch['positions']},
            batch['labels'], batch['weights'])
  if task == 'causal_lm':
    return ({'input_ids': batch['inputs'], 'attention_mask': batch['segment_ids'] > 0,
             'position_ids': batch['positions']}, batch['targets'], batch['weights'])
  if task == 'span_corruption':
    return ({'input_ids': batch['inputs'], 'attention_mask': batch['input_segment_ids'] > 0,
             'decoder_input_ids': batch['decoder_inputs'],
             'decoder_attention_mask': batch['target_segment_ids'] > 0},
            batch['targets'], batch['weights'])
  raise UserError(f'config.task.name={task!r} has no transformers counterpart in this benchmark: '
                  'use classification, mlm, causal_lm or span_corruption')


class TorchStep:
  """transformers + PyTorch training steps on a `StepBench`'s batches, timed as its `time_steps`."""

  def __init__(self, bench: llmjax_bench.StepBench):
    import torch
    import transformers

    config = bench.config
    with tempfile.TemporaryDirectory() as hf_dir:
      # As `llmjax.train` exports a run's model.
      models.export(bench.state.params, config.model, hf_dir,
                    getattr(bench.data, 'label_names', None))
      architecture = json.loads((pathlib.Path(hf_dir) / 'config.json').read_text())
      self.architecture = architecture['architectures'][0]
      self.model = getattr(transformers, self.architecture).from_pretrained(
          hf_dir, dtype=torch.float32)
    self.model.train()
    self.batches = []
    for batch in bench.batches:
      kwargs, labels, weights = model_inputs(config.task.name, batch)
      self.batches.append(({k: torch.as_tensor(v.astype(np.int64)) for k, v in kwargs.items()},
                           torch.as_tensor(labels.astype(np.int64)),
                           torch.as_tensor(weights.astype(np.float32))))
    self.model.config.use_cache = False  # Training keeps no keys and values for generation.
    first = self.batches[0][0]
    inputs = first['input_ids'].shape
    targets = first['decoder_input_ids'].shape[1] if 'decoder_input_ids' in first else 0
    self.batch_shape = (inputs[0], inputs[1], targets)
    # Positions the model computes: every token id it is given, padding included.
    self.tokens_per_step = sum(first[k].numel() for k in ('input_ids', 'decoder_input_ids')
                               if k in first)
    self.shapes = {**{k: list(v.shape) for k, v in first.items()},
                   'labels': list(self.batches[0][1].shape),
                   'weights': list(self.batches[0][2].shape)}
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.label_smoothing = config.task.label_smoothing
    self.clip_norm = config.optim.clip_norm
    self.optimizer, _ = side_by_side.torch_adamw(self.model, config)  # at a constant lr
    self._index = 0

  def step(self, kwargs, labels, weights):
    import torch
    logits = self.model(**kwargs).logits
    nll = torch.nn.functional.cross_entropy(
        logits.flatten(0, -2).float(), labels.flatten(), reduction='none',
        label_smoothing=self.label_smoothing)
    loss = (nll * weights.flatten()).sum() / weights.sum().clamp(min=1.0)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if self.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(self.params, self.clip_norm)
    self.optimizer.step()
    return loss.detach()

  def time_steps(self, n: int) -> list[float]:
    """Runs n steps on the batches in turn; returns their wall times in seconds."""
    times = []
    for _ in range(n):
      batch = self.batches[self._index % len(self.batches)]
      self._index += 1
      start = time.perf_counter()
      float(self.step(*batch))  # Synced, as StepBench syncs each step (on CPU torch already is).
      times.append(time.perf_counter() - start)
    return times


# --- the comparison -------------------------------------------------------------------------------


def side_figures(times: list[float], tokens_per_step: int, flops_per_step: float,
                 batch_shape, shapes: dict) -> dict:
  step = statistics.median(times)
  return {'batch_shape': [int(x) for x in batch_shape], 'arrays': shapes,
          'tokens_per_step': int(tokens_per_step), 'step_s': step, 'step_times_s': times,
          'tokens_per_s': tokens_per_step / step, 'flops_per_s': flops_per_step / step}


def ratio_interval(ours: list[float], theirs: list[float], confidence: float = 0.9):
  """A `confidence` percentile-bootstrap interval (scipy.stats.bootstrap, 2,000 resamples of each
  side's step times, a fixed seed) of the ratio of tokens/s, median(theirs) / median(ours): how far
  the machine's step-to-step noise leaves the ratio uncertain. None with fewer than two steps a side.
  """
  if min(len(ours), len(theirs)) < 2:
    return None
  import scipy.stats

  def ratio(ours, theirs, axis=-1):
    return np.median(theirs, axis=axis) / np.median(ours, axis=axis)

  interval = scipy.stats.bootstrap((np.asarray(ours), np.asarray(theirs)), ratio,
                                   n_resamples=2000, confidence_level=confidence,
                                   method='percentile', rng=np.random.default_rng(0))
  return [float(interval.confidence_interval.low), float(interval.confidence_interval.high)]


def run_case(name: str, args: argparse.Namespace, workers: dict) -> dict:
  llmjax_info = workers['llmjax'].ask(load=name, tiny=args.tiny)
  # After the llmjax side has compiled: the two never build (or prepare data) at once.
  torch_info = workers['torch'].ask(load=name, tiny=args.tiny)
  if torch_info['fingerprint'] != llmjax_info['fingerprint']:
    raise RuntimeError(f'case {name}: the two sides built different weights or batches '
                       f'({llmjax_info["fingerprint"]} against {torch_info["fingerprint"]})')
  for _ in range(args.warmup_rounds):
    workers['llmjax'].ask(steps=args.warmup)
    workers['torch'].ask(steps=args.warmup)
  jx_times, pt_times = [], []
  for _ in range(args.rounds):
    jx_times += workers['llmjax'].ask(steps=args.steps)['times']
    pt_times += workers['torch'].ask(steps=args.steps)['times']
  flops = llmjax_info['flops_per_step']
  ours = side_figures(jx_times, llmjax_info['tokens_per_step'], flops, llmjax_info['batch_shape'],
                      llmjax_info['shapes'])
  ours['compile_s'] = llmjax_info['compile_s']
  theirs = side_figures(pt_times, torch_info['tokens_per_step'], flops, torch_info['batch_shape'],
                        torch_info['shapes'])
  theirs['architecture'] = torch_info['architecture']
  spec, overrides = CASES[name].spec(args.tiny)
  return {'title': CASES[name].title, 'config': spec, 'overrides': overrides,
          'flops_per_step': flops, 'llmjax': ours,
          'transformers': theirs, 'ratio': ours['tokens_per_s'] / theirs['tokens_per_s'],
          'ratio_interval': ratio_interval(jx_times, pt_times)}


# --- each side in a process of its own ------------------------------------------------------------


class Worker:
  """This script run with `--serve=SIDE`, in a process of its own: `ask` sends it one request and
  returns its answer (one JSON line each way, on its stdin and stdout)."""

  def __init__(self, side: str, threads: int):
    import subprocess
    self.side = side
    self.process = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).resolve()), f'--serve={side}',
         f'--threads={threads}'], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

  def ask(self, **request) -> dict:
    self.process.stdin.write(json.dumps(request) + '\n')
    self.process.stdin.flush()
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(f'the {self.side} worker exited with status {self.process.wait()}')
    answer = json.loads(line)
    if 'error' in answer:
      raise UserError(answer['error'])
    return answer

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def _fingerprint(bench: llmjax_bench.StepBench) -> float:
  """The absolute sum of the initial parameters and the batches: equal on both sides when they start
  from the same weights and step through the same data."""
  import jax
  arrays = jax.tree.leaves(bench.state.params) + [x for b in bench.batches for x in b.values()]
  return float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in arrays))


def serve(side: str, threads: int) -> None:
  """A worker's loop (see `Worker`): {"load": CASE, "tiny": BOOL} builds the side's step for a case
  (the llmjax side compiles it) and answers with its shapes and counts; {"steps": N} runs N steps and
  answers with their times. A user's error (a missing asset) is answered as {"error": MESSAGE}."""
  answers = os.fdopen(os.dup(sys.stdout.fileno()), 'w', buffering=1)
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # Whatever else is printed goes to stderr.
  import jax
  import torch

  torch.set_num_threads(threads)
  runner = None
  for line in sys.stdin:
    request = json.loads(line)
    try:
      if 'load' in request:
        if request['load'] not in CASES:
          raise UserError(f'no case {request["load"]!r}: choose among {",".join(CASES)}')
        runner = jx = None  # The previous case's arrays go before the next case's come.
        # One device: the comparison is of the computation, not of the parallelism.
        jx = llmjax_bench.StepBench(CASES[request['load']].load(request['tiny']),
                                    devices=jax.devices()[:1])
        answer = {'fingerprint': _fingerprint(jx)}
        if side == 'llmjax':
          runner = jx
          answer.update(compile_s=jx.compile(), tokens_per_step=jx.tokens_per_step,
                        flops_per_step=jx.flops_per_step, batch_shape=jx.batch_shape,
                        shapes={k: list(v.shape) for k, v in jx.batches[0].items()})
        else:
          runner = TorchStep(jx)
          answer.update(architecture=runner.architecture, tokens_per_step=runner.tokens_per_step,
                        batch_shape=runner.batch_shape, shapes=runner.shapes)
      else:
        answer = {'times': runner.time_steps(request['steps'])}
    except UserError as e:
      answer = {'error': str(e)}
    answers.write(json.dumps(answer) + '\n')


# --- the comparison table -------------------------------------------------------------------------


def _shape(figures: dict) -> str:
  batch, inputs, targets = figures['batch_shape']
  return f'{batch} x {inputs}' + (f' + {targets}' if targets else '')


def format_table(results: dict) -> str:
  header = (f'{"case":<4} | {"side":<12} | {"batch":<14} | {"step (s)":>8} | {"tokens/s":>9} | '
            f'{"GFLOP/s":>7} | {"llmjax/torch":>12} | {"90% interval":>12}')
  lines = [header, '-' * len(header)]
  for name, r in results.items():
    for side in ('llmjax', 'transformers'):
      f = r[side]
      ratio = interval = ''
      if side == 'llmjax':
        ratio = f'{r["ratio"]:.2f}'
        if r['ratio_interval']:
          interval = '{:.2f}-{:.2f}'.format(*r['ratio_interval'])
      lines.append(f'{name:<4} | {side:<12} | {_shape(f):<14} | {f["step_s"]:>8.3f} | '
                   f'{f["tokens_per_s"]:>9,.0f} | {f["flops_per_s"] / 1e9:>7.1f} | {ratio:>12} | '
                   f'{interval:>12}')
  return '\n'.join(lines)


def versions() -> dict:
  import flax
  import jax
  import torch
  import transformers
  return {'jax': jax.__version__, 'flax': flax.__version__, 'torch': torch.__version__,
          'transformers': transformers.__version__,
          'llmjax_device': f'{jax.devices()[0].platform} ({jax.devices()[0].device_kind})'}


def main(argv=None) -> dict:
  args = parse_args(argv)
  workers = {}
  results = {}
  try:
    for side in ('llmjax', 'torch'):
      workers[side] = Worker(side, args.threads)
    for name in args.cases:
      r = results[name] = run_case(name, args, workers)
      overrides = ''.join(f' --config.{k}={v}' for k, v in r['overrides'].items())
      print(f'\ncase {name}: {r["title"]}: {r["config"]}{overrides}', flush=True)
      print(f'  llmjax batches:       {r["llmjax"]["arrays"]}  '
            f'(compiled in {r["llmjax"]["compile_s"]:.1f} s)')
      print(f'  transformers batches: {r["transformers"]["arrays"]}  '
            f'({r["transformers"]["architecture"]})')
      print(f'  model FLOPs per step: {r["flops_per_step"] / 1e9:,.2f} G')
      print(format_table({name: r}), flush=True)
  finally:
    for worker in workers.values():
      worker.close()
  figures = {'tiny': args.tiny, 'rounds': args.rounds, 'steps': args.steps, 'warmup': args.warmup,
             'warmup_rounds': args.warmup_rounds,
             'threads': args.threads, 'versions': versions(), 'cases': results}
  print(f'\n{args.rounds} rounds of {args.steps} steps per side, median step; torch threads '
        f'{args.threads}; ' + ', '.join(f'{k} {v}' for k, v in figures['versions'].items()))
  print(format_table(results), flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(figures, indent=2))
  return figures


def _command() -> None:
  args = parse_args()
  if args.serve:
    serve(args.serve, args.threads)
  else:
    main()


if __name__ == '__main__':
  side_by_side.run(_command)  # The workers inherit the malloc tunables (llmjax/host.py).
