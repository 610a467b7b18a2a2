"""The tiny GPT of `configs/gpt_lm.py` trained side by side by llmjax and by transformers + PyTorch.

  python benchmarks/gpt_vs_transformers.py --steps=300 --layers=2 --width=128 --max_len=128 \
      --batch=16 --vocab=8000 --lr=1e-3 [--out=FILE.json]

Both frameworks see exactly the same numpy batches: the config is built from `configs/gpt_lm.py`
(dropout 0, so neither run draws random masks), `llmjax.data.lm.build(config)` packs the data once,
and the first N batches of `train_iter()` plus every batch of `eval_iter('validation')` are kept in
memory and replayed to both sides.

llmjax side: the real training path, `llmjax.train.train_and_evaluate(config, workdir)` in a
temporary workdir, with `llmjax.tasks.build_data` patched for the call to return the saved batches
(a replay with the `LMData` interface), so the step, optimizer, sharding and evaluation code are the
ones an experiment runs. The validation loss is read back from the workdir's `results.json`. (The
final "test" evaluation that `train_and_evaluate` always runs replays the validation batches too; its
figure is not used.)

transformers side: `GPT2LMHeadModel` of the same size with its own initialisation (a different random
init from llmjax's: the criterion is the loss after training, not identical weights); torch's fused
AdamW with llmjax's lr, betas, eps and weight decay on the same parameters (none on biases and
LayerNorm), the same warmup + decay schedule (LambdaLR over `llmjax.optim.learning_rate`;
`side_by_side.torch_adamw`), `clip_grad_norm_` at the
same norm, and the loss llmjax uses: summed token cross-entropy over the weighted targets divided by
their count. Packed rows get `position_ids` = our positions and a 4D additive mask that lets a token
attend only to earlier-or-same tokens of its own segment; a self-check before training asserts that a
packed row computes the same logits as its documents alone.

Prints a table (steps, both validation losses, their relative difference, the wall time of each
side) and writes the figures as JSON with `--out`. The llmjax wall time includes compilation, the
final checkpoint and the Hugging Face export that `train_and_evaluate` always writes.
"""

import argparse
import itertools
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
for path in (REPO, REPO / 'benchmarks'):  # Run as a script from anywhere, without installing.
  if str(path) not in sys.path:
    sys.path.insert(0, str(path))

import side_by_side  # noqa: E402
from llmjax.data import lm  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--steps', type=int, default=300)
  p.add_argument('--layers', type=int, default=2)
  p.add_argument('--width', type=int, default=128)
  p.add_argument('--heads', type=int, default=0, help='0 = the config\'s choice (width // 64)')
  p.add_argument('--max_len', type=int, default=128)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--vocab', type=int, default=8000)
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  # The fake corpus of the tests has too few held-out articles: they train and score on train slices.
  p.add_argument('--train_split', default='')
  p.add_argument('--validation_split', default='')
  p.add_argument('--out', default='', help='also write the figures as JSON to this file')
  return p.parse_args(argv)


