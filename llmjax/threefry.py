"""Threefry on CPU lowered unrolled: the same random bits as JAX's, about ten times faster.

JAX's default PRNG is Threefry-2x32 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011): 20 rounds of add, rotate and xor over two 32-bit words. On GPU and TPU, JAX lowers it
unrolled; on CPU it lowers it as a `fori_loop` of 5 iterations of 4 rounds, which keeps the compiled
program small but makes every iteration read and write the whole array of counters. Dropout draws
one word per activation (BERT: hidden states and attention probabilities, every layer), so there
those passes cost a tenth of a training step; unrolled, XLA fuses the 20 rounds into one
vectorised loop (a [32, 12, 64, 64] mask: 16 ms -> ~1 ms of CPU).

`register()` lowers `threefry2x32_p` on CPU with the unrolled rounds below. The bits are the same
(the algorithm is the same; tests/test_threefry.py checks the Random123 known-answer vectors and
JAX's own rolled lowering), so every result, checkpoint and figure stays what it was. It changes
only how programs compiled after it run, and `llmjax/__init__.py` calls it on import.
"""

import numpy as np
from jax.extend import random as jax_random
from jax.interpreters import mlir

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)  # Threefry's key-schedule constant


def _rotate_left(x, d: int):
  return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(key1, key2, x1, x2):
  """Threefry-2x32 with 20 rounds of the counter words (x1, x2) under the key (key1, key2):
  uint32 arrays of one shape (or broadcastable keys) -> the two output words."""
  ks = (key1, key2, key1 ^ key2 ^ _PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):  # Five groups of four rounds, each followed by a key injection.
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, r) ^ x1
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def register() -> None:
  """Lowers Threefry unrolled on CPU from now on (idempotent). Compiling a step takes longer (the
  MiniLM step of benchmarks/throughput_vs_transformers.py case a: 12.9 s of CPU instead of 9.9 s)."""
  mlir.register_lowering(jax_random.threefry2x32_p,
                         mlir.lower_fun(threefry2x32, multiple_results=True), platform='cpu')
