"""Config parsing and validation: every mistake is one line naming the key and the fix."""

import pytest

from conftest import REPO, load_config
from llmjax import config_lib
from llmjax.errors import UserError

CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py'))


def test_parse_arg_types_and_flags():
  arg = config_lib.parse_arg('epochs=1,max_len=64,tiny,lr=1e-4', tiny=False, epochs=3, max_len=128,
                             lr=3e-5)
  assert (arg.tiny, arg.epochs, arg.max_len, arg.lr) == (True, 1, 64, 1e-4)
  assert config_lib.parse_arg(None, tiny=False).tiny is False


@pytest.mark.parametrize('arg, message', [
    ('epoch=1', "unknown config argument 'epoch'"),
    ('epochs=one', "epochs='one' is not a int"),
    ('epochs', "needs a value"),
    ('tiny=maybe', 'is not a bool'),
])
def test_parse_arg_errors(arg, message):
  with pytest.raises(UserError, match=message):
    config_lib.parse_arg(arg, tiny=False, epochs=3)


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_validates(name):
  for arg in (None, 'tiny'):
    config_lib.validate(load_config(name, arg), num_devices=8)


def _bad(num_devices=8, **changes):
  config = load_config('bert_classify')
  for key, value in changes.items():
    *parents, leaf = key.split('__')
    target = config
    for p in parents:
      target = target[p]
    target[leaf] = value
  with pytest.raises(UserError) as info:
    config_lib.validate(config, num_devices)
  message = str(info.value)
  assert '\n' not in message
  return message


def test_validation_errors_name_the_key_and_the_fix():
  assert _bad(optim__lr=0.0) == 'config.optim.lr=0.0 must be > 0: pass e.g. --config.optim.lr=3e-5'
  assert 'did you mean optim.lr' in _bad(optim__lrate=1e-3)
  assert 'batch_size=30 is not divisible by the data-parallel size data*fsdp=8' in _bad(batch_size=30)
  assert 'needs 4 devices but 8 are present' in _bad(mesh__data=2, mesh__fsdp=2)
  assert 'cannot be split by 3' in _bad(mesh__tensor=3)
  assert "model.name='gpt9' is not a known model" in _bad(model__name='gpt9')
  assert 'must equal the last bucket' in _bad(data__max_len=100)
  assert 'unknown config key mesh.pipeline' in _bad(mesh__pipeline=1)
  assert 'optim.schedule' in _bad(optim__schedule='step')
  assert 'grad_accum_steps' in _bad(optim__grad_accum_steps=8, batch_size=32)
  assert 'num_heads' in _bad(model__num_heads=7)
  assert _bad(cpu_dot_library='mkl') == 'config.cpu_dot_library=\'mkl\' must be onednn or xla'
  assert _bad(data__length_groups=-1) == (
      'config.data.length_groups=-1 must be >= 0 (0 = batches of random lengths; e.g. 50)')
  assert 'for classification and regression only, not mlm: set it to 0' in _bad(
      task__name='mlm', num_train_steps=10, data__length_groups=50)
  assert _bad(data__folds=1) == ('config.data.folds=1 must be 0 (the configured splits) or >= 2 '
                                 '(K-fold cross-validation, e.g. 5)')
  assert _bad(data__folds=5, data__fold=5) == 'config.data.fold=5 must be in [0, data.folds=5)'
  assert 'cross-validates classification and regression only, not mlm' in _bad(
      task__name='mlm', num_train_steps=10, data__folds=5)


def test_mesh_shape_fills_minus_one():
  config = load_config('bert_classify')
  config.mesh.update(data=-1, fsdp=2, tensor=2)
  assert config_lib.mesh_shape(config.mesh, 8) == {'data': 2, 'fsdp': 2, 'tensor': 2}


def test_the_cpu_dot_library_defaults_to_onednn_or_the_environments(monkeypatch):
  monkeypatch.delenv('LLMJAX_CPU_DOT_LIBRARY')  # conftest.py sets 'xla' for the tests.
  assert config_lib.base_config().cpu_dot_library == 'onednn'
  monkeypatch.setenv('LLMJAX_CPU_DOT_LIBRARY', 'xla')
  assert config_lib.base_config().cpu_dot_library == 'xla'
