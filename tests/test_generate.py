"""The generate command: a trained causal-LM run's best checkpoint continues prompts."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, load_config
from llmjax import generate, train
from llmjax.errors import UserError


@pytest.fixture(scope='module')
def lm_run(fake_cache_dir, tmp_path_factory):
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('LLMJAX_CACHE', str(fake_cache_dir))
    config = load_config('gpt_lm', 'tiny')
    config.data.splits = dict(train='train[:80%]', validation='train[80%:]', test='train[80%:]')
    workdir = tmp_path_factory.mktemp('gpt')
    train.train_and_evaluate(config, workdir)
  return workdir


def test_greedy_sampled_and_beam_continuations(lm_run, fake_cache, capsys):
  prompts = ['ka lo mi', 'ne']
  greedy = generate.generate_texts(lm_run, prompts, max_new_tokens=5)
  assert len(greedy) == 2 and all(isinstance(t, str) for t in greedy)
  assert generate.generate_texts(lm_run, prompts, max_new_tokens=5) == greedy  # Deterministic.
  # Top-k of 1 is greedy whatever the temperature.
  assert generate.generate_texts(lm_run, prompts, max_new_tokens=5, temperature=2.0,
                                 top_k=1) == greedy
  beams = generate.generate_texts(lm_run, prompts, max_new_tokens=5, num_beams=3)
  assert len(beams) == 2


def test_best_checkpoint_is_used(lm_run, fake_cache):
  results = json.loads((lm_run / 'results.json').read_text())
  best = generate.load_params(lm_run)[2]
  by_step = generate.load_params(lm_run, step=results['best_step'])[2]
  np.testing.assert_array_equal(jax.tree.leaves(best)[0], jax.tree.leaves(by_step)[0])
  if results['best_step'] != results['steps']:
    last = generate.load_params(lm_run, step=results['steps'])[2]
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(last)))


def test_user_errors(lm_run, tmp_path, fake_cache):
  with pytest.raises(UserError, match='has no config.json'):
    generate.load_params(tmp_path)
  with pytest.raises(UserError, match='no prompt given'):
    generate.generate_texts(lm_run, [], max_new_tokens=3)


def test_command_line(lm_run, fake_cache_dir):
  run = subprocess.run(
      [sys.executable, '-m', 'llmjax.generate', f'--workdir={lm_run}', '--prompt=ka lo',
       '--max_new_tokens=3'], capture_output=True, text=True, timeout=300, cwd=REPO,
      env={**os.environ, 'LLMJAX_CACHE': str(fake_cache_dir)})
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith('ka lo >>> ')
