"""The token-classification pipeline: tags on first pieces (checked by hand), whole-word truncation,
buckets, the resumable train order, eval padding, predict files, and conll2003 through tfds mocks."""


import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import override, load_config
from llmjax.data import tagging
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError

VOCAB = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'new', 'york', 'is', 'big', 'un', '##aff',
         '##able', '!', 'a', 'city', 'the')
ID = {t: i for i, t in enumerate(VOCAB)}
PAD, UNK, CLS, SEP = 0, 1, 2, 3
TAGS = ['O', 'B-loc', 'I-loc']


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  path = tmp_path_factory.mktemp('vocab') / 'vocab.txt'
  path.write_text('\n'.join(VOCAB) + '\n')
  tok = tokenizers_lib.wordpiece(path, max_len=512)
  tok.no_truncation()
  return tok


def make_data(tokenizer, splits, *, max_len=16, buckets=(8, 16), batch_size=2, eval_batch_size=4,
              process_index=0, process_count=1):
  return tagging.TaggingData(tokenizer=tokenizer, label_names=TAGS, splits=splits, max_len=max_len,
                             buckets=buckets, batch_size=batch_size, eval_batch_size=eval_batch_size,
                             seed=0, process_index=process_index, process_count=process_count)


def ids(*tokens):
  return [ID[t] for t in tokens]


def test_tag_on_first_piece_of_each_word(tokenizer):
  # 'unaffable' -> un ##aff ##able; 'York' is lowercased; 'zebra' is out of the vocabulary (one
  # [UNK] piece); a zero-width space has no piece at all and becomes [UNK] itself.
  words = ['New', 'York', 'is', 'unaffable', 'zebra', '\u200b', '!']
  data = make_data(tokenizer, {'train': [(words, [1, 2, 0, 0, 0, 0, 0])] * 2,
                               'validation': [(words, [1, 2, 0, 0, 1, 0, 0])]})
  batch = next(data.eval_iter('validation'))
  expected = [CLS, *ids('new', 'york', 'is', 'un', '##aff', '##able'), UNK, UNK, ID['!'], SEP]
  assert batch['input_ids'].shape == (4, 16)  # 11 pieces: the 16 bucket
  np.testing.assert_array_equal(batch['input_ids'][0], expected + [PAD] * 5)
  np.testing.assert_array_equal(batch['attention_mask'][0], [1] * 11 + [0] * 5)
  first = [1, 2, 3, 4, 7, 8, 9]  # the second and third pieces of 'unaffable' carry nothing
  np.testing.assert_array_equal(np.flatnonzero(batch['weights'][0]), first)
  np.testing.assert_array_equal(batch['labels'][0][first], [1, 2, 0, 0, 1, 0, 0])
  assert batch['labels'][0].sum() == 4 and batch['token_type_ids'].sum() == 0
  # Eval padding rows: [CLS] [SEP], a valid input with nothing scored.
  np.testing.assert_array_equal(batch['input_ids'][1:, :3], [[CLS, SEP, PAD]] * 3)
  assert batch['weights'][1:].sum() == 0 and batch['attention_mask'][1:].sum() == 6


@pytest.mark.parametrize('max_len, pieces, kept', [
    (10, ['new', 'york', 'is', 'un', '##aff', '##able', '!'], 5),  # fits: 9 pieces
    (8, ['new', 'york', 'is', 'un', '##aff', '##able'], 4),         # exactly: '!' dropped
    (7, ['new', 'york', 'is'], 3),                                 # never cut inside 'unaffable'
])
def test_truncation_keeps_whole_words(tokenizer, max_len, pieces, kept):
  words = ['new', 'york', 'is', 'unaffable', '!']
  data = make_data(tokenizer, {'train': [(words, [1, 2, 0, 0, 0])] * 2}, max_len=max_len,
                   buckets=(max_len,))
  batch = next(data.eval_iter('train'))
  np.testing.assert_array_equal(batch['input_ids'][0, :len(pieces) + 2],
                                [CLS, *ids(*pieces), SEP])
  assert batch['weights'][0].sum() == kept
  assert data.truncated_words == {'train': 2 * (5 - kept)}


def test_a_first_word_longer_than_max_len_keeps_its_first_pieces(tokenizer):
  data = make_data(tokenizer, {'train': [(['unaffable', 'city'], [1, 0])] * 2}, max_len=4,
                   buckets=(4,))
  batch = next(data.eval_iter('train'))
  np.testing.assert_array_equal(batch['input_ids'][0], [CLS, ID['un'], ID['##aff'], SEP])
  np.testing.assert_array_equal(batch['weights'][0], [0, 1, 0, 0])
  assert batch['labels'][0, 1] == 1 and data.truncated_words == {'train': 2}


def test_unknown_tags_are_never_scored(tokenizer):
  data = make_data(tokenizer, {'train': [(['a', 'big', 'city'], [0, -1, 0])] * 2})
  batch = next(data.eval_iter('train'))
  np.testing.assert_array_equal(batch['weights'][0, :5], [0, 1, 0, 1, 0])
  assert batch['labels'].min() == 0


