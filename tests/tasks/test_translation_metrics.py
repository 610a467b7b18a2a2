"""Translation evaluation: one pair per row, beam-search translations, BLEU and chrF (sacrebleu),
and predict-mode input files; on the fake Bible (tests/fakes.py) and a tiny T5."""

import json

import jax
import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from conftest import load_config
from llmjax import config_lib, tasks, train
from llmjax.data import lm
from llmjax.data import translation
from llmjax.tasks import seq2seq
from llmjax.errors import UserError


@pytest.fixture
def config(fake_cache):
  del fake_cache
  return load_config('translate_bible', 'tiny')


def _rows(batches):
  return [{k: v[i] for k, v in b.items()} for b in batches for i in range(len(b['inputs']))]


def test_eval_rows_hold_one_pair_and_its_reference_text(config):
  config.eval.max_decode_examples = 5
  data = translation.build(config)
  pairs = data.pairs('validation')
  rows = _rows(data.eval_iter('validation'))
  assert len(rows) % config.eval_batch_size == 0 and len(rows) >= len(pairs)
  real = [r for r in rows if r['weights'].sum() > 0]
  assert len(real) == len(pairs)
  for row, (source, target) in zip(real, pairs):
    assert set(row['input_segment_ids'].tolist()) == {0, 1}  # one pair, then padding
    assert bytes(row['reference']).rstrip(b'\0').decode() == target
    ids = row['inputs'][row['input_segment_ids'] > 0].tolist()
    assert ids == data.tokenizer.encode(source) + [data.tokenizer.eos_id]
  assert [float(r['decode']) for r in rows][:7] == [1] * 5 + [0] * 2
  assert all(r['decode'] == 0 and r['weights'].sum() == 0 for r in rows[len(pairs):])


def test_unpacked_eval_loss_equals_the_packed_loss(config):
  data = translation.build(config)
  task = tasks.task_for(config, data)
  params = task.init(jax.random.key(0), 8)
  packed = lm.build_translation(config)
  teacher_forced = seq2seq.Seq2SeqTask  # the loss part of the translation task
  sums = lambda batches: teacher_forced.summarize(task, [  # noqa: E731
      jax.device_get(teacher_forced.eval_outputs(task, params, b)) for b in batches])
  one_per_row, several_per_row = sums(data.eval_iter('test')), sums(packed.eval_iter('test'))
  assert one_per_row['loss'] == pytest.approx(several_per_row['loss'], rel=1e-5)
  assert one_per_row['accuracy'] == pytest.approx(several_per_row['accuracy'])


def test_summarize_scores_decoded_rows_with_sacrebleu(config):
  data = translation.build(config)
  task = tasks.task_for(config, data)
  tok = data.tokenizer
  # Words of the fake corpus, so that the tokenizer gives them back unchanged.
  references = ['el rey vio el casa y el agua.', 'y dijo dios luz.', 'el hijo de el hombre.']
  hypotheses = ['el rey vio casa y agua.', 'y dijo dios luz.', 'el hombre.']
  width = 2 * task.max_new_tokens

  def row(hypothesis, reference):
    tokens = np.zeros(width, np.int32)
    ids = tok.encode(hypothesis) + [tok.eos_id]
    tokens[:len(ids)] = ids
    ref = np.zeros(64, np.uint8)
    ref[:len(reference.encode())] = np.frombuffer(reference.encode(), np.uint8)
    return tokens, ref

  made = [row(h, r) for h, r in zip(hypotheses, references)]
  outputs = [{'loss': 3.0, 'weight': 2.0, 'correct': 1.0,
              'tokens': np.stack([m[0] for m in made]), 'reference': np.stack([m[1] for m in made]),
              # The third row is not decoded: it must not count.
              'decode': np.array([1, 1, 0], np.float32)}]
  metrics = task.summarize(outputs)
  decoded = [task.text(m[0]) for m in made[:2]]
  assert decoded == [tok.decode(tok.encode(h)) for h in hypotheses[:2]]
  assert metrics['bleu'] == pytest.approx(sacrebleu.corpus_bleu(decoded, [references[:2]]).score)
  assert metrics['chrf'] == pytest.approx(sacrebleu.corpus_chrf(decoded, [references[:2]]).score)
  assert 0 < metrics['bleu'] < 100 and metrics['loss'] == 1.5
  # ROUGE F1 with stemming, the mean over the decoded rows, as summarization papers report it.
  scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)
  for name in ('rouge1', 'rouge2', 'rougeL'):
    expected = np.mean([scorer.score(r, h)[name].fmeasure for h, r in zip(decoded, references)])
    assert metrics[name] == pytest.approx(100 * expected)
  perfect = task.summarize([{**outputs[0], 'tokens': np.stack([row(r, r)[0] for r in references]),
                             'decode': np.ones(3, np.float32)}])
  assert perfect['bleu'] == pytest.approx(100.0) and perfect['chrf'] == pytest.approx(100.0)


