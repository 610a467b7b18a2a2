"""benchmarks/compile_vs_depth.py on the tiny GPT: each depth compiles and is reported (timings are
not checked), and the compilation cache is left as it was. (The other families go through the same
code; a compile with the cache off costs seconds each.)"""

import json

import jax

from conftest import load_benchmark


def test_each_depth_compiles_and_is_reported(tmp_path, capsys):
  out = tmp_path / 'depth.json'
  results = load_benchmark('compile_vs_depth').main([
      '--configs=gpt_lm', '--layers=1,3', '--args=tiny', f'--out={out}'])
  assert set(results) == {'gpt_lm scan'}
  assert set(results['gpt_lm scan']) == {1, 3}
  assert all(w > 0 and c > 0 for w, c in results['gpt_lm scan'].values())
  assert json.loads(out.read_text())['gpt_lm scan'].keys() == {'1', '3'}
  assert capsys.readouterr().out.count('ratio') == 1
  assert jax.config.jax_enable_compilation_cache
