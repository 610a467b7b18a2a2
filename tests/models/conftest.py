"""Fixtures shared by the model tests."""

import jax
import pytest


@pytest.fixture
def cudnn_stand_in(monkeypatch):
  """A stand-in NVIDIA GPU for `attention_kernel='cudnn_flash'` on a CPU: the backend reads 'gpu' and
  jax.nn.dot_product_attention runs its cuDNN calls through XLA. Returns the list of calls made, each
  {'implementation', 'queries', 'is_causal', 'bias', 'mask'} (the last two: whether one was given)."""
  calls = []
  dot_product_attention = jax.nn.dot_product_attention

  def through_xla(q, *args, implementation, **kwargs):
    calls.append({'implementation': implementation, 'queries': q.shape[1],
                  'is_causal': kwargs['is_causal'], 'bias': kwargs['bias'] is not None,
                  'mask': kwargs['mask'] is not None})
    return dot_product_attention(q, *args, implementation='xla', **kwargs)

  monkeypatch.setattr(jax.nn, 'dot_product_attention', through_xla)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  return calls
