"""Cross-entropy with label smoothing (Szegedy et al. 2016), shared by every task.

With smoothing eps the target puts 1 - eps on the label and eps spread evenly over all K classes (as
`optax.smooth_labels`), so the loss is (1 - eps) * NLL + eps * mean_k(-log p_k). Models are scored by
the plain NLL (its perplexity is the one the literature reports); only the gradient sees smoothing.
"""

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """logits [..., K], integer labels [...] -> (training loss, NLL), each [...], in float32."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
  if not label_smoothing:
    return nll, nll
  return (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(-1), nll
