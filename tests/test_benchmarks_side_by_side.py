"""benchmarks/side_by_side.py: the transformers side's AdamW spares what llmjax's weight decay spares
and follows llmjax's learning-rate schedule; torch's threads come back; a config loads as --config
does, and a script's user error is one line."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from conftest import REPO, load_benchmark, load_config
from llmjax import models, optim, tasks
from llmjax.errors import UserError

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


@pytest.mark.parametrize('name', ['gpt_lm', 'bert_mlm', 't5_span'])
def test_adamw_decays_the_weights_llmjax_decays(name, tmp_path):
  """The same model in both frameworks (llmjax's exported in Hugging Face's layout): torch's AdamW
  decays as many weights as llmjax's `optim.no_decay` leaves decayed, and spares the rest."""
  config = load_config(name, 'tiny')
  models.resolve(config)
  params = nn.unbox(jax.jit(tasks.task_for(config).init, static_argnums=1)(jax.random.key(0), 16))
  models.export(params, config.model, tmp_path)
  architecture = json.loads((tmp_path / 'config.json').read_text())['architectures'][0]
  model = getattr(transformers, architecture).from_pretrained(tmp_path)
  opt, scheduler = load_benchmark('side_by_side').torch_adamw(model, config)
  assert scheduler is None and opt.defaults['fused']
  decayed, spared = opt.param_groups
  assert (decayed['weight_decay'], spared['weight_decay']) == (config.optim.weight_decay, 0.0)
  leaves = zip(jax.tree.leaves(params), jax.tree.leaves(optim.decay_mask(params,
                                                                          config.optim.no_decay)))
  sizes = {True: 0, False: 0}
  for leaf, decays in leaves:
    sizes[bool(decays)] += leaf.size
  assert sum(p.numel() for p in decayed['params']) == sizes[True] > 0
  assert sum(p.numel() for p in spared['params']) == sizes[False] > 0


def test_adamw_follows_llmjax_schedule_and_refuses_another_decay_mask():
  side_by_side = load_benchmark('side_by_side')
  config = load_config('gpt_lm', 'tiny')
  model = torch.nn.Linear(4, 3)
  opt, scheduler = side_by_side.torch_adamw(model, config, 20)
  lrs = []
  for _ in range(20):
    lrs.append(opt.param_groups[0]['lr'])
    opt.step()
    scheduler.step()
  expected = optim.learning_rate(config.optim, 20)(np.arange(20))
  np.testing.assert_allclose(lrs, expected, rtol=1e-6, atol=1e-9)
  assert len(set(np.round(lrs, 12))) > 2  # warmup and decay, not a constant

  config.optim.no_decay = r'(bias|scale|embedding)$'
  with pytest.raises(UserError, match="config.optim.no_decay=.*keep the default"):
    side_by_side.torch_adamw(model, config)


def test_torch_threads_are_restored_and_configs_load_by_path():
  side_by_side = load_benchmark('side_by_side')
  before = torch.get_num_threads()
  with pytest.raises(RuntimeError):
    with side_by_side.torch_threads(before + 1):
      assert torch.get_num_threads() == before + 1
      raise RuntimeError('the side failed')
  assert torch.get_num_threads() == before
  relative = side_by_side.load_config('configs/gpt_lm.py:tiny')
  absolute = side_by_side.load_config(f'{REPO / "configs" / "gpt_lm.py"}:tiny')
  assert relative.to_dict() == absolute.to_dict() == load_config('gpt_lm', 'tiny').to_dict()


def test_a_missing_config_is_one_line_from_the_function_and_from_a_script(tmp_path):
  side_by_side = load_benchmark('side_by_side')
  with pytest.raises(UserError, match=r'no config file .*configs/nope.py: give --config=FILE.py'):
    side_by_side.load_config('configs/nope.py:tiny')
  run = subprocess.run(
      [sys.executable, str(REPO / 'benchmarks' / 'finetune_vs_transformers.py'),
       '--config=configs/nope.py'], capture_output=True, text=True, timeout=120, cwd=tmp_path,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert run.returncode == 2, run.stderr[-2000:]
  assert run.stderr.strip().splitlines()[-1].startswith('llmjax: error: no config file ')
  assert 'Traceback' not in run.stderr
