"""Sequence classification: batch -> loss, predictions and the metrics the literature reports.

The network only computes logits; a task object owns the objective (T5X's split between module and
model), and the training loop knows nothing else about it. Every task offers:

  init(rng, length)                  -> params (boxed with logical axis names)
  loss(params, batch, dropout_rng)   -> (summed loss, sums), on device; sums['weight'] counts examples
  train_metrics(sums)                -> {name: value}, on the host, from sums added over steps
  eval_outputs(params, batch)        -> sums and per-row arrays of one batch, on device
  summarize(outputs)                 -> {name: value} over a whole split, on the host
  tokens(batch)                      -> real (non-padding) tokens in a host batch, for throughput
  predict(params, batch)             -> per-row predictions of one batch, on device (--mode=predict)
  format_predictions(outputs, inputs) -> one JSON-able dict per real row, on the host

Losses leave the device as sums with a weight (the number of real examples) so that padded rows count
for nothing and the host can normalise across batches and processes.
"""

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.tasks import losses

# scikit-learn and SciPy are imported by the functions that score a split: 1.4 s at the start of
# every command (predict, generate, bench, plan, the parent of a sweep) that never scores one.


class _SequenceTask:
  """What classification and regression share: a BERT-style model over (input_ids, token_type_ids,
  attention_mask) batches with one output vector per row."""

  def __init__(self, model):
    self.model = model

  def init(self, rng, length: int):
    ids = jnp.zeros((1, length), jnp.int32)
    return self.model.init(rng, ids, ids, ids + 1, deterministic=True)['params']

  @staticmethod
  def tokens(batch) -> int:
    return int(batch['attention_mask'].sum())

  def logits(self, params, batch, *, dropout_rng=None):
    deterministic = dropout_rng is None
    return self.model.apply(
        {'params': params}, batch['input_ids'], batch['token_type_ids'], batch['attention_mask'],
        deterministic=deterministic, rngs=None if deterministic else {'dropout': dropout_rng})


class ClassificationTask(_SequenceTask):
  """Cross-entropy over the classes `label_names` on the logits of a sequence classifier."""

  METRICS = ('loss', 'accuracy', 'precision', 'recall', 'f1', 'matthews')

  def __init__(self, model, label_names, label_smoothing: float = 0.0):
    super().__init__(model)
    self.label_names = list(label_names)
    self.num_labels = len(self.label_names)
    self.label_smoothing = label_smoothing

  def _sums(self, logits, batch):
    """(summed training loss, sums of NLL, examples and correct predictions)."""
    weight = batch['weight']
    objective, nll = losses.cross_entropy(logits, batch['label'], self.label_smoothing)
    correct = (jnp.argmax(logits, -1) == batch['label']) * weight
    return jnp.sum(objective * weight), {
        'loss': jnp.sum(nll * weight), 'weight': jnp.sum(weight), 'correct': jnp.sum(correct)}

  def loss(self, params, batch, dropout_rng):
    """(summed training loss, sums) for a batch; `sums` holds the NLL, weight and correct-prediction
    counts. With label smoothing the training loss is the smoothed one; sums keep the NLL."""
    return self._sums(self.logits(params, batch, dropout_rng=dropout_rng), batch)

  def eval_outputs(self, params, batch):
    """What evaluation needs from one batch: the sums, and each row's prediction, label and weight
    (0 for padding rows), so the host can compute metrics over the whole split."""
    logits = self.logits(params, batch)
    return {**self._sums(logits, batch)[1], 'prediction': jnp.argmax(logits, -1),
            'label': batch['label'], 'mask': batch['weight']}

  def predict(self, params, batch):
    return {'probabilities': jax.nn.softmax(self.logits(params, batch), -1)}

  def format_predictions(self, outputs, inputs) -> list[dict]:
    """{'label': the most probable class, 'probabilities': {class: p}} per input row."""
    return [{'label': self.label_names[int(np.argmax(p))],
             'probabilities': {n: round(float(q), 6) for n, q in zip(self.label_names, p)}}
            for p, _ in zip(outputs['probabilities'], inputs)]

  @staticmethod
  def train_metrics(sums: dict[str, float]) -> dict[str, float]:
    weight = max(sums['weight'], 1.0)
    return {'loss': sums['loss'] / weight, 'accuracy': sums['correct'] / weight}

  def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Loss, accuracy, precision, recall, F1 and Matthews correlation over a whole split
    (scikit-learn): the metrics GLUE reports (CoLA: Matthews; MRPC, QQP: F1 and accuracy).

    Binary tasks report the positive class (label 1), multi-class tasks the macro average.
    """
    from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
    labels, predictions, loss = _gather(outputs)
    binary = self.num_labels == 2
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predictions, average='binary' if binary else 'macro',
        labels=None if binary else list(range(self.num_labels)), zero_division=0)
    return {
        'loss': loss,
        'accuracy': float(skm.accuracy_score(labels, predictions)),
        'precision': float(precision),
        'recall': float(recall),
        'f1': float(f1),
        'matthews': float(skm.matthews_corrcoef(labels, predictions)) if len(labels) else 0.0,
    }


class RegressionTask(_SequenceTask):
  """A real-valued target from a one-output sequence classifier, fitted by mean squared error (HF's
  `problem_type='regression'`); evaluated by the correlations GLUE's STS-B reports."""

  METRICS = ('loss', 'mse', 'pearson', 'spearman')

  def _scores(self, params, batch, dropout_rng=None):
    return self.logits(params, batch, dropout_rng=dropout_rng)[:, 0]

  @staticmethod
  def _sums(scores, batch):
    weight = batch['weight']
    squared = jnp.sum(jnp.square(scores - batch['label']) * weight)
    return squared, {'loss': squared, 'weight': jnp.sum(weight)}

  def loss(self, params, batch, dropout_rng):
    return self._sums(self._scores(params, batch, dropout_rng), batch)

  def eval_outputs(self, params, batch):
    scores = self._scores(params, batch)
    return {**self._sums(scores, batch)[1], 'prediction': scores, 'label': batch['label'],
            'mask': batch['weight']}

  def predict(self, params, batch):
    return {'score': self._scores(params, batch)}

  @staticmethod
  def format_predictions(outputs, inputs) -> list[dict]:
    return [{'score': round(float(s), 6)} for s, _ in zip(outputs['score'], inputs)]

  @staticmethod
  def train_metrics(sums: dict[str, float]) -> dict[str, float]:
    return {'loss': sums['loss'] / max(sums['weight'], 1.0)}

  @staticmethod
  def summarize(outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Mean squared error and the Pearson and Spearman correlations of predictions and targets."""
    from scipy import stats  # pylint: disable=g-import-not-at-top
    labels, predictions, loss = _gather(outputs)
    constant = len(labels) < 2 or np.ptp(predictions) == 0 or np.ptp(labels) == 0
    return {
        'loss': loss,
        'mse': loss,
        # Correlations of a constant are undefined; 0 is what they are worth as a model.
        'pearson': 0.0 if constant else float(stats.pearsonr(predictions, labels).statistic),
        'spearman': 0.0 if constant else float(stats.spearmanr(predictions, labels).statistic),
    }


def _gather(outputs):
  """(labels, predictions) of the real rows of a split, and its mean loss."""
  real = np.concatenate([o['mask'] for o in outputs]) > 0
  labels = np.concatenate([o['label'] for o in outputs])[real]
  predictions = np.concatenate([o['prediction'] for o in outputs])[real]
  weight = sum(float(o['weight']) for o in outputs)
  loss = sum(float(o['loss']) for o in outputs) / max(weight, 1.0)
  return labels, predictions, loss
