"""benchmarks/ner_vs_transformers.py end to end on a tiny BERT and the fake tweets: both frameworks
train from the same weights on the same batches and report the same metrics (timings and the size of
the difference are not checked)."""

import importlib.util
import json
import math

import pytest

from conftest import REPO

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


def test_both_frameworks_tag_and_report_the_same_metrics(fake_cache, tmp_path, capsys):
  torch.manual_seed(0)
  transformers.BertModel(transformers.BertConfig(
      vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path / 'hf')
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(
      'import importlib.util\n'
      f'spec = importlib.util.spec_from_file_location("c", "{REPO}/configs/ner_wnut16.py")\n'
      'module = importlib.util.module_from_spec(spec)\n'
      'spec.loader.exec_module(module)\n'
      'def get_config(arg=None):\n'
      '  c = module.get_config("tiny")\n'
      f'  c.model.init_from = "{tmp_path / "hf"}"\n'
      '  c.num_train_steps = 4\n'
      '  c.eval.every_steps = 2\n'
      '  return c\n')
  spec = importlib.util.spec_from_file_location(
      'ner_vs_transformers', REPO / 'benchmarks' / 'ner_vs_transformers.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  out = tmp_path / 'figures.json'
  figures = module.main([f'--config={config_file}', f'--out={out}'])
  printed = capsys.readouterr().out
  ours, theirs = figures['llmjax'], figures['transformers']
  assert set(ours['test']) == set(theirs['test']) == {'loss', 'accuracy', 'precision', 'recall',
                                                      'f1'}
  assert all(math.isfinite(v) for v in (*ours['test'].values(), *theirs['test'].values()))
  # Evaluated at the same steps: 2 and 4.
  assert [e['step'] for e in theirs['validation']] == [e['step'] for e in ours['validation']]
  assert f'{ours["test"]["f1"]:.4f}' in printed and f'{theirs["test"]["f1"]:.4f}' in printed
  assert json.loads(out.read_text())['transformers']['best_step'] == theirs['best_step']
