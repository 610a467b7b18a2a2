"""Packed (inputs, targets) batches for encoder-decoders. T5 span corruption: T5's lengths, every
token of a document either kept or spelled out once in the targets, segments and decoder inputs
right, seeded and resumable, and the config path. Translation: every pair once, cut to its lengths,
empty sides dropped, and the WMT config on tfds mock data."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import load_config
from llmjax import config_lib, tasks
from llmjax.data import lm
from llmjax.errors import UserError
from llmjax.tasks import masking

EOS = 1
VOCAB = 300  # ids 2..257 are characters; 200 sentinels counted down from 299 would overlap them
SENTINELS = VOCAB - 1 - np.arange(lm.NUM_SENTINELS)  # 299 .. 200
INPUTS, TARGETS = 32, masking.span_corruption_lengths(32)[1]


def _encode(text):
  return [ord(c) for c in text]  # 97..122, below the sentinels


def _docs(n=40, seed=0):
  rng = np.random.default_rng(seed)
  return [''.join(chr(97 + k) for k in rng.integers(0, 26, rng.integers(2, 90))) for _ in range(n)]


def _data(docs, **kw):
  fmt = lm.span_corruption_format(inputs_length=INPUTS, sentinel_ids=SENTINELS, eos_id=EOS)
  args = dict(seq_len=INPUTS, batch_size=4, eval_batch_size=4, seed=0, example_format=fmt)
  args.update(kw)
  return lm.LMData({'train': docs, 'validation': docs}, _encode, **args)


def _pairs(batch):
  """Each packed pair of each row as (inputs, targets, decoder_inputs), with position checks."""
  out = []
  for row in range(batch['inputs'].shape[0]):
    source, target = batch['input_segment_ids'][row], batch['target_segment_ids'][row]
    assert sorted(set(source.tolist()) - {0}) == sorted(set(target.tolist()) - {0})
    for s in sorted(set(source.tolist()) - {0}):
      pair = []
      for side, seg, key, pos_key in ((0, source, 'inputs', 'input_positions'),
                                      (1, target, 'targets', 'target_positions')):
        where = seg == s
        assert np.all(np.diff(np.flatnonzero(where)) == 1)  # contiguous
        np.testing.assert_array_equal(batch[pos_key][row][where], np.arange(where.sum()))
        pair.append(batch[key][row][where])
      pair.append(batch['decoder_inputs'][row][target == s])
      out.append(tuple(pair))
  return out


def _uncorrupt(inputs, targets):
  """The original piece: each sentinel of the inputs replaced by the span after it in the targets."""
  assert inputs[-1] == EOS and targets[-1] == EOS
  spans, current = {}, None
  for t in targets[:-1]:
    if t in SENTINELS:
      current = spans.setdefault(int(t), [])
    else:
      current.append(int(t))
  out = []
  for t in inputs[:-1]:
    out.extend(spans.pop(int(t)) if t in SENTINELS else [int(t)])
  assert not spans  # every span of the targets had its sentinel in the inputs
  return out


def test_t5_lengths():
  assert masking.span_corruption_lengths(512) == (568, 114)


def test_eval_pairs_rebuild_every_document_once():
  docs = _docs()
  batches = list(_data(docs).eval_iter('validation'))
  for b in batches:
    assert b['inputs'].shape == (4, INPUTS) and b['targets'].shape == (4, TARGETS)
    np.testing.assert_array_equal(b['weights'], b['target_segment_ids'] > 0)
  pairs = [p for b in batches for p in _pairs(b)]
  pieces = [_uncorrupt(i, t) for i, t, _ in pairs]
  # Pieces are packed out of order: compare the multisets of raw pieces.
  raw = masking.span_corruption_lengths(INPUTS)[0]
  expected = [_encode(d)[s:s + raw] for d in docs for s in range(0, len(d), raw)]
  assert sorted(map(tuple, pieces)) == sorted(tuple(p) for p in expected if len(p) >= 2)
  for _, targets, decoder_inputs in pairs:
    np.testing.assert_array_equal(decoder_inputs, np.concatenate([[0], targets[:-1]]))
  noise = sum(len(t) - 1 for _, t, _ in pairs) - sum((np.isin(t, SENTINELS)).sum() for _, t, _ in pairs)
  assert 0.12 < noise / sum(map(len, pieces)) < 0.18  # about 15% of the tokens are noise


def test_train_is_seeded_resumable_and_noise_differs_between_epochs():
  docs = _docs(n=1)  # One document: every step repeats it, with its own spans.
  first = list(itertools.islice(_data(docs).train_iter(), 6))
  resumed = list(itertools.islice(_data(docs).train_iter(start_step=3), 3))
  for a, b in zip(first[3:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  inputs = {tuple(p[0]) for b in first for p in _pairs(b)}
  assert len(inputs) > 2


def test_too_many_spans_for_the_sentinels_is_a_user_error():
  with pytest.raises(UserError, match='noise spans per example but there are 3 sentinels'):
    lm.span_corruption_format(inputs_length=128, sentinel_ids=np.arange(3), eos_id=EOS)


def test_config_builds_data_and_task(fake_cache, tmp_path):
  config = load_config('t5_span', 'tiny')
  config.data.splits = dict(train='train[:80%]', validation='train[80%:]', test='train[80%:]')
  data = tasks.build_data(config, process_index=0, process_count=1)
  assert data.vocab_size == 256 + lm.NUM_SENTINELS <= config.model.vocab_size
  batch = next(data.train_iter())
  assert batch['inputs'].shape == (8, 32) and batch['targets'].shape == (8, TARGETS)
  task = tasks.task_for(config, data)
  assert task.tokens(batch) == int((batch['input_segment_ids'] > 0).sum()
                                   + (batch['target_segment_ids'] > 0).sum())
  for key, value, match in (('task.noise_density', 1.5, 'noise_density=1.5 must be in'),
                            ('task.mean_noise_span_length', 0.5, 'must be >= 1'),
                            ('model.name', 'gpt', "trains t5 models, not config.model.name='gpt'")):
    bad = load_config('t5_span', 'tiny')
    bad.data.splits = config.data.splits
    section, leaf = key.split('.')
    bad[section][leaf] = value
    with pytest.raises(UserError, match=match):
      tasks.task_for(bad, tasks.build_data(bad, process_index=0, process_count=1))


def _translation_data(pairs, **kw):
  fmt = lm.translation_format(inputs_length=12, targets_length=8, eos_id=EOS)
  args = dict(seq_len=12, batch_size=2, eval_batch_size=2, seed=0, example_format=fmt)
  args.update(kw)
  encode = lambda pair: (_encode(pair[0]), _encode(pair[1]))  # noqa: E731
  return lm.LMData({'train': pairs, 'validation': pairs}, encode, **args)


def test_translation_packs_every_pair_once_cut_to_its_lengths():
  rng = np.random.default_rng(0)
  word = lambda n: ''.join(chr(97 + k) for k in rng.integers(0, 26, n))  # noqa: E731
  pairs = [(word(rng.integers(1, 15)), word(rng.integers(1, 10))) for _ in range(30)]
  pairs += [('', 'dropped'), ('dropped', '')]
  batches = list(_translation_data(pairs).eval_iter('validation'))
  got = [(tuple(i), tuple(t)) for b in batches for i, t, _ in _pairs(b)]
  expected = [(tuple(_encode(s)[:11] + [EOS]), tuple(_encode(t)[:7] + [EOS])) for s, t in pairs[:30]]
  assert sorted(got) == sorted(expected)
  for b in batches:
    for _, targets, decoder_inputs in _pairs(b):
      np.testing.assert_array_equal(decoder_inputs, np.concatenate([[0], targets[:-1]]))


def test_wmt_config_on_mock_data(tmp_path, monkeypatch):
  monkeypatch.setenv('LLMJAX_CACHE', str(tmp_path))
  config = load_config('transformer_wmt', 'tiny')
  config.tokenizer.vocab = 'spm:wmt14_translate/de-en:128'  # 40 mock pairs hold ~220 pieces
  with tfds.testing.mock_data(num_examples=40):
    data = tasks.build_data(config, process_index=0, process_count=1)
    batch = next(data.train_iter())
  # One SentencePiece model for both languages, trained on both.
  assert (tmp_path / 'spm' / 'wmt14_translate_de-en_en_de-128-unigram.model').exists()
  assert batch['inputs'].shape == batch['targets'].shape == (8, 32)
  assert tasks.task_for(config, data).tokens(batch) > 0
  for key, value, match in (('data.text_keys', ('en',), 'must name the source and target'),
                            ('data.target_max_len', 64, 'exceeds model.max_position_embeddings')):
    bad = load_config('transformer_wmt', 'tiny')
    section, leaf = key.split('.')
    bad[section][leaf] = value
    with pytest.raises(UserError, match=match):
      config_lib.validate(bad, num_devices=8)
