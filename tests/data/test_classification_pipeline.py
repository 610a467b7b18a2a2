"""Input pipeline tests on the fake `movie_reviews`: order, resume, sharding, buckets, eval."""

import concurrent.futures
import itertools

import numpy as np
import pytest

import fakes
from conftest import override
from llmjax import assets, config_lib, data
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError

NUM = 400
BUCKETS = (8, 12, 16, 32)


@pytest.fixture(scope='module')
def fake_cache(tmp_path_factory):
  root = tmp_path_factory.mktemp('llmjax_cache')
  fakes.make_fake_assets(root, num_sentences=NUM)
  return root


@pytest.fixture
def cache(fake_cache, monkeypatch):
  # One cache per module: the first build prepares movie_reviews in it, later ones just open it.
  monkeypatch.setenv('LLMJAX_CACHE', str(fake_cache))
  return fake_cache


def make_config(**overrides):
  config = config_lib.base_config()
  config.batch_size = 16
  config.eval_batch_size = 24
  config.data.update(max_len=BUCKETS[-1], buckets=BUCKETS)
  return override(config, overrides)


def rows(batch):
  """Each real row (weight 1) as a tuple of its tokens, for order comparisons."""
  return [tuple(ids[mask == 1]) for ids, mask, w in
          zip(batch['input_ids'], batch['attention_mask'], batch['weight']) if w]


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def same_batches(a, b):
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_batch_format(cache):
  d = data.build(make_config())
  assert d.num_labels == 2 and d.label_names == ['negative', 'positive']
  assert sum(d.num_examples.values()) == NUM
  assert d.steps_per_epoch == d.num_examples['train'] // 16
  batch = next(d.train_iter())
  length = batch['input_ids'].shape[1]
  assert length in BUCKETS
  for key in ('input_ids', 'token_type_ids', 'attention_mask'):
    assert batch[key].dtype == np.int32 and batch[key].shape == (16, length)
  assert batch['label'].dtype == np.int32 and batch['label'].shape == (16,)
  assert batch['weight'].dtype == np.float32 and np.all(batch['weight'] == 1)
  assert np.all(batch['input_ids'][:, 0] == fakes.VOCAB.index('[CLS]'))
  assert np.all(batch['input_ids'][batch['attention_mask'] == 0] == 0)  # [PAD]
  assert np.all(batch['token_type_ids'] == 0)
  assert set(np.unique(batch['label'])) <= {0, 1}


def test_same_seed_same_order_and_epochs_differ(cache):
  d = data.build(make_config())
  spe = d.steps_per_epoch
  first = take(d.train_iter(), 2 * spe)
  assert same_batches(first, take(data.build(make_config()).train_iter(), 2 * spe))
  assert not same_batches(first[:3], take(data.build(make_config(seed=1)).train_iter(), 3))

  epoch0 = [r for b in first[:spe] for r in rows(b)]
  epoch1 = [r for b in first[spe:] for r in rows(b)]
  assert epoch0 != epoch1
  # Each epoch is a permutation: (nearly) the same multiset of examples, in a different order.
  # Only the dropped remainder (< one batch) may differ between epochs.
  assert len(set(epoch0) & set(epoch1)) >= len(set(epoch0)) - 16
  assert len(set(epoch0)) >= spe * 16 - 2  # at most a chance duplicate sentence


def test_resume_equals_tail(cache):
  d = data.build(make_config())
  k = d.steps_per_epoch - 2  # the resumed stream crosses an epoch boundary
  full = take(d.train_iter(0), k + 5)
  assert same_batches(take(d.train_iter(start_step=k), 5), full[k:])


def test_labels_match_the_data(cache):
  # Labels travel with their sentences: the fake sentences' polarity words decide the label.
  d = data.build(make_config())
  pos = {fakes.VOCAB.index(w) for w in fakes.POSITIVE_WORDS}
  neg = {fakes.VOCAB.index(w) for w in fakes.NEGATIVE_WORDS}
  for batch in take(d.train_iter(), 5):
    for ids, label in zip(batch['input_ids'], batch['label']):
      words = set(ids.tolist())
      assert (words & pos and not words & neg) if label else (words & neg and not words & pos)


@pytest.mark.parametrize('split', ['train', 'eval'])
def test_two_processes_concatenate_to_one(cache, split):
  one = data.build(make_config())
  procs = [data.build(make_config(), process_index=i, process_count=2) for i in range(2)]

  def batches(d):
    return take(d.train_iter(3), 4) if split == 'train' else list(d.eval_iter('validation'))

  for whole, *parts in zip(batches(one), *map(batches, procs)):
    for key in whole:
      assert parts[0][key].shape[0] == whole[key].shape[0] // 2
      # Same bucket length on both processes, and together they are the one-process batch.
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_bucket_is_smallest_that_fits(cache):
  d = data.build(make_config(batch_size=4, eval_batch_size=4))
  lengths = set()
  for batch in itertools.chain(take(d.train_iter(), 60), d.eval_iter('test')):
    length = batch['input_ids'].shape[1]
    longest = batch['attention_mask'].sum(axis=1).max()
    index = BUCKETS.index(length)
    assert longest <= length and (index == 0 or longest > BUCKETS[index - 1])
    lengths.add(length)
  assert len(lengths) >= 2  # the fake sentences (7-18 tokens) do use several buckets


