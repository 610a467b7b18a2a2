"""Cross-entropy with label smoothing (Szegedy et al. 2016), shared by every task, and its sums over
weighted positions, whole or a chunk of positions at a time.

With smoothing eps the target puts 1 - eps on the label and eps spread evenly over all K classes (as
`optax.smooth_labels`), so the loss is (1 - eps) * NLL + eps * mean_k(-log p_k). Models are scored by
the plain NLL (its perplexity is the one the literature reports); only the gradient sees smoothing.

`chunked_cross_entropy` computes the same sums as `token_sums` of a language model's logits without
ever holding the logits of more than one chunk of positions, forward or backward: for a vocabulary
of 50,257, the logits of 16 x 256 tokens alone take 823 MB in float32, and their gradient as much.
"""

from collections.abc import Callable
import functools

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.models import layers


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """logits [..., K], integer labels [...] -> (training loss, NLL), each [...], in float32."""
  return _cross_entropy(logits.astype(jnp.float32), labels, float(label_smoothing),
                        _label_term_by_select())


def _label_term_by_select() -> bool:
  """Whether the gradient takes the label's term by a select (GPU, TPU) or a scatter (XLA:CPU), by
  the platform of the mesh being traced for (`layers.traced_platform`)."""
  return layers.traced_platform() != 'cpu'


# The gradient is written out, softmax minus the target, and the target's term added in place at the
# labels: one elementwise pass over the logits. Differentiated through `take_along_axis`, the label's
# term became a scatter into a zeroed [..., K] array added to the softmax's gradient, two more passes
# over 823 MB for GPT-2's vocabulary at 16 x 256 tokens. The forward pass keeps exp(z - max) for the
# backward's softmax: XLA:CPU sums it at a third of the cost of a sum with the exponential inside.
# On a GPU or TPU (`select`) the label's term is a select against an iota instead, so that the
# whole gradient is one elementwise pass that XLA fuses with its conversion to the head's dtype
# (bfloat16): a scatter cannot fuse, and the float32 gradient it updates is written and read again
# (GPT-2 small at bfloat16, 32 x 1,024, compiled here for an H100: 6.4 GB less for temporaries, one
# pass over 3.3 GB of logits instead of three over 6.6). On XLA:CPU the select made case c's step
# 2-4% slower than the scatter (an A/B alternating in one process, 12 steps each).
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _cross_entropy(z, labels, label_smoothing, select):
  return _cross_entropy_fwd(z, labels, label_smoothing, select)[0]


def _cross_entropy_fwd(z, labels, label_smoothing, select):
  del select  # The forward pass is the same.
  top = jnp.max(z, -1)
  e = jnp.exp(z - top[..., None])
  total = jnp.sum(e, -1)
  lse = top + jnp.log(total)
  nll = lse - jnp.take_along_axis(z, labels[..., None].astype(jnp.int32), -1)[..., 0]
  objective = nll
  if label_smoothing:
    # -mean_k log p_k = lse - mean_k z_k.
    objective = (1.0 - label_smoothing) * nll + label_smoothing * (lse - z.mean(-1))
  return (objective, nll), (e, total, labels)


def _cross_entropy_bwd(label_smoothing, select, residuals, cotangents):
  e, total, labels = residuals
  g_objective, g_nll = cotangents
  # d objective / dz = p - (1 - eps) onehot - eps / K;  d nll / dz = p - onehot.
  dz = ((g_objective + g_nll) / total)[..., None] * e
  if label_smoothing:
    dz = dz - (label_smoothing / e.shape[-1]) * g_objective[..., None]
  label_term = (1.0 - label_smoothing) * g_objective + g_nll
  if select:
    is_label = jax.lax.broadcasted_iota(labels.dtype, e.shape, e.ndim - 1) == labels[..., None]
    dz = dz - jnp.where(is_label, label_term[..., None], 0.0)
  else:
    dz = dz.reshape(-1, e.shape[-1])
    dz = dz.at[jnp.arange(dz.shape[0]), labels.reshape(-1)].add(-label_term.reshape(-1))
  return dz.reshape(e.shape), np.zeros(labels.shape, jax.dtypes.float0)


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def token_sums(logits: jax.Array, labels: jax.Array, weights: jax.Array,
               label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """logits [..., K], labels and weights [...] -> (summed training loss, summed NLL, summed weight
  of the correct argmax predictions), float32 scalars.

  A prediction is correct when the label's logit is the largest. That is argmax == label but for
  an exact tie with another class (counted correct here), and it costs nothing: the softmax takes
  the same max. XLA's argmax reduces (value, index) pairs, and over GPT-2's 50,257 classes it took
  as long as the loss and its gradient together.
  """
  objective, nll = cross_entropy(logits, labels, label_smoothing)
  logits = logits.astype(jnp.float32)
  label_logit = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), -1)[..., 0]
  correct = (label_logit >= jnp.max(logits, -1)) * weights
  return jnp.sum(objective * weights), jnp.sum(nll * weights), jnp.sum(correct)


