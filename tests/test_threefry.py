"""llmjax.threefry: the unrolled CPU lowering gives Threefry's known answers and JAX's own bits."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import random as jax_random

import llmjax  # noqa: F401  (registers the lowering)

# tests/conftest.py compiles with JAX's lowering elsewhere; these tests are of llmjax's.
pytestmark = pytest.mark.usefixtures('llmjax_threefry')

# Random123's known-answer vectors for threefry2x32_20 (key, counter -> output), as in JAX's tests.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6b200159, 0x99ba4efe)),
    ((0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff), (0x1cb996fc, 0xbb002be7)),
    ((0x13198a2e, 0x03707344), (0x243f6a88, 0x85a308d3), (0xc4923a9c, 0x483df7a0)),
]

# Dropout-like draws whose bits JAX's own (rolled) CPU lowering computes in a fresh process.
_DRAWS = """
import jax, numpy as np
key = jax.random.fold_in(jax.random.key(7), 3)
print(np.asarray(jax.jit(lambda k: jax.random.bits(k, (3, 5, 7)))(key)).tobytes().hex())
print(np.asarray(jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (64, 33)))(key)).tobytes().hex())
"""


def _draws(key):
  return [np.asarray(jax.jit(lambda k: jax.random.bits(k, (3, 5, 7)))(key)).tobytes().hex(),
          np.asarray(jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (64, 33)))(key)).tobytes().hex()]


def test_known_answers():
  hash_fn = jax.jit(jax_random.threefry_2x32)
  for key, count, expected in KNOWN_ANSWERS:
    out = hash_fn(np.array(key, np.uint32), np.array(count, np.uint32))
    assert [int(v) for v in out] == list(expected)


def test_bits_equal_jax_rolled_lowering():
  reference = subprocess.run([sys.executable, '-c', _DRAWS], capture_output=True,
                             text=True, check=True, timeout=120).stdout.split()
  assert _draws(jax.random.fold_in(jax.random.key(7), 3)) == reference


def test_cpu_programs_have_no_threefry_loop():
  hlo = jax.jit(lambda k: jax.random.bits(k, (128,))).lower(jax.random.key(0)).compile().as_text()
  assert 'while' not in hlo
  assert jnp.asarray(jax.random.bits(jax.random.key(0), (4,))).dtype == jnp.uint32


def test_bits_are_the_same_when_sharded_over_8_devices():
  """Dropout masks of a batch split over a mesh are those of the whole batch (the 1-device and
  8-device losses agree, tests/test_parallelism.py, with these bits)."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ('data', 'tensor'))
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data', 'tensor'))
  draw = lambda key: jax.random.bernoulli(key, 0.9, (16, 64))
  key = jax.random.fold_in(jax.random.key(7), 3)
  sharded = jax.jit(draw, out_shardings=split)(key)
  assert sharded.sharding == split
  np.testing.assert_array_equal(np.asarray(sharded), np.asarray(jax.jit(draw)(key)))
