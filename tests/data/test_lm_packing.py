"""Packed next-token batches: every target once, segments and positions right, resumable, and the
same rows however many processes share the evaluation."""

import itertools

import numpy as np
import pytest

from llmjax.data import lm

EOS = 1


def _encode(text):
  return [ord(c) for c in text] + [EOS]


def _docs(n=60, seed=0):
  rng = np.random.default_rng(seed)
  return [''.join(chr(97 + k) for k in rng.integers(0, 26, rng.integers(1, 40))) for _ in range(n)]


def _data(docs, **kw):
  args = dict(seq_len=16, batch_size=4, eval_batch_size=4, seed=0)
  args.update(kw)
  return lm.LMData({'train': docs, 'validation': docs}, _encode, **args)


def _segments(batch):
  """Each packed segment of each row as (inputs, targets, positions)."""
  out = []
  for row in range(batch['inputs'].shape[0]):
    seg = batch['segment_ids'][row]
    for s in sorted(set(seg.tolist()) - {0}):
      where = seg == s
      assert np.all(np.diff(np.flatnonzero(where)) == 1)  # A segment is contiguous.
      out.append(tuple(batch[k][row][where].tolist() for k in ('inputs', 'targets', 'positions')))
  return out


def test_split_document_predicts_every_next_token_once():
  ids = np.arange(10)
  pieces = lm.split_document(ids, 4)
  assert [p['inputs'].tolist() for p in pieces] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
  assert [p['targets'].tolist() for p in pieces] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
  assert lm.split_document(np.arange(1), 4) == []


def test_eval_covers_every_document_once_with_restarting_positions():
  docs = _docs()
  data = _data(docs)
  batches = list(data.eval_iter('validation'))
  assert all(b['inputs'].shape == (4, 16) for b in batches)
  segments = [s for b in batches for s in _segments(b)]
  for inputs, targets, positions in segments:
    assert positions == list(range(len(inputs)))
    assert inputs[1:] == targets[:-1]
  expected = sorted(tuple(p['inputs'].tolist()) for d in docs
                    for p in lm.split_document(np.array(_encode(d)), 16))
  assert sorted(tuple(s[0]) for s in segments) == expected
  for b in batches:
    np.testing.assert_array_equal(b['weights'], (b['segment_ids'] > 0).astype(np.float32))


def test_two_processes_split_the_same_eval_rows():
  docs = _docs()
  whole = list(_data(docs).eval_iter('validation'))
  halves = [list(_data(docs, process_index=i, process_count=2).eval_iter('validation'))
            for i in range(2)]
  assert len(halves[0]) == len(halves[1]) == len(whole)
  for w, a, b in zip(whole, *halves):
    for k in w:
      np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), w[k])


def test_train_order_is_seeded_and_resumable():
  docs = _docs()
  first = list(itertools.islice(_data(docs).train_iter(), 8))
  again = list(itertools.islice(_data(docs).train_iter(), 8))
  resumed = list(itertools.islice(_data(docs).train_iter(start_step=5), 3))
  other = list(itertools.islice(_data(docs, seed=1).train_iter(), 8))
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  for a, b in zip(first[5:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert any(not np.array_equal(a['inputs'], b['inputs']) for a, b in zip(first, other))
  # Rows are well filled: first-fit leaves little padding with short documents.
  assert np.mean([b['weights'].mean() for b in first]) > 0.7


def test_train_shards_documents_between_processes():
  docs = [f'doc{i:03d}' for i in range(40)]
  seen = []
  for i in range(2):
    batch = next(_data(docs, batch_size=4, process_index=i, process_count=2).train_iter())
    assert batch['inputs'].shape == (2, 16)
    seen.append({''.join(chr(c) for c in s[0][:6]) for s in _segments(batch)})
  assert not seen[0] & seen[1]


def test_batch_not_divisible_by_processes_is_a_user_error():
  with pytest.raises(Exception, match='not divisible by the 3 processes'):
    _data(_docs(), batch_size=4, process_count=3)
