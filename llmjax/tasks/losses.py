"""Cross-entropy with label smoothing (Szegedy et al. 2016), shared by every task.

With smoothing eps the target puts 1 - eps on the label and eps spread evenly over all K classes (as
`optax.smooth_labels`), so the loss is (1 - eps) * NLL + eps * mean_k(-log p_k). Models are scored by
the plain NLL (its perplexity is the one the literature reports); only the gradient sees smoothing.
"""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """logits [..., K], integer labels [...] -> (training loss, NLL), each [...], in float32."""
  logits = logits.astype(jnp.float32)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if not label_smoothing:
    return nll, nll
  uniform = -jax.nn.log_softmax(logits, axis=-1).mean(-1)
  return (1.0 - label_smoothing) * nll + label_smoothing * uniform, nll