def test_eval_outputs_translate_by_beam_search(config):
  data = translation.build(config)
  task = tasks.task_for(config, data)
  params = task.init(jax.random.key(0), 8)
  batch = next(data.eval_iter('validation'))
  out = jax.device_get(jax.jit(task.eval_outputs)(params, batch))
  assert out['tokens'].shape == (config.eval_batch_size, config.data.target_max_len)
  expected = jax.device_get(task.predict(params, batch)['tokens'])
  np.testing.assert_array_equal(out['tokens'], expected)
  # A batch with nothing to decode skips the search.
  skipped = jax.device_get(jax.jit(task.eval_outputs)(params, {**batch,
                                                              'decode': 0 * batch['decode']}))
  assert not skipped['tokens'].any()
  metrics = task.summarize([out])
  assert set(metrics) == set(seq2seq.TranslationTask.METRICS)


def test_predict_reads_text_or_jsonl_and_formats_one_line_per_input(config, tmp_path):
  data = translation.build(config)
  task = tasks.task_for(config, data)
  params = task.init(jax.random.key(0), 8)
  sentences = [f'the king saw the house {i}.' for i in range(config.eval_batch_size + 3)]
  text_file = tmp_path / 'in.txt'
  text_file.write_text('\n'.join(sentences[:4]) + '\n\n' + '\n'.join(sentences[4:]) + '\n')
  json_file = tmp_path / 'in.jsonl'
  json_file.write_text(''.join(json.dumps({'en': s, 'id': i}) + '\n'
                               for i, s in enumerate(sentences)))
  for path in (text_file, json_file):
    lines = []
    for batch, inputs in data.predict_iter(path):
      assert len(batch['inputs']) == config.eval_batch_size
      outputs = jax.device_get(task.predict(params, batch))
      # As --mode=predict writes them: the input's fields and the prediction.
      lines += [{**x, **y} for x, y in zip(inputs, task.format_predictions(outputs, inputs))]
    assert [x['en'] for x in lines] == sentences
    assert [x.get('id') for x in lines] == (list(range(len(sentences))) if path == json_file
                                            else [None] * len(sentences))
    assert all(isinstance(x['translation'], str) for x in lines)
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"en": "fine"}\n{"es": "no source"}\n')
  with pytest.raises(UserError, match=r'bad.jsonl:2: no text field \'en\''):
    next(data.predict_iter(bad))


def test_registry_and_config_checks(config):
  assert {'bleu', 'chrf'} <= set(tasks.TASKS['translation'].metrics)
  assert isinstance(tasks.task_for(config), seq2seq.TranslationTask)  # no data: restoring a run
  config_lib.validate(config, 8)
  config.eval.max_decode_examples = 0
  with pytest.raises(UserError, match='max_decode_examples=0 is 0, so nothing is translated'):
    config_lib.validate(config, 8)
  config.eval.update(max_decode_examples=-1, num_beams=0)
  with pytest.raises(UserError, match='num_beams=0 must be >= 1'):
    config_lib.validate(config, 8)


def test_eval_and_predict_modes_on_a_trained_run(tiny_run, fake_cache, tmp_path):
  config, run, result = tiny_run('translate_bible')  # 2 steps, evaluated at 2 (conftest.py)
  assert {'bleu', 'chrf'} <= set(result['test'])
  metrics = train.evaluate_checkpoint(config, run, 'validation', tmp_path / 'metrics.json')
  assert json.loads((tmp_path / 'metrics.json').read_text())['bleu'] == pytest.approx(
      metrics['bleu'])
  (tmp_path / 'in.txt').write_text('the king saw the house.\n\nand god said.\n')
  assert train.predict_file(config, run, tmp_path / 'in.txt', tmp_path / 'out') == 2
  lines = [json.loads(line) for line in (tmp_path / 'out').read_text().splitlines()]
  assert [x['en'] for x in lines] == ['the king saw the house.', 'and god said.']
  assert all(isinstance(x['translation'], str) for x in lines)
