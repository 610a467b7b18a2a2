"""Token classification: the loss counts first pieces only, metrics equal seqeval's (entities) and
scikit-learn's (words) on hand-made predictions, predictions map back to words, and a tiny NER run
trains, evaluates and predicts end to end."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from seqeval import metrics as seqeval_metrics
from sklearn import metrics as skm

from llmjax import train
from llmjax.models import bert
from llmjax.tasks.token_classification import TokenClassificationTask, is_bio

NER = ['O', 'B-loc', 'I-loc', 'B-per', 'I-per']
POS = ['NN', 'VB', 'DT', '.']
GARBAGE = 3  # what unscored positions hold: counted anywhere, it would change every metric


def outputs_of(rows, *, length=8, batch=3, loss=1.5):
  """Eval outputs of batches of `batch` rows: each given row is (true tag ids, predicted tag ids,
  first-piece positions); other positions, and padding rows, hold GARBAGE with mask 0."""
  outputs = []
  for start in range(0, len(rows), batch):
    label = np.full((batch, length), GARBAGE)
    prediction = np.full((batch, length), GARBAGE - 1)
    mask = np.zeros((batch, length), np.float32)
    for i, (truth, predicted, positions) in enumerate(rows[start:start + batch]):
      label[i, positions], prediction[i, positions], mask[i, positions] = truth, predicted, 1
    outputs.append({'label': label, 'prediction': prediction, 'mask': mask,
                    'loss': np.float32(loss * mask.sum()), 'weight': np.float32(mask.sum())})
  return outputs


def tags(names, line):
  return [names.index(t) for t in line.split()]


def test_entity_metrics_are_seqeval_and_accuracy_counts_words():
  task = TokenClassificationTask(None, NER)
  truth = ['B-loc I-loc O B-per', 'O B-per', 'I-loc I-loc O', 'B-per I-per']
  predicted = ['B-loc I-loc O O', 'B-loc B-per', 'B-loc I-loc O', 'B-per B-per']
  positions = [[1, 2, 4, 5], [1, 3], [1, 2, 3], [1, 6]]
  rows = [(tags(NER, t), tags(NER, p), pos) for t, p, pos in zip(truth, predicted, positions)]
  metrics = task.summarize(outputs_of(rows))
  # By hand, conlleval-style (seqeval's default): an I- tag after O opens an entity, so sentence 3's
  # 'I-loc I-loc' is one loc that B-loc I-loc matches. True entities: loc, per | per | loc | per;
  # predicted: loc | loc, per | loc | per, per. Correct: 3 of 6 predicted, 3 of 5 true.
  assert metrics['precision'] == pytest.approx(3 / 6)
  assert metrics['recall'] == pytest.approx(3 / 5)
  assert metrics['f1'] == pytest.approx(2 * (3 / 6) * (3 / 5) / (3 / 6 + 3 / 5))
  assert metrics['accuracy'] == pytest.approx(7 / 11)  # words, not pieces or padding
  assert metrics['loss'] == pytest.approx(1.5)
  split = [line.split() for line in truth], [line.split() for line in predicted]
  assert metrics['f1'] == pytest.approx(seqeval_metrics.f1_score(*split))
  assert metrics['precision'] == pytest.approx(seqeval_metrics.precision_score(*split))
  assert metrics['recall'] == pytest.approx(seqeval_metrics.recall_score(*split))
  assert metrics['accuracy'] == pytest.approx(seqeval_metrics.accuracy_score(*split))


def test_metrics_of_other_tag_sets_are_sklearns_macro_average():
  task = TokenClassificationTask(None, POS)
  truth = ['DT NN VB .', 'NN VB', 'DT NN .']
  predicted = ['DT NN NN .', 'NN VB', 'NN NN .']
  rows = [(tags(POS, t), tags(POS, p), list(range(1, 1 + len(t.split()))))
          for t, p in zip(truth, predicted)]
  metrics = task.summarize(outputs_of(rows, batch=2))
  flat_truth = [t for line in truth for t in line.split()]
  flat_predicted = [t for line in predicted for t in line.split()]
  precision, recall, f1, _ = skm.precision_recall_fscore_support(
      flat_truth, flat_predicted, average='macro', zero_division=0)
  assert metrics['accuracy'] == pytest.approx(7 / 9)
  assert (metrics['precision'], metrics['recall'], metrics['f1']) == pytest.approx(
      (precision, recall, f1))


def test_tag_sets():
  assert is_bio(NER) and is_bio(['O', 'B-PER', 'I-PER', 'E-PER', 'S-PER'])
  assert not is_bio(POS) and not is_bio(['O']) and not is_bio(['O', 'B-x', 'PRP$'])


def test_loss_counts_first_pieces_only():
  config = bert.BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                           intermediate_size=32, max_position_embeddings=16)
  task = TokenClassificationTask(bert.BertForTokenClassification(config, len(NER)), NER,
                                 label_smoothing=0.1)
  params = nn.unbox(task.init(jax.random.key(0), 8))
  rng = np.random.default_rng(0)
  batch = {'input_ids': rng.integers(5, 50, (2, 8)).astype(np.int32),
           'token_type_ids': np.zeros((2, 8), np.int32),
           'attention_mask': np.ones((2, 8), np.int32),
           'labels': rng.integers(0, len(NER), (2, 8)).astype(np.int32),
           'weights': np.zeros((2, 8), np.float32)}
  batch['weights'][0, [1, 2, 5]] = batch['weights'][1, [1, 3]] = 1
  smoothed, sums = task.loss(params, batch, None)
  log_p = jax.nn.log_softmax(jax.jit(task.logits)(params, batch), -1)
  nll = -np.take_along_axis(np.asarray(log_p), batch['labels'][..., None], -1)[..., 0]
  scored = batch['weights'] > 0
  assert float(sums['weight']) == 5
  assert float(sums['loss']) == pytest.approx(nll[scored].sum(), rel=1e-5)  # the NLL, unsmoothed
  assert float(smoothed) == pytest.approx(
      (0.9 * nll - 0.1 * np.asarray(log_p).mean(-1))[scored].sum(), rel=1e-5)
  # Whatever unscored positions hold changes nothing.
  other = {**batch, 'labels': np.where(scored, batch['labels'], (batch['labels'] + 1) % 5)}
  assert float(task.loss(params, other, None)[1]['loss']) == float(sums['loss'])


def test_predictions_map_back_to_words():
  task = TokenClassificationTask(None, NER)
  prediction = np.array([[0, 1, 2, 2, 0, 3], [0, 4, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
  mask = np.array([[0, 1, 1, 0, 1, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], np.float32)
  inputs = [{'tokens': ['New', 'Yorkers', 'rock']}, {'tokens': ['Ann', 'walks', 'far']}]
  assert task.format_predictions({'prediction': prediction, 'mask': mask}, inputs) == [
      {'tokens': ['New', 'Yorkers', 'rock'], 'tags': ['B-loc', 'I-loc', 'O']},
      # Only the first word survived truncation: the others have no tag.
      {'tokens': ['Ann', 'walks', 'far'], 'tags': ['I-per', None, None]}]


def test_tiny_ner_run_predicts_a_tag_per_word(tiny_run, fake_cache, tmp_path):
  """configs/ner_wnut16.py:tiny trained on the fake tweets, then --mode=eval and --mode=predict."""
  _, workdir, result = tiny_run('ner_wnut16')  # 2 steps, evaluated at 2 (conftest.py)
  assert set(result['test']) == set(TokenClassificationTask.METRICS)
  metrics = train.evaluate_checkpoint(train.run_config(workdir), workdir, 'test',
                                      tmp_path / 'metrics.json')
  for name, value in result['test'].items():
    assert metrics[name] == pytest.approx(value, rel=1e-6), name

  inputs = tmp_path / 'tweets.txt'
  inputs.write_text('{"id": 3, "tokens": ["Alice", "saw", "the", "movies"]}\n'
                    'the film was good in London\n')
  out = tmp_path / 'tags.jsonl'
  assert train.predict_file(train.run_config(workdir), workdir, inputs, out) == 2
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert rows[0]['id'] == 3 and rows[0]['tokens'] == ['Alice', 'saw', 'the', 'movies']
  assert rows[1]['tokens'] == 'the film was good in London'.split()
  names = train.run_config(workdir).data.label_names
  assert all(len(r['tags']) == len(r['tokens']) and set(r['tags']) <= set(names) for r in rows)
