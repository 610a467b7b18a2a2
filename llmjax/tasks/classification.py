"""Sequence classification: batch -> loss, predictions and the metrics the literature reports.

The network only computes logits; a task object owns the objective (T5X's split between module and
model), and the training loop knows nothing else about it. Every task offers:

  init(rng, length)                  -> params (boxed with logical axis names)
  loss(params, batch, dropout_rng)   -> (summed loss, sums), on device; sums['weight'] counts examples
  train_metrics(sums)                -> {name: value}, on the host, from sums added over steps
  eval_outputs(params, batch)        -> sums and per-row arrays of one batch, on device
  summarize(outputs)                 -> {name: value} over a whole split, on the host
  tokens(batch)                      -> real (non-padding) tokens in a host batch, for throughput

Losses leave the device as sums with a weight (the number of real examples) so that padded rows count
for nothing and the host can normalise across batches and processes.
"""

import jax.numpy as jnp
import numpy as np
from sklearn import metrics as skm

from llmjax.tasks import losses


class ClassificationTask:
  """Cross-entropy over `num_labels` classes on the logits of a sequence classifier."""

  def __init__(self, model, num_labels: int, label_smoothing: float = 0.0):
    self.model = model
    self.num_labels = num_labels
    self.label_smoothing = label_smoothing

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

  @staticmethod
  def train_metrics(sums: dict[str, float]) -> dict[str, float]:
    weight = max(sums['weight'], 1.0)
    return {'loss': sums['loss'] / weight, 'accuracy': sums['correct'] / weight}

  def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Loss, accuracy, precision, recall and F1 over a whole split (scikit-learn).

    Binary tasks report the positive class (label 1), multi-class tasks the macro average.
    """
    real = np.concatenate([o['mask'] for o in outputs]) > 0
    labels = np.concatenate([o['label'] for o in outputs])[real]
    predictions = np.concatenate([o['prediction'] for o in outputs])[real]
    weight = sum(float(o['weight']) for o in outputs)
    loss = sum(float(o['loss']) for o in outputs) / max(weight, 1.0)
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
    }