def test_length_groups_batch_similar_lengths_and_resume_exactly(cache):
  """data.length_groups: each epoch still a permutation (less the dropped remainder), batches of
  about one length padded to smaller buckets than random batches, the same stream from any step
  and on 2 processes, and other orders in other epochs and seeds."""
  grouping = {'batch_size': 4, 'data.length_groups': 5}
  config = make_config(**grouping)
  d = data.build(config)
  spe = d.steps_per_epoch
  grouped = take(d.train_iter(), 2 * spe)
  epoch0 = [r for b in grouped[:spe] for r in rows(b)]
  random_batches = take(data.build(make_config(batch_size=4)).train_iter(), spe)
  plain = [r for b in random_batches for r in rows(b)]
  assert len(epoch0) == len(plain) == 4 * spe and len(set(epoch0) ^ set(plain)) <= 2 * 3
  # Within a batch, lengths spread less than in random batches; fewer pad tokens are computed.
  spread = lambda bs: np.mean([np.ptp(b['attention_mask'].sum(axis=1)) for b in bs])
  padded = lambda bs: sum(b['input_ids'].size for b in bs)
  assert spread(grouped[:spe]) < spread(random_batches) / 2
  assert padded(grouped[:spe]) <= padded(random_batches)
  assert epoch0 != [r for b in grouped[spe:] for r in rows(b)]
  k = spe - 2
  assert same_batches(take(d.train_iter(start_step=k), 5), grouped[k:k + 5])
  procs = [data.build(config, process_index=i, process_count=2) for i in range(2)]
  for whole, *parts in zip(grouped[3:7], *(take(p.train_iter(3), 4) for p in procs)):
    np.testing.assert_array_equal(np.concatenate([p['input_ids'] for p in parts]),
                                  whole['input_ids'])
  other_seed = data.build(make_config(seed=1, **grouping))
  assert not same_batches(grouped[:3], take(other_seed.train_iter(), 3))


def test_truncation_to_max_len(cache):
  d = data.build(make_config(**{'data.max_len': 8, 'data.buckets': (8,)}))
  batch = next(d.train_iter())
  assert batch['input_ids'].shape == (16, 8)
  assert np.all(batch['input_ids'][:, -1] == fakes.VOCAB.index('[SEP]'))


