"""benchmarks/t5_translation_vs_transformers.py end to end on a tiny shape and the fake Bible: both
frameworks train from the same weights on the same batches, translate the test books by beam search
and print BLEU and chrF (timings and the BLEU gap are not checked: 3 steps teach nothing)."""

import json
import math

import numpy as np
import pytest

from conftest import load_benchmark

pytest.importorskip('torch')
pytest.importorskip('transformers')

TINY = ['--steps=3', '--layers=1', '--width=32', '--vocab=64', '--max_len=32', '--batch=8',
        '--beams=2', '--test_examples=12']



def test_both_frameworks_train_translate_and_print_bleu(fake_cache, tmp_path, capsys):
  bench = load_benchmark('t5_translation_vs_transformers')
  out = tmp_path / 'figures.json'
  figures = bench.main([*TINY, f'--out={out}'])
  printed = capsys.readouterr().out
  assert figures['test_pairs_translated'] == 12
  for side in ('llmjax', 'transformers'):
    r = figures[side]
    assert 0 <= r['bleu'] <= 100 and 0 <= r['chrf'] <= 100 and math.isfinite(r['test_loss'])
    assert f'{r["bleu"]:.2f}' in printed and f'{r["test_loss"]:.4f}' in printed
    # 3 steps from a random start: both still near log(vocab), the same teacher-forced task.
    assert abs(r['test_loss'] - math.log(64)) < 1.0
  # The same starting weights, batches and optimizer: the same model after 3 steps.
  assert figures['llmjax']['test_loss'] == pytest.approx(figures['transformers']['test_loss'],
                                                         rel=1e-4)
  assert 'BLEU relative difference' in printed
  assert json.loads(out.read_text())['llmjax'] == pytest.approx(figures['llmjax'])


def test_unpacking_gives_back_every_packed_pair(fake_cache):
  bench = load_benchmark('t5_translation_vs_transformers')
  config = bench.load_config(bench.parse_args(TINY))
  train_batches, _, _ = bench.load_batches(config)
  batch = train_batches[0]
  pairs = bench.unpack(batch)
  assert len(pairs) == sum(int(s.max()) for s in batch['target_segment_ids'])
  np.testing.assert_array_equal(np.concatenate([p[2] for p in pairs]),
                                batch['targets'][batch['weights'] > 0])
  for source, decoder_inputs, targets in pairs:
    assert decoder_inputs[0] == 0 and (decoder_inputs[1:] == targets[:-1]).all()
    assert source[-1] == targets[-1] == 1  # both sides end in EOS


def test_chunks_of_any_size_give_the_step_gradient(fake_cache):
  import torch  # pylint: disable=g-import-not-at-top
  bench = load_benchmark('t5_translation_vs_transformers')
  config = bench.load_config(bench.parse_args(TINY))
  train_batches, _, _ = bench.load_batches(config)
  pairs = bench.unpack(train_batches[0])
  model = bench.build_hf_model(config, 0)
  grads, nlls = [], []
  for chunk in (1, 3, len(pairs)):
    model.zero_grad(set_to_none=True)
    nlls.append(bench.backward(model, pairs, 0.1, chunk))
    grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
  assert len(pairs) > 3
  for nll, grad in zip(nlls[1:], grads[1:]):
    assert nll == pytest.approx(nlls[0], rel=1e-5)
    torch.testing.assert_close(grad, grads[0], rtol=1e-4, atol=1e-7)
