"""Generate from a trained model: loads a run's best checkpoint and prints what it makes of prompts.

  python -m llmjax.generate --workdir=runs/gpt --prompt="Anarchism is" [--prompt=...]
  python -m llmjax.generate --workdir=runs/gpt --prompts_file=prompts.txt --num_beams=4
  python -m llmjax.generate --workdir=runs/gpt --prompt="The" --temperature=0.8 --top_p=0.9
  python -m llmjax.generate --workdir=runs/wmt --prompt="Good morning." --num_beams=4

A decoder-only run (causal_lm) continues each prompt; an encoder-decoder run (translation,
span_corruption) reads each prompt as its input and prints the target it generates (a translation;
for span corruption, the sentinels and the spans it guesses for them: write <extra_id_0>,
<extra_id_1>, ... where a prompt's spans are missing). Greedy by default;
`--temperature > 0` samples (with `--top_k`, `--top_p`); `--num_beams > 1` runs beam search with
`--length_penalty`. All of it runs jit-compiled over the KV cache (`llmjax.decoding`). The run's
`config.json` names the model and tokenizer.
"""

import pathlib
import re

import jax
import numpy as np
from absl import app, flags

from llmjax import decoding, errors, lora, tasks, train
from llmjax.data import lm
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError

# Tasks whose model generates text, and whether it is an encoder-decoder.
_GENERATIVE = {'causal_lm': False, 'span_corruption': True, 'translation': True,
               'summarization': True}

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory (config.json, checkpoints/).')
_PROMPT = flags.DEFINE_multi_string('prompt', [], 'A prompt; repeat the flag for several.')
_PROMPTS_FILE = flags.DEFINE_string('prompts_file', None, 'A file with one prompt per line.')
_MAX_NEW_TOKENS = flags.DEFINE_integer('max_new_tokens', 40, 'Tokens to generate per prompt.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.0, '0 = greedy; > 0 samples.')
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Sample from the k most likely tokens (0 = all).')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Sample from the smallest set holding this probability.')
_NUM_BEAMS = flags.DEFINE_integer('num_beams', 1, '> 1: beam search.')
_LENGTH_PENALTY = flags.DEFINE_float('length_penalty', 1.0, 'Beam score = logp / length**this.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')


def load_params(workdir: pathlib.Path, step: int | None = None):
  """(config, model, params) of the run in `workdir`, from its best checkpoint unless `step`."""
  config = train.run_config(workdir)
  if config.task.name not in _GENERATIVE:
    raise UserError(f'{workdir} trained task {config.task.name!r}, which does not generate text: '
                    f'use a run of {", ".join(_GENERATIVE)}')
  task = tasks.task_for(config)
  params, _, _ = train.restore_params(task, config, workdir, step)
  return config, task.model, lora.merge(params, config)


def generate_texts(workdir, prompts: list[str], *, max_new_tokens: int, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0, num_beams: int = 1,
                   length_penalty: float = 1.0, seed: int = 0) -> list[str]:
  """What the model makes of each prompt, up to the end-of-sequence token: the continuation (text
  after the prompt) of a decoder-only model, the generated target of an encoder-decoder."""
  if not prompts:
    raise UserError('no prompt given: pass --prompt="..." or --prompts_file=FILE')
  config, model, params = load_params(workdir)
  tok = tokenizers_lib.text_tokenizer(config)
  seq2seq = _GENERATIVE[config.task.name]
  # Encoder inputs end in EOS as in training; a decoder's prompt is left-padded, a source right-padded.
  encoded = [tokenize(tok, p) + [tok.eos_id] if seq2seq else tok.encode(p) or [tok.eos_id]
             for p in prompts]
  width = max(map(len, encoded))
  ids = np.zeros((len(encoded), width), np.int32)
  mask = np.zeros((len(encoded), width), np.int32)
  for row, e in enumerate(encoded):
    start = 0 if seq2seq else width - len(e)
    ids[row, start:start + len(e)] = e
    mask[row, start:start + len(e)] = 1
  if seq2seq and num_beams > 1:
    out, _ = decoding.seq2seq_beam_search(model, params, ids, mask, num_beams=num_beams,
                                          max_new_tokens=max_new_tokens, eos_id=tok.eos_id,
                                          length_penalty=length_penalty)
  elif seq2seq:
    out = decoding.seq2seq_generate(model, params, ids, mask, jax.random.key(seed),
                                    max_new_tokens=max_new_tokens, temperature=temperature,
                                    top_k=top_k, top_p=top_p, eos_id=tok.eos_id)
  elif num_beams > 1:
    out, _ = decoding.beam_search(model, params, ids, mask, num_beams=num_beams,
                                  max_new_tokens=max_new_tokens, eos_id=tok.eos_id,
                                  length_penalty=length_penalty)
  else:
    out = decoding.generate(model, params, ids, mask, jax.random.key(seed),
                            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, eos_id=tok.eos_id)
  texts = []
  for row in np.asarray(out):
    row = row.tolist()
    texts.append(detokenize(tok, row[:row.index(tok.eos_id)] if tok.eos_id in row else row))
  return texts


_SENTINEL = re.compile(r'<extra_id_(\d+)>')


def tokenize(tok: tokenizers_lib.TextTokenizer, text: str) -> list[int]:
  """Ids of `text`, where each <extra_id_N> becomes span corruption's sentinel N, so a T5 run can be
  asked to fill spans: "The <extra_id_0> of France is Paris." """
  ids, start = [], 0
  for match in _SENTINEL.finditer(text):
    number = int(match.group(1))
    if number >= lm.NUM_SENTINELS:
      raise UserError(f'{match.group(0)} is not a sentinel: use <extra_id_0> to '
                      f'<extra_id_{lm.NUM_SENTINELS - 1}>')
    before = text[start:match.start()].strip()
    ids += tok.encode(before) if before else []
    ids.append(tok.vocab_size + lm.NUM_SENTINELS - 1 - number)
    start = match.end()
  rest = text[start:].strip()
  return ids + (tok.encode(rest) if rest else [])


def detokenize(tok: tokenizers_lib.TextTokenizer, ids: list[int]) -> str:
  """Text of `ids`; ids past the tokenizer's vocabulary are span corruption's sentinels, written
  as T5 writes them (<extra_id_0> is the highest id)."""
  parts, run = [], []
  for i in ids:
    if i < tok.vocab_size:
      run.append(i)
      continue
    parts += [tok.decode(run)] if run else []
    parts.append(f'<extra_id_{tok.vocab_size + lm.NUM_SENTINELS - 1 - i}>')
    run = []
  parts += [tok.decode(run)] if run else []
  return ' '.join(parts)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  prompts = list(_PROMPT.value)
  if _PROMPTS_FILE.value:
    path = pathlib.Path(_PROMPTS_FILE.value)
    if not path.exists():
      raise UserError(f'--prompts_file={path} does not exist')
    prompts += [line for line in path.read_text().splitlines() if line.strip()]
  texts = generate_texts(_WORKDIR.value, prompts, max_new_tokens=_MAX_NEW_TOKENS.value,
                         temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
                         num_beams=_NUM_BEAMS.value, length_penalty=_LENGTH_PENALTY.value,
                         seed=_SEED.value)
  for prompt, text in zip(prompts, texts):
    print(f'{prompt} >>> {text}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  errors.run(main)