SENTENCES = [(['the', 'city'] + ['big'] * n, [0] * (n + 2)) for n in range(10)]  # distinct lengths


def test_train_order_is_seeded_resumable_and_bucketed(tokenizer):
  data = make_data(tokenizer, {'train': SENTENCES}, max_len=16, buckets=(6, 10, 16))
  assert data.steps_per_epoch == 5
  it = data.train_iter(0)
  stream = [next(it) for _ in range(12)]
  it = data.train_iter(7)
  resumed = [next(it) for _ in range(5)]
  for a, b in zip(stream[7:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # Each epoch shows every sentence once (a sentence is known by its number of words).
  for epoch in (0, 1):
    counts = [int(b['weights'][r].sum()) - 2 for b in stream[5 * epoch:5 * epoch + 5]
              for r in range(2)]
    assert sorted(counts) == list(range(10))
  orders = [[int(b['weights'][r].sum()) for b in stream[5 * e:5 * e + 5] for r in range(2)]
            for e in (0, 1)]
  assert orders[0] != orders[1]  # a fresh permutation each epoch
  for b in stream:  # the smallest bucket that holds the longest row
    longest = int(b['attention_mask'].sum(1).max())
    assert b['input_ids'].shape[1] == min(x for x in (6, 10, 16) if x >= longest)


def test_processes_split_each_global_batch(tokenizer):
  halves = [make_data(tokenizer, {'train': SENTENCES}, batch_size=4, process_index=i,
                      process_count=2)
            for i in range(2)]
  whole = make_data(tokenizer, {'train': SENTENCES}, batch_size=4)
  batches = [next(d.train_iter(3)) for d in (*halves, whole)]
  for key in batches[2]:
    np.testing.assert_array_equal(np.concatenate([batches[0][key], batches[1][key]]),
                                  batches[2][key])


def test_predict_iter_reads_json_and_plain_lines(tokenizer, tmp_path):
  path = tmp_path / 'inputs.txt'
  path.write_text('{"tokens": ["New", "York", "!"], "id": 7}\n\n'
                  'the  unaffable city\n'
                  '{"tokens": "a big city"}\n')
  data = make_data(tokenizer, {'train': SENTENCES}, eval_batch_size=2)
  batches = list(data.predict_iter(path))
  assert [inputs for _, inputs in batches] == [
      [{'tokens': ['New', 'York', '!'], 'id': 7}, {'tokens': ['the', 'unaffable', 'city']}],
      [{'tokens': ['a', 'big', 'city']}]]
  first = batches[0][0]
  np.testing.assert_array_equal(first['input_ids'][1, :7],
                                [CLS, *ids('the', 'un', '##aff', '##able', 'city'), SEP])
  # Every word's first piece is marked, so predictions map back to the words.
  np.testing.assert_array_equal(np.flatnonzero(first['weights'][1]), [1, 2, 5])
  assert batches[1][0]['weights'][1].sum() == 0  # the padding row

  path.write_text('{"tokens": [1, 2]}\n')
  with pytest.raises(UserError, match=r'inputs.txt:1: no list of words under .tokens.'):
    list(data.predict_iter(path))
  path.write_text('new york\n{"tokens": ["a"\n')
  with pytest.raises(UserError, match=r'inputs.txt:2: not JSON'):
    list(data.predict_iter(path))


def _conll_sources(builder, split, **kwargs):
  """A data source per split of consistent conll2003-shaped sentences (tfds' random mocks give
  tokens and tags of unrelated lengths)."""
  del kwargs
  rng = np.random.default_rng(0)

  class Source(list):
    dataset_info = builder.info

  def sentence(i):
    n = int(rng.integers(1, 8))
    return {'tokens': np.array(rng.choice(['new', 'york', 'city'], n)),
            'ner': rng.integers(0, 9, n), 'pos': rng.integers(0, 47, n),
            'chunks': rng.integers(0, 23, n)}

  def make(spec):
    return Source(sentence(i) for i in range(12))

  return {name: make(spec) for name, spec in split.items()} if isinstance(split, dict) else make(split)


@pytest.mark.parametrize('label_key, num_tags', [('ner', 9), ('pos', 47)])
def test_build_reads_conll2003_tags(fake_cache, label_key, num_tags):
  config = override(load_config('ner_wnut16', 'tiny'), {
      'data.name': 'conll2003', 'data.label_key': label_key, 'batch_size': 4})
  with tfds.testing.mock_data(as_data_source_fn=_conll_sources):
    data = tagging.build(config)
  assert data.num_labels == num_tags and data.num_examples == {
      'train': 12, 'validation': 12, 'test': 12}
  if label_key == 'ner':
    assert data.label_names[:3] == ['O', 'B-PER', 'I-PER']
  batch = next(data.train_iter(0))
  assert batch['weights'].sum() > 0 and batch['labels'].max() < num_tags

  with tfds.testing.mock_data(as_data_source_fn=_conll_sources):
    with pytest.raises(UserError, match="feature 'chunk' of 'conll2003' is not a Sequence"):
      tagging.build(override(config, {'data.label_key': 'chunk'}))
