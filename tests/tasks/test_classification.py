"""Classification and regression metrics over a split: padding rows never count, and the figures
are scikit-learn's and scipy's on the real rows."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from llmjax.tasks.classification import ClassificationTask, RegressionTask


def batches(labels, predictions, pad, **extra):
  """Two eval batches of the rows, each padded with `pad` weight-0 rows of garbage."""
  out = []
  for part in np.array_split(np.arange(len(labels)), 2):
    n = len(part)
    out.append({
        'label': np.concatenate([labels[part], np.full(pad, labels[0])]),
        'prediction': np.concatenate([predictions[part], np.full(pad, predictions[0])]),
        'mask': np.concatenate([np.ones(n), np.zeros(pad)]),
        'weight': float(n), 'loss': 0.5 * n, **extra})
  return out


def test_multiclass_metrics_are_sklearns_macro_averages():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, 200)
  predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 5, 200))
  task = ClassificationTask(None, ['a', 'b', 'c', 'd', 'e'])
  got = task.summarize(batches(labels, predictions, pad=7))
  p, r, f1, _ = skm.precision_recall_fscore_support(labels, predictions, average='macro')
  assert got == pytest.approx({'loss': 0.5, 'accuracy': skm.accuracy_score(labels, predictions),
                               'precision': p, 'recall': r, 'f1': f1,
                               'matthews': skm.matthews_corrcoef(labels, predictions)})


def test_binary_metrics_report_the_positive_class_and_matthews():
  labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
  predictions = np.array([1, 0, 1, 0, 0, 1, 0, 1])
  got = ClassificationTask(None, ['no', 'yes']).summarize(batches(labels, predictions, pad=3))
  # tp 3, fn 1, fp 1, tn 3.
  assert got['precision'] == pytest.approx(0.75) and got['recall'] == pytest.approx(0.75)
  assert got['matthews'] == pytest.approx((3 * 3 - 1 * 1) / 16)


def test_regression_metrics_are_scipys_correlations():
  rng = np.random.default_rng(1)
  labels = rng.normal(size=100).astype(np.float32)
  predictions = (labels + rng.normal(scale=0.5, size=100)).astype(np.float32)
  got = RegressionTask(None).summarize(batches(labels, predictions, pad=5))
  assert got['pearson'] == pytest.approx(stats.pearsonr(predictions, labels).statistic, rel=1e-6)
  assert got['spearman'] == pytest.approx(stats.spearmanr(predictions, labels).statistic, rel=1e-6)
  assert got['mse'] == got['loss'] == pytest.approx(0.5)
  # A constant prediction has no correlation: 0, not NaN.
  flat = RegressionTask(None).summarize(batches(labels, np.zeros_like(labels), pad=1))
  assert flat['pearson'] == flat['spearman'] == 0.0
