"""The generate command: a trained causal-LM run's best checkpoint continues prompts; a T5 run's
generates targets for them."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO
from llmjax import generate
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError


@pytest.fixture
def lm_run(tiny_run):
  return tiny_run('gpt_lm')[1]  # configs/gpt_lm.py:tiny, 2 steps (conftest.py)


@pytest.fixture
def t5_run(tiny_run):
  return tiny_run('t5_span')[1]


@pytest.mark.parametrize('run', ['lm_run', 't5_run'])
def test_a_prompt_gives_the_same_text_alone_and_padded_in_a_batch(run, request, fake_cache):
  workdir = request.getfixturevalue(run)
  prompts = ['ka lo mi ne ka lo', 'ne']
  for kw in (dict(), dict(num_beams=3)):
    together = generate.generate_texts(workdir, prompts, max_new_tokens=6, **kw)
    alone = [generate.generate_texts(workdir, [p], max_new_tokens=6, **kw)[0] for p in prompts]
    assert together == alone


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
  config = json.loads((lm_run / 'config.json').read_text())
  config['task']['name'] = 'mlm'
  (tmp_path / 'config.json').write_text(json.dumps(config))
  with pytest.raises(UserError, match="trained task 'mlm', which does not generate text"):
    generate.load_params(tmp_path)


def test_command_line(lm_run, fake_cache_dir):
  run = subprocess.run(
      [sys.executable, '-m', 'llmjax.generate', f'--workdir={lm_run}', '--prompt=ka lo',
       '--max_new_tokens=3'], capture_output=True, text=True, timeout=300, cwd=REPO,
      env={**os.environ, 'LLMJAX_CACHE': str(fake_cache_dir)})
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith('ka lo >>> ')


def test_sentinels_are_read_and_written_as_t5_writes_them():
  tok = tokenizers_lib.TextTokenizer(encode=lambda text: [len(w) for w in text.split()],
                                     decode=lambda ids: '-'.join(map(str, ids)),
                                     eos_id=1, vocab_size=10)
  # 10 + 100 sentinels: <extra_id_0> is 109, <extra_id_1> 108.
  assert generate.detokenize(tok, [109, 4, 5, 108, 6]) == '<extra_id_0> 4-5 <extra_id_1> 6'
  assert generate.detokenize(tok, [4, 5]) == '4-5'
  assert generate.tokenize(tok, '<extra_id_0> abcd abcde <extra_id_1>abcdef') == [109, 4, 5, 108, 6]
  assert generate.tokenize(tok, 'abcd') == [4]
  with pytest.raises(UserError, match='<extra_id_100> is not a sentinel'):
    generate.tokenize(tok, 'a <extra_id_100>')
