"""What causal and masked language modelling share: cross-entropy over the vocabulary at weighted
positions, summed on the device, normalised by the number of predicted tokens on the host."""

import math

import jax.numpy as jnp
import numpy as np

from llmjax.tasks import losses


class TokenPredictionTask:
  """Subclasses set `label_key` (the batch key of the tokens to predict) and define `init`,
  `tokens` and `logits`; see `classification.py` for the interface every task offers."""
  label_key: str

  def __init__(self, model, label_smoothing: float = 0.0):
    self.model = model
    self.label_smoothing = label_smoothing

  def _sums(self, logits, batch):
    """(summed training loss, sums of NLL, predicted tokens and correct predictions)."""
    weights = batch['weights']
    labels = batch[self.label_key]
    objective, nll = losses.cross_entropy(logits, labels, self.label_smoothing)
    correct = (jnp.argmax(logits, -1) == labels) * weights
    return jnp.sum(objective * weights), {
        'loss': jnp.sum(nll * weights), 'weight': jnp.sum(weights), 'correct': jnp.sum(correct)}

  def loss(self, params, batch, dropout_rng):
    """(summed training loss, sums); `sums` holds the NLL, weight (predicted tokens) and correct
    predictions."""
    return self._sums(self.logits(params, batch, dropout_rng=dropout_rng), batch)

  def eval_outputs(self, params, batch):
    return self._sums(self.logits(params, batch), batch)[1]

  @staticmethod
  def train_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Loss per predicted token, its perplexity, and the accuracy of the predictions."""
    weight = max(sums['weight'], 1.0)
    loss = sums['loss'] / weight
    return {'loss': loss, 'perplexity': math.exp(min(loss, 50.0)),
            'accuracy': sums['correct'] / weight}

  def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """`train_metrics` over a whole split."""
    return self.train_metrics({k: sum(float(o[k]) for o in outputs)
                               for k in ('loss', 'weight', 'correct')})
