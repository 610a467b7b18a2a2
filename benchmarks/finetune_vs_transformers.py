"""A sequence classification or regression config fine-tuned side by side by llmjax and by
transformers + PyTorch, on the same batches from the same pretrained weights.

  python benchmarks/finetune_vs_transformers.py --config=configs/movie_rating.py:epochs=1
  python benchmarks/finetune_vs_transformers.py --config=configs/bbc_news.py \
      --llmjax_workdir=runs/bbc   # reuse a finished llmjax run of the same config
  python benchmarks/finetune_vs_transformers.py --config=configs/bert_classify.py --seed=1

The config's data is built once by llmjax (`llmjax.tasks.build_data`): both sides train on the
batches of `train_iter()` (same order, same padding buckets, same tokenization) for the config's
number of steps, are evaluated on `eval_iter('validation')` at the same steps (every
`eval.every_steps` and at each epoch end), keep the checkpoint with the best validation
`eval.metric` (ties go to the earlier step), and score it on the test split with the same metric code
(`task.summarize`).

llmjax side: the real training path, `llmjax.train.train_and_evaluate(config, workdir)`, or the
`results.json` of a finished run of the same config with `--llmjax_workdir`.

transformers side: `BertForSequenceClassification.from_pretrained` on the directory the config's
`model.init_from` names (a fresh classifier head; `problem_type='regression'` with one output for the
regression task), the config's dropout; torch's fused AdamW with the config's lr, betas, eps and
weight decay (none on biases and LayerNorm, as llmjax's `optim.no_decay`), the same warmup + decay
schedule (LambdaLR over `llmjax.optim.learning_rate`; `side_by_side.torch_adamw`), `clip_grad_norm_`
at the same norm; the loss is mean
cross-entropy (classification, with the config's label smoothing) or mean squared error
(regression) over the real rows of a batch.

`--hf_pad_to=128` pads every transformers batch to 128 tokens, the usual recipe (the tokenizer's
`padding='max_length'`, as the tutorial's fine-tuning does), to compare end-to-end wall times against it;
the metrics do not change (padding is masked).

Prints both runs' test metrics, their difference and wall times; `--out` writes them as JSON.
"""

import argparse
import copy
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
for path in (REPO, REPO / 'benchmarks'):  # Run as a script from anywhere, without installing.
  if str(path) not in sys.path:
    sys.path.insert(0, str(path))

import side_by_side  # noqa: E402
from llmjax import assets, models, tasks, train  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--config', required=True, help='configs/FILE.py[:ARGS]')
  p.add_argument('--llmjax_workdir', default='',
                 help="the llmjax run's workdir: its results.json when it finished, else trained "
                      'there (default: a temporary directory)')
  p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  p.add_argument('--seed', type=int, default=None,
                 help="config.seed for both sides (the data order, the new head's initialisation, "
                      "dropout); default: the config's")
  p.add_argument('--hf_pad_to', type=int, default=0,
                 help="pad every transformers batch to this many tokens, as the usual recipe's "
                      "tokenizer(padding='max_length') does (0: llmjax's bucketed batches as they are)")
  p.add_argument('--out', default='', help='also write the figures as JSON to this file')
  return p.parse_args(argv)


def eval_steps(config, steps_per_epoch: int, total: int) -> list[int]:
  """The steps after which llmjax's loop evaluates (see llmjax.train)."""
  every = config.eval.every_steps
  return [s for s in range(1, total + 1)
          if s % steps_per_epoch == 0 or s == total or (every and s % every == 0)]


def improved(value, best, mode) -> bool:
  return best is None or (value > best if mode == 'max' else value < best)


def run_transformers(config, data, task, threads: int, pad_to: int = 0) -> dict:
  """Trains and scores the transformers model as the module docstring says."""
  import torch
  import transformers

  torch.manual_seed(config.seed)
  regression = config.task.name == 'regression'
  hf_dir = assets.resolve(config.model.init_from)
  model = transformers.BertForSequenceClassification.from_pretrained(
      hf_dir, num_labels=1 if regression else data.num_labels,
      problem_type='regression' if regression else 'single_label_classification',
      hidden_dropout_prob=config.model.hidden_dropout,
      attention_probs_dropout_prob=config.model.attention_dropout)
  total = train.total_steps(config, data)
  opt, scheduler = side_by_side.torch_adamw(model, config, total)

  def forward(batch):
    inputs = {k: torch.as_tensor(batch[k], dtype=torch.long)
              for k in ('input_ids', 'token_type_ids', 'attention_mask')}
    if pad_to > inputs['input_ids'].shape[1]:
      # Masked padding (id 0 = [PAD]) changes no output, only the work done.
      inputs = {k: torch.nn.functional.pad(v, (0, pad_to - v.shape[1])) for k, v in inputs.items()}
    return model(**inputs).logits

  def evaluate(split):
    model.eval()
    outputs = []
    with torch.no_grad():
      for batch in data.eval_iter(split):
        logits = forward(batch)
        weight = batch['weight']
        if regression:
          prediction = logits[:, 0].numpy()
          loss = float(np.sum(np.square(prediction - batch['label']) * weight))
        else:
          prediction = logits.argmax(-1).numpy()
          nll = torch.nn.functional.cross_entropy(
              logits, torch.as_tensor(batch['label'], dtype=torch.long), reduction='none')
          loss = float(np.sum(nll.numpy() * weight))
        outputs.append({'loss': loss, 'weight': float(weight.sum()), 'prediction': prediction,
                        'label': batch['label'], 'mask': weight})
    model.train()
    return task.summarize(outputs)

  def step_loss(batch):
    logits = forward(batch)
    weight = torch.as_tensor(batch['weight'])
    if regression:
      per_row = torch.square(logits[:, 0] - torch.as_tensor(batch['label']))
    else:
      per_row = torch.nn.functional.cross_entropy(
          logits, torch.as_tensor(batch['label'], dtype=torch.long), reduction='none',
          label_smoothing=config.task.label_smoothing)
    return (per_row * weight).sum() / weight.sum().clamp(min=1)

  with side_by_side.torch_threads(threads):
    return train_torch(model, opt, scheduler, config, data, total, step_loss, evaluate)


