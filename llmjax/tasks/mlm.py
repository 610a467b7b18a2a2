"""Masked language modelling (Devlin et al., 2019): predict the original token at masked positions.

Batches come from `llmjax.data.lm.build_masked` (input_ids with the masks applied, labels,
token_type_ids, segment_ids, positions, weights; see there). The encoder attends within a segment and
restarts positions per segment, so each packed `[CLS] piece [SEP]` is encoded as if alone. The loss
is the summed cross-entropy at the weighted (masked) positions; the host divides by the number of
masked tokens and reports perplexity and masked-token accuracy. See `classification.py` for the
interface every task offers.

Only ~15% of the positions carry a loss, yet at BERT's small sizes the prediction head (a dense
layer and the tied decoder over the whole vocabulary) costs more than the encoder. With
`max_predictions_per_seq` (config `task.max_predictions_per_seq`) P > 0 the head runs only at the
masked positions, gathered into P slots per row as the original BERT's `masked_lm_positions`. P is
static (shapes are), while `llmjax.tasks.masking` masks each token independently, so a row may
hold more: a batch with such a row runs the head at every position instead. Nothing is ever
dropped; the sums are those of the dense head either way. P = -1 derives P from the row length
and `mask_rate` (`derive_max_predictions`) so that a row exceeds it about once in 10,000.
"""

import math

import jax
import jax.numpy as jnp

from llmjax.tasks import losses
from llmjax.tasks.token_prediction import TokenPredictionTask

# The chance that a row masks more than the derived P tokens (masking each independently).
_OVERFLOW = 1e-4


def derive_max_predictions(length: int, rate: float) -> int:
  """The smallest P such that a row of `length` tokens, each masked with probability `rate`, holds
  more than P masked tokens with probability at most 1e-4 (the binomial tail); [CLS] and [SEP] are
  never masked. Whole-word masking draws per word, so its rows exceed P more often."""
  n = max(length - 2, 1)
  tail = 1.0
  for p in range(n + 1):
    # P(X = p) of Binomial(n, rate), in logs so that n up to thousands does not overflow.
    log_pmf = (math.lgamma(n + 1) - math.lgamma(p + 1) - math.lgamma(n - p + 1)
               + p * math.log(max(rate, 1e-12)) + (n - p) * math.log1p(-min(rate, 1 - 1e-12)))
    tail -= math.exp(log_pmf)
    if tail <= _OVERFLOW:
      return max(p, 1)
  return n


class MaskedLMTask(TokenPredictionTask):
  """Cross-entropy of the original tokens at the masked positions of a masked-LM encoder."""

  label_key = 'labels'

  def __init__(self, model, label_smoothing: float = 0.0, *, max_predictions_per_seq: int = 0,
               mask_rate: float = 0.15):
    super().__init__(model, label_smoothing)
    self.max_predictions_per_seq = max_predictions_per_seq
    self.mask_rate = mask_rate

  def init(self, rng, length: int):
    ids = jnp.zeros((1, length), jnp.int32)
    return self.model.init(rng, ids, ids, ids + 1, deterministic=True)['params']

  @staticmethod
  def tokens(batch) -> int:
    """Real tokens processed (every non-padding position is encoded, not only the masked ones)."""
    return int((batch['segment_ids'] > 0).sum())

  def logits(self, params, batch, *, dropout_rng=None):
    return self._model(params, batch, dropout_rng)

  def _model(self, params, batch, dropout_rng, method='__call__'):
    """The model's logits [B, L, vocab] (or with method='encode', final states [B, L, H])."""
    deterministic = dropout_rng is None
    segment_ids = batch['segment_ids']
    return self.model.apply(
        {'params': params}, batch['input_ids'], batch['token_type_ids'], segment_ids > 0,
        segment_ids=segment_ids, positions=batch['positions'], deterministic=deterministic,
        method=method, rngs=None if deterministic else {'dropout': dropout_rng})

  def _loss_sums(self, params, batch, dropout_rng=None):
    if not self.max_predictions_per_seq:
      return super()._loss_sums(params, batch, dropout_rng)
    x = self._model(params, batch, dropout_rng, method='encode')  # [B, L, H]
    labels, weights = batch[self.label_key], batch['weights']
    length = labels.shape[1]
    size = self.max_predictions_per_seq
    if size < 0:
      size = derive_max_predictions(length, self.mask_rate)
    size = min(size, length)
    # Each row's weighted positions first, in order (a stable sort): the slots past a row's count
    # hold unweighted positions, whose weight 0 leaves them out of every sum.
    order = jnp.argsort(weights <= 0, axis=1, stable=True)[:, :size]  # [B, P]

    def head_sums(params, x, labels, weights):
      logits = self.model.apply({'params': params}, x, method='predict')
      return losses.token_sums(logits, labels, weights, self.label_smoothing)

    def gathered(params, x, labels, weights):
      take = lambda a: jnp.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), 1)
      return head_sums(params, take(x), take(labels), take(weights))

    # The dense fallback keeps only its inputs for the backward pass (jax.checkpoint): a cond
    # materialises the untaken branch's residuals as zeros, and these would be logits [B, L, vocab].
    sums = jax.lax.cond(jnp.max(jnp.sum(weights > 0, axis=1)) <= size, gathered,
                        jax.checkpoint(head_sums), params, x, labels, weights)
    return self._pack(sums, weights)
