"""Token classification (NER, POS tagging): a tag per word from a per-token classifier.

Batches come from `llmjax.data.tagging`: each word's tag sits on its first piece, and `weights`
marks those pieces, so the cross-entropy, its label smoothing and every metric count words, never
continuation pieces, [CLS]/[SEP] or padding. Metrics over a split:

  accuracy                  correct tags over all scored words (POS tagging's figure)
  precision, recall, f1     for BIO tag sets (all tags 'O' or B-/I-/E-/S-TYPE): entity-level, micro
                            averaged, computed by seqeval in its default (conlleval) mode, as
                            transformers' run_ner reports them; for other tag sets, the macro
                            average over the tags present (scikit-learn)
  loss                      NLL per word

The interface is the one every task offers (see `classification.py`).
"""

import re

import jax.numpy as jnp
import numpy as np

from llmjax.tasks.classification import _SequenceTask
from llmjax.tasks.token_prediction import TokenPredictionTask

_BIO_TAG = re.compile(r'^[BIES]-.+')


def is_bio(label_names) -> bool:
  """Whether the tags mark entity spans (IOB2 / IOBES), so entity-level metrics apply."""
  return (any(_BIO_TAG.match(n) for n in label_names)
          and all(n == 'O' or _BIO_TAG.match(n) for n in label_names))


class TokenClassificationTask(TokenPredictionTask, _SequenceTask):
  """Cross-entropy over `label_names` at each word's first piece (TokenPredictionTask's loss on the
  logits of a `BertForTokenClassification`)."""

  label_key = 'labels'
  METRICS = ('loss', 'accuracy', 'precision', 'recall', 'f1')

  def __init__(self, model, label_names, label_smoothing: float = 0.0):
    super().__init__(model, label_smoothing)
    self.label_names = list(label_names)
    self.num_labels = len(self.label_names)
    self.bio = is_bio(self.label_names)

  def eval_outputs(self, params, batch):
    """The sums, and every position's predicted and true tag with its weight (1 = a scored word)."""
    logits = self.logits(params, batch)
    return {**self._sums(logits, batch)[1], 'prediction': jnp.argmax(logits, -1),
            'label': batch['labels'], 'mask': batch['weights']}

  def predict(self, params, batch):
    return {'prediction': jnp.argmax(self.logits(params, batch), -1), 'mask': batch['weights']}

  def format_predictions(self, outputs, inputs) -> list[dict]:
    """{'tokens': words, 'tags': a tag per word} per input row; a word that truncation dropped has
    tag None."""
    rows = []
    for prediction, mask, given in zip(outputs['prediction'], outputs['mask'], inputs):
      words = list(given['tokens'])
      tags = [self.label_names[t] for t in prediction[mask > 0]]
      rows.append({'tokens': words, 'tags': tags + [None] * (len(words) - len(tags))})
    return rows

  @staticmethod
  def train_metrics(sums: dict[str, float]) -> dict[str, float]:
    weight = max(sums['weight'], 1.0)
    return {'loss': sums['loss'] / weight, 'accuracy': sums['correct'] / weight}

  def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Loss, word accuracy, and precision, recall and F1 (see the module docstring) over a split."""
    # Imported here, as in classification.py: 1.4 s that commands which never score do not pay.
    from seqeval import metrics as seqeval_metrics  # pylint: disable=g-import-not-at-top
    from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
    truth, predicted = self.sentences(outputs)
    flat_truth = [t for s in truth for t in s]
    flat_predicted = [t for s in predicted for t in s]
    if not flat_truth:
      scores = (0.0, 0.0, 0.0)
    elif self.bio:
      # zero_division=0: what seqeval's default gives too, without its warning.
      scores = (seqeval_metrics.precision_score(truth, predicted, zero_division=0),
                seqeval_metrics.recall_score(truth, predicted, zero_division=0),
                seqeval_metrics.f1_score(truth, predicted, zero_division=0))
    else:
      scores = skm.precision_recall_fscore_support(flat_truth, flat_predicted, average='macro',
                                                   zero_division=0)[:3]
    weight = sum(float(o['weight']) for o in outputs)
    return {
        'loss': sum(float(o['loss']) for o in outputs) / max(weight, 1.0),
        'accuracy': float(skm.accuracy_score(flat_truth, flat_predicted)) if flat_truth else 0.0,
        **{name: float(s) for name, s in zip(('precision', 'recall', 'f1'), scores)},
    }

  def sentences(self, outputs) -> tuple[list[list[str]], list[list[str]]]:
    """The true and predicted tag names of each evaluated sentence's scored words."""
    truth, predicted = [], []
    for o in outputs:
      for label, prediction, mask in zip(o['label'], o['prediction'], o['mask']):
        scored = mask > 0
        if scored.any():  # padding rows score nothing
          truth.append([self.label_names[t] for t in label[scored]])
          predicted.append([self.label_names[t] for t in prediction[scored]])
    return truth, predicted
