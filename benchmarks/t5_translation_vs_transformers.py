"""The small T5 of `configs/translate_bible.py` trained side by side by llmjax and by transformers +
PyTorch on English -> Spanish Bible verses, both scored by BLEU and chrF of beam-search translations
of the test books.

  python benchmarks/t5_translation_vs_transformers.py --steps=1500 --layers=2 --width=256 \
      --vocab=8000 --batch=32 --lr=1e-3 --beams=4 [--test_examples=N] [--out=FILE.json]
  python benchmarks/t5_translation_vs_transformers.py --steps=3000 --device=cuda --chunk=512

On a GPU, llmjax runs on JAX's default backend and `--device=cuda` puts the transformers side there
too; `--chunk` sets how many pairs each of its forward passes takes (16 suits a CPU; on a GPU one
pass of the whole step is faster, and the step's gradient is the same either way).

Both frameworks see exactly the same numpy batches: the config is built from
`configs/translate_bible.py` (dropout 0, so neither run draws random masks; label smoothing 0.1 as
configured), `llmjax.data.translation.build(config)` packs the training pairs once, and the first N
batches of `train_iter()` plus the one-pair-per-row batches of `eval_iter('test')` are kept in
memory and replayed to both sides.

llmjax side: the real training path, `llmjax.train.train_and_evaluate(config, workdir)` in a
temporary workdir on one device, with `llmjax.tasks.build_data` patched for the call to return the
saved batches. Its validation evaluation (once, after the last step; it picks the checkpoint) sees
the test rows with nothing marked for decoding, so only the final test evaluation translates:
`TranslationTask` beam search and sacrebleu, read back from `results.json`.

Both start from the same weights: transformers' own initialisation of `T5ForConditionalGeneration`
(seeded by `--seed`), saved as a Hugging Face directory that the llmjax run imports as
`model.init_from`. With different random starts, the two BLEUs of a short run differed by what the
start gives (1,500 steps: 4.46 and 6.15 at test losses 4.415 and 4.399), which says nothing about
either framework.

transformers side: `T5ForConditionalGeneration` of the same architecture (T5 v1.0: relative
position buckets, ReLU, tied and rescaled head); torch's fused AdamW with llmjax's lr, betas, eps
and weight decay (none on the RMSNorm scales, llmjax's `(bias|scale)$`), the same warmup + cosine
schedule (LambdaLR over `llmjax.optim.learning_rate`; `side_by_side.torch_adamw`),
`clip_grad_norm_` at the
same norm, and llmjax's loss: label-smoothed cross-entropy summed over the real target tokens and
divided by their count. HF's T5 has no packed-segment masks, so each step's packed rows are
unpacked into their pairs (the same pairs, the same decoder inputs), run in chunks of similar length
whose gradients add up to the step's: T5's relative position bias depends only on the distance
between tokens, so a pair computes the same alone as packed. Test
translations come from `generate(num_beams=..., length_penalty=..., max_new_tokens=...)` on the same
source ids, decoded by the same SentencePiece model and scored by the same sacrebleu calls.

Prints a table (steps, both test BLEU, chrF and teacher-forced losses, the relative BLEU difference,
the wall time of each side) and writes the figures as JSON with `--out`.
"""