def load_config(args: argparse.Namespace):
  """configs/gpt_lm.py's config for these sizes, without dropout (both runs are deterministic)."""
  config = side_by_side.load_config(
      f'configs/gpt_lm.py:steps={args.steps},layers={args.layers},width={args.width},'
      f'max_len={args.max_len},batch={args.batch},vocab={args.vocab},lr={args.lr}')
  config.seed = args.seed
  if args.heads:
    config.model.num_heads = args.heads
  config.model.num_heads = max(config.model.num_heads, 1)  # width < 64 would give 0 heads.
  config.model.update(embd_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0)
  if args.train_split:
    config.data.splits.train = args.train_split
  if args.validation_split:
    config.data.splits.validation = args.validation_split
    config.data.splits.test = args.validation_split
  # One evaluation, after the last step, and no checkpoints in between: only the end is compared.
  config.eval.every_steps = 0
  config.checkpoint.every_steps = args.steps
  config.log_every_steps = max(args.steps // 6, 1)
  return config


def load_batches(config) -> tuple[list[dict], list[dict], int]:
  """(first num_train_steps train batches, all validation batches, tokenizer vocab size), numpy."""
  data = lm.build(config)
  train_batches = [{k: np.array(v) for k, v in b.items()}
                   for b in itertools.islice(data.train_iter(), config.num_train_steps)]
  eval_batches = [{k: np.array(v) for k, v in b.items()} for b in data.eval_iter('validation')]
  return train_batches, eval_batches, data.vocab_size


class ReplayData:
  """The `LMData` interface over saved batches, so `train_and_evaluate` trains on exactly them."""

  steps_per_epoch = None

  def __init__(self, train_batches, eval_batches, vocab_size):
    self._train = train_batches
    self._eval = eval_batches
    self.vocab_size = vocab_size

  def train_iter(self, start_step: int = 0):
    return iter(self._train[start_step:])

  def eval_iter(self, split: str):
    del split  # Validation and the (unused) test evaluation replay the validation batches.
    return iter(self._eval)


def run_llmjax(config, train_batches, eval_batches, vocab_size) -> dict:
  """Validation loss and wall time of `train.train_and_evaluate` on the saved batches."""
  results, wall = side_by_side.train_llmjax(
      config, ReplayData(train_batches, eval_batches, vocab_size))
  final = results['validation'][-1]
  assert final['step'] == config.num_train_steps, final
  return {'val_loss': final['loss'], 'wall_s': wall, 'train_loss': results['epoch_loss']['0']}


# --- transformers + PyTorch ------------------------------------------------------------------------


def segment_mask(segment_ids, dtype):
  """[B, 1, L, L] additive mask: 0 where a query may attend to a key of its own segment at an
  earlier-or-same index, the dtype's minimum elsewhere (transformers' GPT-2 passes a 4D mask through
  as-is and adds it to the scores, in its eager and SDPA attention alike)."""
  import torch
  length = segment_ids.shape[1]
  causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=segment_ids.device))
  allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & causal
  zero = torch.zeros((), dtype=dtype, device=segment_ids.device)
  return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


def hf_logits(model, batch):
  import torch
  segments = torch.as_tensor(batch['segment_ids'], dtype=torch.long)
  return model(input_ids=torch.as_tensor(batch['inputs'], dtype=torch.long),
               position_ids=torch.as_tensor(batch['positions'], dtype=torch.long),
               attention_mask=segment_mask(segments, torch.float32), use_cache=False).logits


def hf_loss_sums(model, batch):
  """(summed cross-entropy over the weighted targets, their count), as llmjax's causal_lm task."""
  import torch
  logits = hf_logits(model, batch)
  targets = torch.as_tensor(batch['targets'], dtype=torch.long)
  weights = torch.as_tensor(batch['weights'], dtype=torch.float32)
  nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                          reduction='none').view_as(weights)
  return (nll * weights).sum(), weights.sum()


