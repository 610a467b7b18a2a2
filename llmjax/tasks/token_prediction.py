"""What causal and masked language modelling share: cross-entropy over the vocabulary at weighted
positions, summed on the device, normalised by the number of predicted tokens on the host."""

import math

import jax.numpy as jnp
import numpy as np

from llmjax.tasks import losses


class TokenPredictionTask:
  """Subclasses set `label_key` (the batch key of the tokens to predict) and define `init`,
  `tokens` and `logits`; see `classification.py` for the interface every task offers. A subclass
  that need not compute the logits at every position overrides `_loss_sums`."""
  label_key: str

  def __init__(self, model, label_smoothing: float = 0.0):
    self.model = model
    self.label_smoothing = label_smoothing

  @staticmethod
  def _pack(token_sums, weights):
    """`losses.token_sums`' three sums -> (summed training loss, sums of NLL, predicted tokens
    and correct predictions)."""
    objective, nll, correct = token_sums
    return objective, {'loss': nll, 'weight': jnp.sum(weights), 'correct': correct}

  def _sums(self, logits, batch):
    """(summed training loss, sums) of the logits at every position."""
    return self._pack(losses.token_sums(logits, batch[self.label_key], batch['weights'],
                                        self.label_smoothing), batch['weights'])

  def _loss_sums(self, params, batch, dropout_rng=None):
    """(summed training loss, sums) of a batch."""
    return self._sums(self.logits(params, batch, dropout_rng=dropout_rng), batch)

  def loss(self, params, batch, dropout_rng):
    """(summed training loss, sums); `sums` holds the NLL, weight (predicted tokens) and correct
    predictions."""
    return self._loss_sums(params, batch, dropout_rng)

  def eval_outputs(self, params, batch):
    return self._loss_sums(params, batch)[1]

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