def test_eval_covers_every_example_once(cache):
  d = data.build(make_config())
  n = d.num_examples['validation']
  assert n % 24, 'the fake split should need a padded last batch'
  batches = list(d.eval_iter('validation'))
  assert len(batches) == -(-n // 24)
  weights = np.concatenate([b['weight'] for b in batches])
  assert weights.sum() == n and np.all(weights[:n] == 1) and np.all(weights[n:] == 0)
  # The real rows are the split, in stored order, each exactly once.
  source = data.pipeline._Examples(  # pylint: disable=protected-access
      _movie_reviews_source(cache, 'validation'), ('sentence',), 'label')
  expected = [tuple(e.ids) for e in d.tokenizer.encode_batch([source[i][0][0] for i in range(n)])]
  assert [r for b in batches for r in rows(b)] == expected
  labels = np.concatenate([b['label'] for b in batches])
  assert labels[:n].tolist() == [source[i][1] for i in range(n)]
  # Padding rows: label 0 and a minimal [CLS] [SEP] input.
  last = batches[-1]
  pad = last['weight'] == 0
  assert np.all(last['label'][pad] == 0)
  assert np.all(last['attention_mask'][pad].sum(axis=1) == 2)
  assert np.all(last['input_ids'][pad][:, :2] == [fakes.VOCAB.index('[CLS]'),
                                                  fakes.VOCAB.index('[SEP]')])
  # A second pass gives the same batches.
  assert same_batches(batches, list(d.eval_iter('validation')))


def test_unlabelled_examples_get_weight_zero(cache):
  # TFDS marks unlabelled examples (e.g. GLUE test splits) with label -1: they must not reach a loss
  # or a metric, so they get weight 0 and a valid class id.
  tokenizer = tokenizers_lib.wordpiece(
      assets.resolve('asset:all-MiniLM-L6-v2/vocab.txt'), max_len=16)
  d = data.ClassificationData(
      tokenizer=tokenizer, label_names=['negative', 'positive'],
      splits={'train': [(('good movie',), 1)] * 4,
              'test': [(('the movie',), -1), (('bad',), 0)]},
      text_keys=('sentence',), buckets=(16,), batch_size=2, eval_batch_size=4,
      seed=0, process_index=0, process_count=1)
  batch, = d.eval_iter('test')
  np.testing.assert_array_equal(batch['weight'], [0, 1, 0, 0])
  np.testing.assert_array_equal(batch['label'], [0, 0, 0, 0])
  np.testing.assert_array_equal(next(d.train_iter())['weight'], [1, 1])


def _movie_reviews_source(cache, split):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.data_source('movie_reviews', split=split, data_dir=cache / 'tensorflow_datasets',
                          builder_kwargs={'file_format': 'array_record'})


def test_max_train_examples_and_split_slicing(cache):
  d = data.build(make_config(**{'data.max_train_examples': 50,
                                'data.splits': {'train': 'train', 'validation': 'test[:50%]'}}))
  assert d.num_examples['train'] == 50 and d.steps_per_epoch == 3
  full = data.build(make_config()).num_examples
  assert d.num_examples['validation'] == (full['test'] + 1) // 2
  with pytest.raises(UserError, match='no split'):
    d.eval_iter('test')


def test_cross_validation_tests_every_example_once_and_keeps_copies_together():
  # Three splits pooled, with copies of one text in two of them (as BBC News repeats 98 articles).
  splits = {'train': [((f't{i}',), i % 3) for i in range(300)] + [(('copy',), 1)],
            'validation': [((f'v{i}',), 0) for i in range(40)],
            'test': [((f's{i}', 'pair'), 2) for i in range(60)] + [(('copy',), 1)]}
  every = sorted(ex for examples in splits.values() for ex in examples)
  tested = []
  for fold in range(5):
    cv = data.pipeline.cross_validation_splits(splits, 5, fold)
    assert sorted(ex for examples in cv.values() for ex in examples) == every
    texts = {name: {ex[0] for ex in examples} for name, examples in cv.items()}
    assert not texts['test'] & (texts['train'] | texts['validation'])
    assert not texts['train'] & texts['validation']
    rest = len(cv['train']) + len(cv['validation'])
    assert 0.05 < len(cv['validation']) / rest < 0.15
    assert 0.1 < len(cv['test']) / len(every) < 0.3
    tested += cv['test']
  assert sorted(tested) == every  # each example tested by exactly one fold
  with pytest.raises(UserError, match=r'fold=5 with config.data.folds=5'):
    data.pipeline.cross_validation_splits(splits, 5, 5)


def test_cross_validation_from_the_config(cache):
  folds = [data.build(make_config(**{'data.folds': 4, 'data.fold': k})).num_examples
           for k in range(4)]
  assert all(sum(n.values()) == NUM for n in folds)
  assert sum(n['test'] for n in folds) == NUM
  d = data.build(make_config(**{'data.folds': 4, 'data.fold': 1}))
  again = data.build(make_config(**{'data.folds': 4, 'data.fold': 1}))
  assert same_batches(take(d.eval_iter('test'), 3), take(again.eval_iter('test'), 3))


def test_concurrent_first_use_prepares_once(cache, tmp_path):
  # Several processes of one host may start together on a fresh data_dir; unguarded, TFDS's final
  # rename makes all but one of them fail. (Threads stand in for processes: flock locks conflict
  # between separate opens of the file within one process too.)
  config = make_config(**{'data.data_dir': str(tmp_path / 'fresh_tfds')})
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    results = list(pool.map(lambda _: data.build(config).num_examples, range(3)))
  assert results[0] == results[1] == results[2] and sum(results[0].values()) == NUM


def test_unreachable_download_is_one_line_user_error(cache, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def offline(*args, **kwargs):
    raise ConnectionError('Failed to establish a new connection\n(details)')

  monkeypatch.setattr(tfds, 'data_source', offline)
  with pytest.raises(UserError, match="ConnectionError: Failed to establish") as e:
    data.build(make_config(**{'data.name': 'glue/sst2'}))
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('overrides, match', [
    ({'batch_size': 15}, 'multiple of the process count'),
    ({'eval_batch_size': 7}, 'multiple of the process count'),
    ({'data.max_len': 64}, 'largest bucket'),
    ({'data.buckets': (32, 16)}, 'increasing'),
    ({'data.name': 'no_such_dataset_xyz'}, 'unknown dataset'),
    ({'data.label_key': 'rating'}, 'not a class label'),
    ({'data.text_keys': ('review',)}, "no feature 'review'"),
    ({'batch_size': 1000}, 'fewer than'),
    ({'tokenizer.vocab': '/nonexistent/vocab.txt'}, 'does not exist'),
    ({'data.splits': {'train': 'trian'}}, "Unknown split 'trian'"),
    ({'data.splits': {'train': 'train[:200%]'}}, 'Error parsing split'),
])
def test_config_errors(cache, overrides, match):
  with pytest.raises(UserError, match=match):
    data.build(make_config(**overrides), process_count=2)