import argparse
import itertools
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
from llmjax.data import translation  # noqa: E402
from llmjax.tasks import seq2seq  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--steps', type=int, default=1500)
  p.add_argument('--layers', type=int, default=2)
  p.add_argument('--width', type=int, default=256)
  p.add_argument('--vocab', type=int, default=8000)
  p.add_argument('--max_len', type=int, default=128)
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--beams', type=int, default=4)
  p.add_argument('--test_examples', type=int, default=-1, help='translate the first N (-1 = all)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
  p.add_argument('--device', default='cpu',
                 help="torch device of the transformers side (llmjax uses JAX's default backend)")
  p.add_argument('--chunk', type=int, default=16,
                 help='pairs per forward pass of the transformers side (larger on a GPU)')
  p.add_argument('--out', default='', help='also write the figures as JSON to this file')
  return p.parse_args(argv)


def load_config(args: argparse.Namespace):
  """configs/translate_bible.py's config for these sizes, without dropout."""
  config = side_by_side.load_config(
      f'configs/translate_bible.py:steps={args.steps},layers={args.layers},width={args.width},'
      f'vocab={args.vocab},max_len={args.max_len},batch={args.batch},lr={args.lr},'
      f'beams={args.beams}')
  config.seed = args.seed
  config.model.dropout_rate = 0.0
  # One evaluation, after the last step, by loss (the validation replay decodes nothing).
  config.eval.every_steps = 0
  config.eval.metric = 'loss'
  config.eval.mode = 'min'
  config.eval.max_decode_examples = args.test_examples
  config.checkpoint.every_steps = args.steps
  config.log_every_steps = max(args.steps // 10, 1)
  return config


def load_batches(config):
  """(first num_train_steps train batches, the test rows, the data), numpy."""
  data = translation.build(config)
  train_batches = [{k: np.array(v) for k, v in b.items()}
                   for b in itertools.islice(data.train_iter(), config.num_train_steps)]
  test_batches = [{k: np.array(v) for k, v in b.items()} for b in data.eval_iter('test')]
  return train_batches, test_batches, data


class ReplayData:
  """The data interface over saved batches, so `train_and_evaluate` trains on exactly them."""

  steps_per_epoch = None

  def __init__(self, train_batches, test_batches, data):
    self._train = train_batches
    self._test = test_batches
    self.vocab_size = data.vocab_size
    self.tokenizer = data.tokenizer

  def train_iter(self, start_step: int = 0):
    return iter(self._train[start_step:])

  def eval_iter(self, split: str):
    if split == 'test':
      return iter(self._test)
    return iter({**b, 'decode': np.zeros_like(b['decode'])} for b in self._test)


def run_llmjax(config, train_batches, test_batches, data) -> dict:
  """Test BLEU, chrF, loss and wall time of `train.train_and_evaluate` on the saved batches."""
  import jax
  results, wall = side_by_side.train_llmjax(config, ReplayData(train_batches, test_batches, data))
  test = results['test']
  return {'bleu': test['bleu'], 'chrf': test['chrf'], 'test_loss': test['loss'],
          'wall_s': wall, 'train_loss': results['epoch_loss']['0'],
          'device': jax.devices()[0].device_kind}


# --- transformers + PyTorch -----------------------------------------------------------------------


def unpack(batch) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """(source ids, decoder inputs, targets) of every pair packed in a batch's rows."""
  pairs = []
  for row in range(len(batch['inputs'])):
    for segment in range(1, int(batch['target_segment_ids'][row].max()) + 1):
      src = batch['inputs'][row][batch['input_segment_ids'][row] == segment]
      tgt = batch['target_segment_ids'][row] == segment
      pairs.append((src, batch['decoder_inputs'][row][tgt], batch['targets'][row][tgt]))
  return pairs


def _pad(arrays, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
  width = max(len(a) for a in arrays)
  out, mask = np.zeros((len(arrays), width), dtype), np.zeros((len(arrays), width), dtype)
  for i, a in enumerate(arrays):
    out[i, :len(a)], mask[i, :len(a)] = a, 1
  return out, mask


def hf_loss_sums(model, pairs, label_smoothing: float):
  """(summed smoothed loss, summed NLL, target count) over the pairs, as llmjax's task."""
  import torch
  source, source_mask = _pad([p[0] for p in pairs])
  decoder_inputs, target_mask = _pad([p[1] for p in pairs])
  targets, _ = _pad([p[2] for p in pairs])
  tensor = lambda a, dtype=None: torch.as_tensor(a, dtype=dtype, device=model.device)
  logits = model(input_ids=tensor(source), attention_mask=tensor(source_mask),
                 decoder_input_ids=tensor(decoder_inputs),
                 decoder_attention_mask=tensor(target_mask), use_cache=False).logits
  flat, labels = logits.flatten(0, 1).float(), tensor(targets).flatten()
  weights = tensor(target_mask, torch.float32).flatten()
  smoothed = torch.nn.functional.cross_entropy(flat, labels, reduction='none',
                                               label_smoothing=label_smoothing)
  nll = torch.nn.functional.cross_entropy(flat, labels, reduction='none')
  return (smoothed * weights).sum(), (nll * weights).sum(), weights.sum()


def build_hf_model(config, seed: int):
  import torch
  import transformers
  m = config.model
  torch.manual_seed(seed)
  hf_config = transformers.T5Config(
      vocab_size=m.vocab_size, d_model=m.d_model, d_kv=m.d_kv, d_ff=m.d_ff,
      num_layers=m.num_layers, num_decoder_layers=m.num_decoder_layers or m.num_layers,
      num_heads=m.num_heads, relative_attention_num_buckets=m.relative_attention_num_buckets,
      relative_attention_max_distance=m.relative_attention_max_distance, dropout_rate=0.0,
      layer_norm_epsilon=m.layer_norm_eps, initializer_factor=m.initializer_factor,
      feed_forward_proj=m.feed_forward, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1,
      decoder_start_token_id=0)
  return transformers.T5ForConditionalGeneration(hf_config)


def test_rows(test_batches) -> tuple[list[np.ndarray], list[str], list[tuple]]:
  """(source ids, reference texts) of the test rows marked for decoding, and all real test pairs
  as (source, decoder inputs, targets) for the teacher-forced loss."""
  sources, references, pairs = [], [], []
  for b in test_batches:
    for i in range(len(b['inputs'])):
      if not b['weights'][i].any():
        continue
      src = b['inputs'][i][b['input_segment_ids'][i] > 0]
      tgt = b['target_segment_ids'][i] > 0
      pairs.append((src, b['decoder_inputs'][i][tgt], b['targets'][i][tgt]))
      if b['decode'][i] > 0:
        sources.append(src)
        references.append(bytes(b['reference'][i]).rstrip(b'\0').decode('utf-8'))
  return sources, references, pairs


def run_transformers(model, config, train_batches, test_batches, data, threads: int,
                     device: str = 'cpu', chunk: int = 16) -> dict:
  """Test BLEU, chrF, loss and wall time of T5ForConditionalGeneration on the saved batches."""
  with side_by_side.torch_threads(threads):
    return _train_transformers(model.to(device), config, train_batches, test_batches, data, chunk)


def backward(model, pairs, label_smoothing: float, chunk: int) -> float:
  """Adds the gradient of the step's loss (smoothed, per target token) to the model's and returns
  the summed NLL. The pairs run by length, in chunks of `chunk` padded to their own longest pair (far
  less padding than one batch of all pairs); the chunks' gradients add up to the whole batch's."""
  pairs = sorted(pairs, key=lambda p: (len(p[0]), len(p[2])))
  step_tokens = sum(len(p[2]) for p in pairs)
  nll_sum = 0.0
  for i in range(0, len(pairs), chunk):
    chunk_loss, chunk_nll, _ = hf_loss_sums(model, pairs[i:i + chunk], label_smoothing)
    (chunk_loss / max(step_tokens, 1)).backward()
    nll_sum += float(chunk_nll.detach())
  return nll_sum


def _train_transformers(model, config, train_batches, test_batches, data, chunk: int) -> dict:
  import torch
  start = time.time()
  opt, sched = side_by_side.torch_adamw(model, config, config.num_train_steps)
  smoothing = config.task.label_smoothing
  model.train()
  run_nll, run_weight, window = 0.0, 0.0, []
  for step, batch in enumerate(train_batches):
    pairs = unpack(batch)
    step_tokens = sum(len(p[2]) for p in pairs)
    opt.zero_grad(set_to_none=True)
    nll_sum = backward(model, pairs, smoothing, chunk)
    if config.optim.clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_norm)
    opt.step()
    sched.step()
    window.append((nll_sum, float(step_tokens)))
    run_nll, run_weight = run_nll + window[-1][0], run_weight + window[-1][1]
    if (step + 1) % config.log_every_steps == 0 or step + 1 == len(train_batches):
      print(f'transformers step {step + 1}: train loss '
            f'{sum(l for l, _ in window) / max(sum(w for _, w in window), 1):.4f}', flush=True)
      window = []
  model.eval()
  sources, references, pairs = test_rows(test_batches)
  total, count = 0.0, 0.0
  hypotheses = []
  with torch.no_grad():
    for i in range(0, len(pairs), config.eval_batch_size):
      _, nll_sum, weight = hf_loss_sums(model, pairs[i:i + config.eval_batch_size], 0.0)
      total, count = total + float(nll_sum), count + float(weight)
    for i in range(0, len(sources), config.eval_batch_size):
      ids, mask = _pad(sources[i:i + config.eval_batch_size])
      out = model.generate(input_ids=torch.as_tensor(ids, device=model.device),
                           attention_mask=torch.as_tensor(mask, device=model.device),
                           num_beams=config.eval.num_beams,
                           length_penalty=config.eval.length_penalty, early_stopping=False,
                           max_new_tokens=config.data.target_max_len, do_sample=False,
                           decoder_start_token_id=0, eos_token_id=data.tokenizer.eos_id,
                           pad_token_id=0)
      # Without the start token; up to EOS, decoded as llmjax's task decodes its own.
      hypotheses += [seq2seq.generated_text(data.tokenizer, row[1:]) for row in out.cpu().numpy()]
  bleu = sacrebleu_scores(hypotheses, references)
  return {**bleu, 'test_loss': total / max(count, 1.0), 'wall_s': time.time() - start,
          'train_loss': run_nll / max(run_weight, 1.0)}


def sacrebleu_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
  import sacrebleu
  return {'bleu': float(sacrebleu.corpus_bleu(hypotheses, [references]).score),
          'chrf': float(sacrebleu.corpus_chrf(hypotheses, [references]).score)}


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = load_config(args)
  t = time.time()
  train_batches, test_batches, data = load_batches(config)
  tokens = sum(float(b['weights'].sum()) for b in train_batches)
  decoded = sum(int(b['decode'].sum()) for b in test_batches)
  print(f'data: {len(train_batches)} train batches ({tokens:.0f} target tokens), '
        f'{len(test_batches)} test batches ({decoded} pairs to translate), vocab '
        f'{data.vocab_size}, {time.time() - t:.1f}s', flush=True)

  model = build_hf_model(config, config.seed)
  with tempfile.TemporaryDirectory() as init_dir:
    model.save_pretrained(init_dir)  # config.json + model.safetensors, llmjax's starting point
    config.model.init_from = init_dir
    jx = run_llmjax(config, train_batches, test_batches, data)
  print(f'llmjax: test BLEU {jx["bleu"]:.2f}, chrF {jx["chrf"]:.2f}, {jx["wall_s"]:.0f}s',
        flush=True)
  hf = run_transformers(model, config, train_batches, test_batches, data, args.threads,
                        args.device, args.chunk)
  rel = abs(jx['bleu'] - hf['bleu']) / max(hf['bleu'], 1e-9)
  m = config.model
  figures = {
      'steps': config.num_train_steps, 'layers': m.num_layers, 'width': m.d_model,
      'heads': m.num_heads, 'max_len': config.data.max_len, 'batch': config.batch_size,
      'vocab': m.vocab_size, 'lr': config.optim.lr, 'num_beams': config.eval.num_beams,
      'length_penalty': config.eval.length_penalty, 'train_tokens': tokens,
      'test_pairs_translated': decoded, 'seed': config.seed, 'llmjax': jx,
      'transformers': {**hf, 'device': args.device},
      'bleu_relative_diff': rel,
  }
  print(f'\n{"steps":>6} | {"":>12} | {"test BLEU":>9} | {"chrF":>6} | {"test loss":>9} | '
        f'{"wall":>7}')
  for name, r in (('llmjax', jx), ('transformers', hf)):
    print(f'{config.num_train_steps:>6} | {name:>12} | {r["bleu"]:>9.2f} | {r["chrf"]:>6.2f} | '
          f'{r["test_loss"]:>9.4f} | {r["wall_s"]:>6.0f}s')
  print(f'BLEU relative difference: {rel:.1%}; mean train loss over the run: llmjax '
        f'{jx["train_loss"]:.4f}, transformers {hf["train_loss"]:.4f}', flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(figures, indent=2))
  return figures


if __name__ == '__main__':
  side_by_side.run(main)
