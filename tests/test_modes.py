"""`--mode=eval` and `--mode=predict` on trained tiny runs: the metrics a run reported, predictions
that agree with them, label sets that must match, and one-line errors."""

import json
import subprocess
import sys

import pytest

import fakes
from conftest import ONE, REPO, load_config
from llmjax import train
from llmjax.data import pipeline
from llmjax.errors import UserError


# classifier_run (conftest.py): the tiny sentiment classifier, trained once for the session.


def test_eval_mode_reproduces_the_runs_test_metrics(classifier_run, fake_cache, tmp_path):
  workdir, result, _ = classifier_run
  metrics = train.evaluate_checkpoint(train.run_config(workdir), workdir, 'test')
  assert metrics['step'] == result['best_step']
  for name, value in result['test'].items():
    assert metrics[name] == pytest.approx(value, rel=1e-6), name
  written = json.loads((workdir / 'metrics.json').read_text())
  assert written == pytest.approx(metrics)
  last = result['steps']
  other = train.evaluate_checkpoint(train.run_config(workdir), workdir, 'validation',
                                    output=tmp_path / 'v.json', step=last)
  assert other['step'] == last and other['split'] == 'validation'
  assert json.loads((tmp_path / 'v.json').read_text())['step'] == last
  with pytest.raises(UserError, match=r'has no checkpoint of step 1: choose one of'):
    train.evaluate_checkpoint(train.run_config(workdir), workdir, 'test', step=1)


def test_predict_mode_agrees_with_the_test_metrics(classifier_run, fake_cache, tmp_path):
  workdir, result, _ = classifier_run
  config = train.run_config(workdir)
  split = pipeline.build(config)._splits['test']
  test = [split[i] for i in range(len(split))]
  inputs = tmp_path / 'in.jsonl'
  inputs.write_text(''.join(json.dumps({'id': i, 'sentence': texts[0]}) + '\n'
                            for i, (texts, _) in enumerate(test)))
  out = tmp_path / 'out.jsonl'
  assert train.predict_file(config, workdir, inputs, out) == len(test)
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r['id'] for r in rows] == list(range(len(test)))  # In input order, fields echoed.
  assert all(set(r['probabilities']) == {'negative', 'positive'} for r in rows)
  assert all(abs(sum(r['probabilities'].values()) - 1) < 1e-4 for r in rows)
  names = config.data.label_names
  right = sum(r['label'] == names[label] for r, (_, label) in zip(rows, test))
  assert right / len(test) == pytest.approx(result['test']['accuracy'])


def test_modes_from_the_command_line(classifier_run, fake_cache, tmp_path):
  workdir, _, _ = classifier_run
  (tmp_path / 'in.txt').write_text('a wonderful film\nan awful mess\n')

  def main(*flags):
    return subprocess.run([sys.executable, '-m', 'llmjax.main', f'--workdir={workdir}', *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=300)

  proc = main('--mode=predict', f'--input={tmp_path / "in.txt"}', f'--output={tmp_path / "o.jsonl"}')
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [json.loads(line) for line in (tmp_path / 'o.jsonl').read_text().splitlines()]
  assert [r['sentence'] for r in rows] == ['a wonderful film', 'an awful mess']
  proc = main('--mode=predict', f'--input={tmp_path / "missing.txt"}', '--output=o')
  assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(
      'llmjax: error: --input=') and 'no such file' in proc.stderr
  proc = main('--mode=eval', f'--workdir={tmp_path}')
  assert proc.returncode == 2 and 'has no config.json' in proc.stderr


def test_regression_run_evaluates_and_predicts(fake_cache, tmp_path):
  config = load_config('movie_rating', 'tiny')
  config.num_epochs = 3
  result = train.train_and_evaluate(config, tmp_path, devices=ONE)
  assert set(result['test']) == {'loss', 'mse', 'pearson', 'spearman'}
  assert result['test']['pearson'] > 0.5  # Ratings follow the fake polarity words.
  hf = json.loads((tmp_path / 'hf_export' / 'config.json').read_text())
  assert hf['problem_type'] == 'regression' and hf['id2label'] == {'0': 'LABEL_0'}
  (tmp_path / 'in.txt').write_text('a wonderful film\nan awful mess\n')
  train.predict_file(train.run_config(tmp_path), tmp_path, tmp_path / 'in.txt', tmp_path / 'o')
  good, bad = [json.loads(line)['score'] for line in (tmp_path / 'o').read_text().splitlines()]
  assert good > bad


def test_a_changed_label_set_is_refused_on_resume(fake_cache, tmp_path):
  path = fakes.write_reviews_file(tmp_path / 'r.csv', num_rows=160)
  config = load_config('classify_files', f'tiny,train={path}')
  config.num_train_steps = 2
  train.train_and_evaluate(config, tmp_path / 'run', devices=ONE)
  assert list(train.run_config(tmp_path / 'run').data.label_names) == ['neg', 'pos']
  # The same file with the classes renamed: same count, so only the names tell.
  path.write_text(path.read_text().replace('"neg"', '"negative"'))
  config.num_train_steps = 4
  with pytest.raises(UserError, match=r"trained with labels \['neg', 'pos'\], the data now gives "
                                      r"\['negative', 'pos'\]"):
    train.train_and_evaluate(config, tmp_path / 'run', devices=ONE)


def test_a_run_from_before_a_new_config_key_still_evaluates(classifier_run, tmp_path):
  workdir, _, _ = classifier_run
  saved = json.loads((workdir / 'config.json').read_text())
  del saved['eval']['patience']  # As if llmjax had gained the key after the run.
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  config = train.run_config(tmp_path)
  assert config.eval.patience == 0 and config.model.hidden_size == saved['model']['hidden_size']
  assert list(config.data.label_names) == ['negative', 'positive']
