"""benchmarks/throughput_vs_transformers.py on the tiny variants of its four cases: both frameworks
train on the same batches, report the same shapes and token counts, and finish their steps (timings
are not checked)."""

import json

import numpy as np
import pytest

from conftest import load_benchmark, load_config
from llmjax.errors import UserError

pytest.importorskip('torch')
pytest.importorskip('transformers')


def test_every_case_runs_on_both_sides_with_the_same_shapes(fake_cache, tmp_path, capsys):
  bench = load_benchmark('throughput_vs_transformers')
  out = tmp_path / 'figures.json'
  figures = bench.main(['--tiny', '--rounds=1', '--steps=2', '--warmup=1', '--warmup_rounds=1',
                        f'--out={out}'])
  printed = capsys.readouterr().out
  assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
  assert list(figures['cases']) == ['a', 'b', 'c', 'd'] and figures['warmup_rounds'] == 1
  architectures = {'a': 'BertForSequenceClassification', 'b': 'BertForMaskedLM',
                   'c': 'GPT2LMHeadModel', 'd': 'T5ForConditionalGeneration'}
  for name, case in figures['cases'].items():
    ours, theirs = case['llmjax'], case['transformers']
    assert theirs['architecture'] == architectures[name]
    assert ours['batch_shape'] == theirs['batch_shape']
    assert ours['batch_shape'][:2] == [4, 16]
    assert (ours['batch_shape'][2] > 0) == (name == 'd')  # Only T5 has decoder positions.
    assert ours['tokens_per_step'] == theirs['tokens_per_step'] > 0
    for side in (ours, theirs):
      assert len(side['step_times_s']) == 2 and side['step_s'] > 0
      assert side['tokens_per_s'] == pytest.approx(side['tokens_per_step'] / side['step_s'])
      assert side['flops_per_s'] == pytest.approx(case['flops_per_step'] / side['step_s'])
    assert case['ratio'] == pytest.approx(ours['tokens_per_s'] / theirs['tokens_per_s'])
    low, high = case['ratio_interval']
    assert 0 < low <= high
    assert f'case {name}: ' in printed
  assert 'llmjax/torch' in printed and 'transformers' in figures['versions']


def test_worker_answers_a_users_error_and_dies_on_a_bug():
  bench = load_benchmark('throughput_vs_transformers')
  worker = bench.Worker('torch', threads=1)
  try:
    with pytest.raises(UserError, match="no case 'e': choose among a,b,c,d"):
      worker.ask(load='e', tiny=True)
    # A step before any case is loaded is a bug: the worker's traceback, then its exit.
    with pytest.raises(RuntimeError, match='the torch worker exited with status 1'):
      worker.ask(steps=1)
  finally:
    worker.close()


def test_ratio_interval_brackets_the_ratio_of_medians():
  bench = load_benchmark('throughput_vs_transformers')
  # Steady steps: every resample has the same medians.
  assert bench.ratio_interval([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0])
  # Noisy steps around 2.0 s and 2.2 s: llmjax 10% faster, within a few percent.
  rng = np.random.default_rng(1)
  ours, theirs = 2.0 + 0.1 * rng.standard_normal(30), 2.2 + 0.1 * rng.standard_normal(30)
  low, high = bench.ratio_interval(list(ours), list(theirs))
  assert low < np.median(theirs) / np.median(ours) < high
  assert 1.0 < low and high < 1.2 and high - low < 0.1
  # A wider interval for a higher confidence; none from a single step.
  wide_low, wide_high = bench.ratio_interval(list(ours), list(theirs), confidence=0.99)
  assert wide_low < low and high < wide_high
  assert bench.ratio_interval([2.0], [2.0, 2.1]) is None


def test_case_configs_have_the_issues_shapes():
  # The full-size configs are only built, not run: their data would need the real assets.
  bench = load_benchmark('throughput_vs_transformers')
  a, b, c, d = (bench.CASES[name].load(tiny=False) for name in 'abcd')
  assert (a.batch_size, a.data.buckets, a.model.init_from) == (32, (64,), 'asset:all-MiniLM-L6-v2')
  assert (b.batch_size, b.data.max_len, b.model.vocab_size) == (32, 128, 30522)
  assert (b.model.num_layers, b.model.hidden_size, b.model.num_heads,
          b.model.intermediate_size) == (4, 256, 4, 1024)
  assert (c.batch_size, c.data.max_len, c.model.vocab_size, c.tokenizer.kind) == (
      16, 256, 50257, 'gpt2_bpe')
  assert (c.model.num_layers, c.model.hidden_size, c.model.num_heads) == (6, 384, 6)
  assert (d.batch_size, d.data.max_len, d.model.vocab_size) == (16, 128, 32128)
  assert (d.model.num_layers, d.model.d_model, d.model.num_heads, d.model.d_ff) == (6, 512, 8, 2048)


def test_gpt2_bpe_argument_and_tiny_variant_tokenizers():
  config = load_config('gpt_lm', 'gpt2_bpe')
  assert (config.tokenizer.kind, config.model.vocab_size) == ('gpt2_bpe', 50257)
  # tiny trains its own small SentencePiece model whatever the other arguments say.
  tiny = load_config('gpt_lm', 'gpt2_bpe,tiny')
  assert (tiny.tokenizer.kind, tiny.model.vocab_size) == ('sentencepiece', 256)


def test_unknown_case_is_refused(capsys):
  bench = load_benchmark('throughput_vs_transformers')
  with pytest.raises(SystemExit):
    bench.parse_args(['--cases=a,e'])
  assert 'choose among a,b,c,d' in capsys.readouterr().err