def chunked_cross_entropy(project: Callable[[jax.Array, jax.Array], jax.Array], head: jax.Array,
                          x: jax.Array, labels: jax.Array, weights: jax.Array, *,
                          chunk_tokens: int, label_smoothing: float = 0.0
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`token_sums` of the logits project(head, x), computed a chunk of positions at a time.

  Args:
    project: (head, states [B, c, E]) -> float32 logits [B, c, K]; a pure function.
    head: the projection's weight (e.g. a tied embedding [K, E]); differentiated.
    x: states [B, L, E]; differentiated.
    labels, weights: [B, L]; data, never differentiated.
    chunk_tokens: about this many tokens per chunk: every row's next max(1, chunk_tokens // B)
      positions, so a chunk keeps the batch axis and its sharding.
    label_smoothing: as `cross_entropy`.

  Returns:
    (summed training loss, summed NLL, summed weight of correct predictions); only the first
    carries a gradient (the others are metrics).
  """
  rows, length = labels.shape
  size = max(1, min(length, chunk_tokens // rows))
  count = -(-length // size)
  pad = count * size - length

  def chunks(a):  # [B, L, ...] -> [count, B, size, ...]; padding positions have weight 0.
    a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    return jnp.moveaxis(a.reshape((rows, count, size) + a.shape[2:]), 1, 0)

  def chunk_sums(h, xc, yc, wc):
    objective, nll, correct = token_sums(project(h, xc), yc, wc, label_smoothing)
    return objective, (nll, correct)

  zero = lambda: jnp.zeros((), jnp.float32)

  @jax.custom_vjp
  def sums(head, x, labels, weights):
    def body(total, chunk):
      objective, metrics = chunk_sums(head, *chunk)
      return jax.tree.map(jnp.add, total, (objective, *metrics)), None
    return jax.lax.scan(body, (zero(),) * 3, (chunks(x), chunks(labels), chunks(weights)))[0]

  # Each chunk's gradient is computed in the forward pass, right after its logits, as Liger's fused
  # linear cross-entropy does: the chunk's logits die at once, nothing recomputes them (a scan
  # under jax.checkpoint would, a third more head FLOPs), and the residuals are only d x [B, L, E]
  # and d head, scaled by the incoming cotangent in the backward pass.
  def sums_fwd(head, x, labels, weights):
    def body(carry, chunk):
      total, d_head = carry
      xc, yc, wc = chunk
      objective, vjp, metrics = jax.vjp(lambda h, xc: chunk_sums(h, xc, yc, wc), head, xc,
                                        has_aux=True)
      dh, dx = vjp(jnp.ones_like(objective))
      total = jax.tree.map(jnp.add, total, (objective, *metrics))
      return (total, d_head + dh.astype(jnp.float32)), dx

    (total, d_head), dx = jax.lax.scan(
        body, ((zero(),) * 3, jnp.zeros(head.shape, jnp.float32)),
        (chunks(x), chunks(labels), chunks(weights)))
    dx = jnp.moveaxis(dx, 0, 1).reshape((rows, count * size) + x.shape[2:])[:, :length]
    return total, (d_head.astype(head.dtype), dx)

  def sums_bwd(residuals, cotangents):
    d_head, dx = residuals
    g = cotangents[0]  # The NLL and the correct count leave under stop_gradient.
    # Labels and weights are data (the weights enter under stop_gradient): zero cotangents.
    return ((g * d_head).astype(d_head.dtype), (g * dx).astype(dx.dtype),
            np.zeros(labels.shape, jax.dtypes.float0), jnp.zeros(weights.shape, weights.dtype))

  sums.defvjp(sums_fwd, sums_bwd)
  objective, nll, correct = sums(head, x, labels, jax.lax.stop_gradient(weights))
  return objective, jax.lax.stop_gradient(nll), jax.lax.stop_gradient(correct)
