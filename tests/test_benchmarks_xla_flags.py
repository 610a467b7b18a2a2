"""benchmarks/xla_flags.py on a tiny config: each candidate's `llmjax.bench` runs in its own process,
and a flag XLA does not know is reported as that candidate's failure (timings are not checked)."""

import json

from conftest import REPO, load_benchmark



def test_each_candidate_is_benchmarked_and_an_unknown_flag_fails_alone(fake_cache, tmp_path,
                                                                       capsys):
  out = tmp_path / 'flags.json'
  table = load_benchmark('xla_flags').main([
      f'--config={REPO}/configs/bert_classify.py:tiny', '--rounds=1', '--steps=1', '--warmup=0',
      '--candidate=--xla_llmjax_no_such_flag=1', f'--out={out}'])
  base, bogus = table
  assert base['xla_flags'] == '' and base['speedup'] == 1.0 and base['step_s'] > 0
  assert bogus['xla_flags'] == '--xla_llmjax_no_such_flag=1' and 'error' in bogus
  assert json.loads(out.read_text()) == table
  assert 'failed' in capsys.readouterr().out