def train_torch(model, opt, scheduler, config, data, total: int, step_loss, evaluate) -> dict:
  """The transformers side's loop: `total` steps of `step_loss(batch)` over llmjax's train batches,
  `evaluate('validation')` at llmjax's evaluation steps, the best of them (by `eval.metric`, ties
  to the earlier step) scored with `evaluate('test')`."""
  import torch
  checks = set(eval_steps(config, data.steps_per_epoch, total))
  best, best_step, best_state, evals = None, None, None, []
  start = time.time()
  model.train()
  for step, batch in zip(range(total), data.train_iter()):
    loss = step_loss(batch)
    opt.zero_grad()
    loss.backward()
    if config.optim.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_norm)
    opt.step()
    scheduler.step()
    if step + 1 in checks:
      metrics = evaluate('validation')
      evals.append({'step': step + 1, **metrics})
      print(f'transformers step {step + 1} validation {config.eval.metric} '
            f'{metrics[config.eval.metric]:.4f} ({time.time() - start:.0f} s)', flush=True)
      if improved(metrics[config.eval.metric], best, config.eval.mode):
        best, best_step = metrics[config.eval.metric], step + 1
        best_state = copy.deepcopy(model.state_dict())
  model.load_state_dict(best_state)
  return {'best_step': best_step, 'validation': evals, 'test': evaluate('test'),
          'wall_time_s': time.time() - start}


def llmjax_results(config, workdir: str) -> dict:
  """The llmjax run's results: read from `workdir` when it finished there, else trained there (or
  in a temporary directory when `workdir` is empty)."""
  if workdir and (pathlib.Path(workdir) / 'results.json').exists():
    return json.loads((pathlib.Path(workdir) / 'results.json').read_text())
  if workdir:
    return train.train_and_evaluate(config, workdir)
  with tempfile.TemporaryDirectory() as tmp:
    return train.train_and_evaluate(config, tmp)


def report(spec: str, config, ours: dict, theirs: dict, out: str) -> dict:
  """Prints both runs' test metrics, validation curves and wall times; writes them to `out`."""
  metric = config.eval.metric
  print(f'\n{spec}: test metrics of the best checkpoint by validation {metric}')
  print(f'{"metric":12s} {"llmjax":>10s} {"transformers":>13s} {"difference":>11s}')
  for name in theirs['test']:
    a, b = ours['test'][name], theirs['test'][name]
    print(f'{name:12s} {a:10.4f} {b:13.4f} {a - b:+11.4f}')
  for name, r in (('llmjax', ours), ('transformers', theirs)):
    print(f'validation {metric} of {name}: ' + ' '.join(f'{e[metric]:.4f}' for e in r['validation']))
  print(f'{"best step":12s} {ours["best_step"]:10d} {theirs["best_step"]:13d}')
  print(f'{"wall (s)":12s} {ours["wall_time_s"]:10.1f} {theirs["wall_time_s"]:13.1f}')
  result = {'config': spec, 'seed': config.seed, 'llmjax': ours, 'transformers': theirs}
  if out:
    pathlib.Path(out).write_text(json.dumps(result, indent=2, default=float))
  return result


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = side_by_side.load_config(args.config)
  if args.seed is not None:
    config.seed = args.seed
  if config.task.name not in ('classification', 'regression'):
    raise SystemExit(f'{args.config} is a {config.task.name} config: this script compares '
                     'sequence classification and regression')
  ours = llmjax_results(config, args.llmjax_workdir)
  data = tasks.build_data(config, process_index=0, process_count=1)
  models.resolve(config)
  task = tasks.task_for(config, data)
  theirs = run_transformers(config, data, task, args.threads, args.hf_pad_to)
  return report(args.config, config, ours, theirs, args.out)


if __name__ == '__main__':
  side_by_side.run(main)