def check_packing(model, max_len: int) -> float:
  """Max |logit difference| between two documents packed in one row and each run alone; raises if
  the mask or positions let a document see its neighbour."""
  import torch
  rng = np.random.default_rng(0)
  lengths = [max(max_len // 2 - 3, 1), max_len // 2]
  docs = [rng.integers(0, model.config.vocab_size, n) for n in lengths]
  row = np.zeros(max_len, np.int64)
  row[:sum(lengths)] = np.concatenate(docs)
  segments = np.zeros(max_len, np.int64)
  positions = np.zeros(max_len, np.int64)
  offset = 0
  for i, n in enumerate(lengths):
    segments[offset:offset + n] = i + 1
    positions[offset:offset + n] = np.arange(n)
    offset += n
  # The tail (segment 0) is padding that attends only to itself.
  positions[offset:] = np.arange(max_len - offset)
  with torch.no_grad():
    packed = hf_logits(model, {'inputs': row[None], 'positions': positions[None],
                               'segment_ids': segments[None]})[0]
    worst, offset = 0.0, 0
    for doc in docs:
      alone = model(input_ids=torch.as_tensor(doc[None]), use_cache=False).logits[0]
      worst = max(worst, float((packed[offset:offset + len(doc)] - alone).abs().max()))
      offset += len(doc)
  if worst > 1e-4:
    raise AssertionError(f'a packed row differs from its documents alone by {worst:g}')
  return worst


def build_hf_model(config, seed: int):
  import torch
  import transformers
  m = config.model
  torch.manual_seed(seed)
  hf_config = transformers.GPT2Config(
      vocab_size=m.vocab_size, n_positions=m.max_position_embeddings, n_embd=m.hidden_size,
      n_layer=m.num_layers, n_head=m.num_heads, n_inner=m.intermediate_size,
      activation_function='gelu_new', resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
      layer_norm_epsilon=m.layer_norm_eps, initializer_range=m.initializer_range,
      tie_word_embeddings=True,
      # GPT-2's 50256 lies outside a small vocabulary; nothing here generates, so no special ids.
      bos_token_id=None, eos_token_id=None)
  return transformers.GPT2LMHeadModel(hf_config)


def run_transformers(config, train_batches, eval_batches, threads: int) -> dict:
  """Validation loss and wall time of GPT2LMHeadModel trained on the saved batches."""
  with side_by_side.torch_threads(threads):
    return _train_transformers(config, train_batches, eval_batches)


def _train_transformers(config, train_batches, eval_batches) -> dict:
  import torch
  start = time.time()
  model = build_hf_model(config, config.seed)
  packing_error = check_packing(model, config.data.max_len)
  opt, sched = side_by_side.torch_adamw(model, config, config.num_train_steps)
  model.train()
  window, run_loss, run_weight = [], 0.0, 0.0
  every = config.log_every_steps
  for step, batch in enumerate(train_batches):
    loss_sum, weight = hf_loss_sums(model, batch)
    loss = loss_sum / weight.clamp(min=1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.optim.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_norm)
    opt.step()
    sched.step()
    window.append((float(loss_sum.detach()), float(weight)))
    run_loss, run_weight = run_loss + window[-1][0], run_weight + window[-1][1]
    if (step + 1) % every == 0 or step + 1 == len(train_batches):
      print(f'transformers step {step + 1}: train loss '
            f'{sum(l for l, _ in window) / max(sum(w for _, w in window), 1):.4f}', flush=True)
      window = []
  model.eval()
  total, count = 0.0, 0.0
  with torch.no_grad():
    for batch in eval_batches:
      loss_sum, weight = hf_loss_sums(model, batch)
      total += float(loss_sum)
      count += float(weight)
  return {'val_loss': total / max(count, 1.0), 'wall_s': time.time() - start,
          # Over all steps, as llmjax's epoch loss, for comparing the training curves too.
          'train_loss': run_loss / max(run_weight, 1.0), 'packing_max_abs_diff': packing_error}


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = load_config(args)
  t = time.time()
  train_batches, eval_batches, vocab_size = load_batches(config)
  tokens = sum(float(b['weights'].sum()) for b in train_batches)
  eval_tokens = sum(float(b['weights'].sum()) for b in eval_batches)
  print(f'data: {len(train_batches)} train batches ({tokens:.0f} target tokens), '
        f'{len(eval_batches)} validation batches ({eval_tokens:.0f} tokens), vocab {vocab_size}, '
        f'{time.time() - t:.1f}s', flush=True)

  jx = run_llmjax(config, train_batches, eval_batches, vocab_size)
  hf = run_transformers(config, train_batches, eval_batches, args.threads)
  rel = abs(jx['val_loss'] - hf['val_loss']) / hf['val_loss']
  m = config.model
  figures = {
      'steps': config.num_train_steps, 'layers': m.num_layers, 'width': m.hidden_size,
      'heads': m.num_heads, 'max_len': config.data.max_len, 'batch': config.batch_size,
      'vocab': m.vocab_size, 'lr': config.optim.lr, 'train_tokens': tokens,
      'validation_tokens': eval_tokens, 'llmjax': jx, 'transformers': hf, 'relative_diff': rel,
  }
  print(f'\n{"steps":>6} | {"llmjax val loss":>15} | {"transformers val loss":>21} | '
        f'{"rel diff":>8} | {"llmjax wall":>11} | {"transformers wall":>17}')
  print(f'{config.num_train_steps:>6} | {jx["val_loss"]:>15.4f} | {hf["val_loss"]:>21.4f} | '
        f'{rel:>7.2%} | {jx["wall_s"]:>10.1f}s | {hf["wall_s"]:>16.1f}s')
  print(f'mean train loss over the run: llmjax {jx["train_loss"]:.4f}, transformers '
        f'{hf["train_loss"]:.4f}', flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(figures, indent=2))
  return figures


if __name__ == '__main__':
  side_by_side.run(main)
