"""Masked-LM pre-training: `[CLS] piece [SEP]` packing, masks that are seeded and resumable, the loss
and metrics of `MaskedLMTask`, and the bert_mlm config's data and task on the fake corpus."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fakes
from conftest import load_config
from llmjax import models, tasks
from llmjax.data import lm
from llmjax.errors import UserError
from llmjax.models import bert
from llmjax.tasks.mlm import MaskedLMTask

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = (PAD, UNK, CLS, SEP, MASK)
VOCAB = 40  # letters a..z are 10..35; 36..39 are '##' continuation pieces for whole-word tests
KEYS = {'input_ids', 'token_type_ids', 'segment_ids', 'positions', 'labels', 'weights'}


def _encode(text):
  return [10 + ord(c) - 97 for c in text]


def _docs(n=40, seed=0):
  rng = np.random.default_rng(seed)
  return [''.join(chr(97 + k) for k in rng.integers(0, 26, rng.integers(0, 30))) for _ in range(n)]


def _format(**kw):
  return lm.masked_lm_format(cls_id=CLS, sep_id=SEP, mask_id=MASK, vocab_size=VOCAB,
                             special_ids=SPECIAL, **kw)


def _data(docs, fmt=None, **kw):
  args = dict(seq_len=12, batch_size=4, eval_batch_size=4, seed=0, vocab_size=VOCAB,
              example_format=fmt or _format(rate=0.3))
  args.update(kw)
  return lm.LMData({'train': docs, 'validation': docs}, _encode, **args)


def _pieces(batch):
  """Each packed segment of each row as (labels, positions)."""
  out = []
  for row in range(batch['labels'].shape[0]):
    seg = batch['segment_ids'][row]
    for s in sorted(set(seg.tolist()) - {0}):
      where = seg == s
      out.append((batch['labels'][row][where].tolist(), batch['positions'][row][where].tolist()))
  return out


def test_split_wraps_pieces_in_cls_and_sep():
  ids = np.arange(10, 23)
  pieces = lm.split_masked_lm_document(ids, 6, cls_id=CLS, sep_id=SEP)
  assert [len(p['input_ids']) for p in pieces] == [6, 6, 6, 3]
  assert all(p['input_ids'][0] == CLS and p['input_ids'][-1] == SEP for p in pieces)
  np.testing.assert_array_equal(np.concatenate([p['input_ids'][1:-1] for p in pieces]), ids)
  assert lm.split_masked_lm_document(np.zeros(0, np.int32), 6, cls_id=CLS, sep_id=SEP) == []


def test_eval_batches_hold_every_document_once_with_consistent_masks():
  docs = _docs()
  batches = list(_data(docs).eval_iter('validation'))
  expected = [[CLS] + p + [SEP] for d in docs if d for p in
              (_encode(d)[i:i + 10] for i in range(0, len(d), 10))]
  pieces = [p for b in batches for p in _pieces(b)]
  # First-fit packing may reorder pieces among the rows of a batch.
  assert sorted(labels for labels, _ in pieces) == sorted(expected)
  assert all(pos == list(range(len(pos))) for _, pos in pieces)  # positions restart per piece
  masked = changed = 0
  for b in batches:
    assert set(b) == KEYS and b['weights'].dtype == np.float32
    assert not b['token_type_ids'].any()
    chosen = b['weights'] > 0
    # Only real, non-special tokens are predicted; inputs differ from labels only there.
    assert not np.isin(b['labels'][chosen], SPECIAL).any() and (b['segment_ids'][chosen] > 0).all()
    assert (b['input_ids'][~chosen] == b['labels'][~chosen]).all()
    masked += chosen.sum()
    changed += (b['input_ids'] != b['labels']).sum()
  real = sum(len(labels) - 2 for labels, _ in pieces)
  assert 0.2 < masked / real < 0.4  # rate 0.3
  assert 0.75 * masked < changed <= masked  # 80% [MASK] + ~9% random (10% minus collisions)
  # Evaluation is deterministic.
  again = list(_data(docs).eval_iter('validation'))
  jax.tree.map(np.testing.assert_array_equal, again, batches)


def test_two_processes_split_the_same_masked_eval_rows():
  docs = _docs()
  whole = list(_data(docs).eval_iter('validation'))
  halves = [list(_data(docs, process_index=i, process_count=2).eval_iter('validation'))
            for i in range(2)]
  for b, lo, hi in zip(whole, *halves):
    for k in KEYS:
      np.testing.assert_array_equal(np.concatenate([lo[k], hi[k]]), b[k])


def test_train_masks_are_seeded_by_step_and_resumable():
  docs = _docs()
  first = list(zip(range(5), _data(docs).train_iter(0)))
  resumed = list(zip(range(2), _data(docs).train_iter(3)))
  for (_, a), (_, b) in zip(first[3:], resumed):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  other_seed = next(_data(docs, seed=1).train_iter(0))
  assert not np.array_equal(other_seed['weights'], first[0][1]['weights'])


def test_whole_word_masking_masks_words_together():
  continuation = np.zeros(VOCAB, bool)
  continuation[36:] = True
  # Every word is a letter followed by three continuation pieces.
  words = lambda text: [x for c in text for x in (10 + ord(c) - 97, 36, 37, 38)]
  data = lm.LMData({'validation': ['abcdefgh'] * 8}, words, seq_len=34, batch_size=4,
                   eval_batch_size=4, seed=0, vocab_size=VOCAB,
                   example_format=_format(rate=0.4, continuation=continuation))
  batch = next(data.eval_iter('validation'))
  for row_labels, row_weights in zip(batch['labels'], batch['weights']):
    starts = np.flatnonzero(row_labels < 36)[1:-1]  # skip [CLS]; [SEP] is not in a word
    for s in starts:
      if row_labels[s] in SPECIAL:
        continue
      assert len(set(row_weights[s:s + 4].tolist())) == 1
  assert batch['weights'].any()


def test_masked_lm_loss_and_metrics():
  config = bert.BertConfig(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2,
                           intermediate_size=32, max_position_embeddings=12)
  task = MaskedLMTask(bert.BertForMaskedLM(config))
  params = task.init(jax.random.key(0), 12)
  batch = next(_data(_docs()).train_iter(0))
  loss, sums = task.loss(params, batch, None)
  logits = jax.jit(task.logits)(params, batch)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch['labels'])
  np.testing.assert_allclose(loss, jnp.sum(nll * batch['weights']), rtol=1e-6)
  assert float(sums['weight']) == batch['weights'].sum()
  metrics = task.train_metrics({k: float(v) for k, v in sums.items()})
  assert metrics['perplexity'] == pytest.approx(math.exp(metrics['loss']))
  assert 0 <= metrics['accuracy'] <= 1
  # Uniform-ish predictions at init: the per-token loss is near log(vocab).
  assert abs(metrics['loss'] - math.log(VOCAB)) < 1.0
  outputs = [jax.device_get(task.eval_outputs(params, b)) for b in _data(_docs()).eval_iter(
      'validation')]
  assert set(task.summarize(outputs)) == {'loss', 'perplexity', 'accuracy'}
  assert task.tokens(batch) == int((batch['segment_ids'] > 0).sum())
  # Dropout is used when a dropout rng is given.
  train_loss, _ = task.loss(params, batch, jax.random.key(1))
  assert float(train_loss) != float(loss)


def _tiny_config(tmp_path):
  config = load_config('bert_mlm', 'tiny')
  # The fake corpus holds too few held-out articles to halve.
  config.data.splits = dict(train='train[:80%]', validation='train[80%:]', test='train[80%:]')
  # The fake articles are made of syllables the fake MiniLM vocab lacks (all [UNK], never masked):
  # a vocab of those syllables, word-initial and continuing, splits every word into real pieces.
  vocab = tmp_path / 'vocab.txt'
  vocab.write_text('\n'.join(fakes.VOCAB + fakes._SYLLABLES
                              + tuple('##' + x for x in fakes._SYLLABLES)) + '\n')
  config.tokenizer.vocab = str(vocab)
  return config


def test_bert_mlm_config_builds_data_and_task_that_train(fake_cache, tmp_path):
  config = _tiny_config(tmp_path)
  assert config.model.name == 'bert_mlm' and config.task.name == 'mlm'
  data = tasks.build_data(config, process_index=0, process_count=1)
  task = tasks.task_for(config, data)
  assert isinstance(task, MaskedLMTask) and data.steps_per_epoch is None
  batch = next(data.train_iter(0))
  assert set(batch) == KEYS and batch['input_ids'].shape == (8, 32)
  assert batch['weights'].sum() > 0 and (batch['input_ids'] == 4).any()  # fake vocab: [MASK] = 4
  params = task.init(jax.random.key(0), config.data.max_len)
  # One compiled program, not op by op: BERT's gradient with dropout has hundreds of ops.
  (loss, sums), grads = jax.jit(jax.value_and_grad(task.loss, has_aux=True))(params, batch,
                                                                             jax.random.key(1))
  assert np.isfinite(float(loss)) and float(sums['weight']) == batch['weights'].sum()
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) == len(norms)
  resumed = next(data.train_iter(2))
  third = list(zip(range(3), data.train_iter(0)))[2][1]
  jax.tree.map(np.testing.assert_array_equal, resumed, third)
  assert next(data.eval_iter('validation'))['weights'].sum() > 0


def test_mask_rate_and_whole_word_settings_are_read(fake_cache, tmp_path):
  config = _tiny_config(tmp_path)
  with config.task.unlocked():
    config.task.mask_rate = 0.5
    config.task.whole_word_masking = True
  data = tasks.build_data(config, process_index=0, process_count=1)
  vocab = (tmp_path / 'vocab.txt').read_text().split()
  continuation = np.array([t.startswith('##') for t in vocab])
  batch = next(data.eval_iter('validation'))
  labels, weights = batch['labels'], batch['weights']
  candidate = (batch['segment_ids'] > 0) & ~np.isin(labels, SPECIAL)
  assert 0.35 < weights.sum() / candidate.sum() < 0.65
  # A continuation piece is predicted exactly when the piece before it is.
  follows = candidate[:, 1:] & continuation[labels[:, 1:]]
  assert follows.any()
  np.testing.assert_array_equal(weights[:, 1:][follows], weights[:, :-1][follows])


def test_masked_lm_data_errors(fake_cache, tmp_path):
  config = _tiny_config(tmp_path)
  config.tokenizer.kind = 'sentencepiece'
  with pytest.raises(UserError, match='use wordpiece'):
    tasks.build_data(config, process_index=0, process_count=1)
  (tmp_path / 'no_mask.txt').write_text('[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n')
  config = _tiny_config(tmp_path)
  config.tokenizer.vocab = str(tmp_path / 'no_mask.txt')
  with pytest.raises(UserError, match=r'no \[MASK\]'):
    tasks.build_data(config, process_index=0, process_count=1)
  config = _tiny_config(tmp_path)
  config.model.vocab_size = 8
  data = tasks.build_data(config, process_index=0, process_count=1)
  with pytest.raises(UserError, match='vocab_size'):
    tasks.task_for(config, data)
  assert models.family(config.model).hf.export is not None
