"""Instruction-tuning data: the chat template and loss weights on hand-checked ids, truncation,
packing that keeps examples whole and resumes, bad lines named by file:line, eval and predict
rows."""

import json

import numpy as np
import pytest

from conftest import load_config
from llmjax.data import sft
from llmjax.data.tokenizers import TextTokenizer
from llmjax.errors import UserError

WORDS = ['<pad>', '<eos>'] + 'User: Assistant: hi hello how are you fine thanks be brief'.split()
EOS = 1


def word_tokenizer(words=WORDS) -> TextTokenizer:
  """Whitespace words -> ids by their place in `words` (new words are appended)."""
  vocab = {w: i for i, w in enumerate(words)}
  names = lambda: {i: w for w, i in vocab.items()}  # noqa: E731
  return TextTokenizer(lambda text: [vocab.setdefault(w, len(vocab)) for w in text.split()],
                       lambda ids: ' '.join(names().get(i, f'<{i}>') for i in ids), EOS, 64)


def ids(text):
  return [WORDS.index(w) for w in text.split()]


def test_template_and_loss_weights_on_hand_checked_conversations():
  tok = word_tokenizer()
  encoder = sft.Encoder(sft.Template.parse('chat'), tok.encode, EOS)
  turns = sft.parse_record({'prompt': 'hi', 'response': 'hello'})
  got_ids, mask = encoder.conversation(turns)
  # 'User: hi\nAssistant: ' then 'hello' and EOS: the prompt and template weigh 0.
  assert got_ids.tolist() == ids('User: hi Assistant: hello') + [EOS]
  assert mask.tolist() == [0, 0, 0, 1, 1]
  assert encoder.prompt(turns).tolist() == ids('User: hi Assistant:')
  assert encoder.reference(turns).tolist() == ids('hello')

  chat = sft.parse_record({'messages': [
      {'role': 'system', 'content': 'be brief'}, {'role': 'user', 'content': 'hi'},
      {'role': 'assistant', 'content': 'hello'}, {'role': 'user', 'content': 'how are you'},
      {'role': 'assistant', 'content': 'fine thanks'}]})
  got_ids, mask = encoder.conversation(chat)
  # The system message leads the first user turn; every assistant turn is weighted with its EOS.
  assert got_ids.tolist() == (ids('be brief User: hi Assistant: hello') + [EOS] +
                              ids('User: how are you Assistant: fine thanks') + [EOS])
  assert mask.tolist() == [0] * 5 + [1, 1] + [0] * 5 + [1, 1, 1]
  # Generation continues everything before the final response, which is the reference.
  assert encoder.prompt(chat).tolist() == got_ids[:12].tolist()
  assert encoder.reference(chat).tolist() == ids('fine thanks')


def test_named_and_custom_templates():
  assert sft.Template.parse('instruction').user_text('x') == 'Instruction:\nx\n\nResponse:\n'
  assert sft.Template.parse('Q: {prompt} A: {response}').user_text('x', 'sys') == 'sys\n\nQ: x A: '
  for bad in ('{prompt}', '{response} {prompt}', '{prompt}{response} after', 'nonsense'):
    with pytest.raises(UserError, match='chat_template'):
      sft.Template.parse(bad)


def test_too_long_examples_lose_prompt_tokens_from_the_left_or_are_dropped():
  ids_, mask = np.arange(10), np.array([0] * 6 + [1] * 4)
  kept = sft.fit(ids_, mask, 6)
  assert kept[0].tolist() == [4, 5, 6, 7, 8, 9] and kept[1].tolist() == [0, 0, 1, 1, 1, 1]
  assert sft.fit(ids_, mask, 10)[0].tolist() == list(range(10))
  assert sft.fit(ids_, mask, 4) is None  # the response alone fills the row: no prompt left


def make_data(conversations, *, batch_size=4, eval_batch_size=4, seq_len=16, max_new_tokens=4,
              eval_decode_examples=-1, process_index=0, process_count=1):
  return sft.SFTData(conversations, word_tokenizer(), sft.Template.parse('chat'), sft.Phrasing(),
                     seq_len=seq_len, max_new_tokens=max_new_tokens,
                     eval_decode_examples=eval_decode_examples, batch_size=batch_size,
                     eval_batch_size=eval_batch_size, seed=0, process_index=process_index,
                     process_count=process_count)


def numbered(n):
  """n distinct conversations of 5 to 11 tokens: prompt and answer name the example's number."""
  return [[('user', ' '.join(['hi'] * (i % 4) + [f'q{i}'])), ('assistant', f'a{i} ' * (1 + i % 3))]
          for i in range(n)]


def test_packed_train_rows_hold_whole_examples_with_restarting_positions():
  convs = numbered(12)
  data = make_data({'train': convs, 'validation': convs[:2], 'test': convs[:2]})
  expected = set()
  for turns in convs:
    full, mask = data.encoder.conversation(turns)
    expected.add((tuple(full[:-1]), tuple(full[1:]), tuple(mask[1:])))
  seen = set()
  it = data.train_iter()
  for _ in range(6):
    batch = next(it)
    assert batch['inputs'].shape == (4, 16) and batch['weights'].dtype == np.float32
    for row in range(4):
      segments = batch['segment_ids'][row]
      for s in set(segments.tolist()) - {0}:
        where = segments == s
        assert batch['positions'][row][where].tolist() == list(range(where.sum()))
        piece = tuple(tuple(batch[k][row][where].astype(int).tolist())
                      for k in ('inputs', 'targets', 'weights'))
        assert piece in expected  # whole, never split across rows
        seen.add(piece)
      assert not batch['weights'][row][segments == 0].any()
  assert seen == expected  # 6 batches of 4 rows cover the 12 examples at least once

  # Resumable: the stream from step 3 is the uninterrupted stream's continuation.
  again = make_data({'train': convs, 'validation': convs[:2], 'test': convs[:2]})
  tail = again.train_iter(start_step=3)
  full = data.train_iter()
  for _ in range(3):
    next(full)
  for _ in range(2):
    a, b = next(full), next(tail)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_eval_rows_prompts_references_and_decode_bound():
  convs = numbered(6)
  data = make_data({'train': convs, 'validation': convs, 'test': convs}, eval_decode_examples=5,
                   process_index=1, process_count=2)
  batches = list(data.eval_iter('validation'))
  assert len(batches) == 2 and batches[0]['inputs'].shape == (2, 16)  # rows 2-3 of 4 per batch
  row = {k: v[0] for k, v in batches[0].items()}  # example 2
  full, mask = data.encoder.conversation(convs[2])
  n = len(full) - 1
  assert row['inputs'][:n].tolist() == full[:-1].tolist() and not row['segment_ids'][n:].any()
  assert row['weights'][:n].tolist() == mask[1:].tolist()
  prompt = data.encoder.prompt(convs[2])
  assert row['prompt'][-len(prompt):].tolist() == prompt.tolist()  # left-padded to 16 - 4
  assert row['prompt_mask'].tolist() == [0] * (12 - len(prompt)) + [1] * len(prompt)
  reference = data.encoder.reference(convs[2]).tolist()
  assert row['reference'][:row['reference_length']].tolist() == reference
  # Examples 2 and 3 are among the first 5, decoded; the padding rows of the last batch are not.
  assert batches[0]['decode'].tolist() == [1, 1]
  assert batches[1]['decode'].tolist() == [0, 0] and not batches[1]['weights'].any()


BAD_LINES = [
    ('{"prompt": "hi"', 'not JSON'),
    ('["hi", "hello"]', 'not a JSON object'),
    ('{"question": "hi", "answer": "hello"}', 'no "prompt"'),
    ('{"prompt": "hi", "response": "  "}', 'empty response'),
    ('{"prompt": "hi"}', 'must be strings'),
    ('{"messages": [{"role": "assistant", "content": "hello"}]}', 'roles must'),
    ('{"messages": [{"role": "user", "content": "hi"}]}', 'last message'),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', 'message 0'),
]


@pytest.mark.parametrize('line,reason', BAD_LINES)
def test_bad_lines_are_named_by_file_and_line(tmp_path, line, reason):
  path = tmp_path / 'train.jsonl'
  good = json.dumps({'prompt': 'hi', 'response': 'hello'})
  path.write_text('\n'.join([good, '', line, good]) + '\n')
  problems = []
  kept = sft.read_jsonl(path, sft.Phrasing().turns, problems)
  assert [turns for _, turns in kept] == [[('user', 'hi'), ('assistant', 'hello')]] * 2
  assert len(problems) == 1 and problems[0].startswith('train.jsonl:3: ')
  assert reason in problems[0]


def test_predict_batches_from_json_lines_and_plain_text(tmp_path):
  convs = numbered(4)
  data = make_data({'train': convs, 'validation': convs, 'test': convs}, eval_batch_size=4)
  records = [{'prompt': 'hi'}, {'prompt': 'how are you', 'response': 'fine'}, {'messages': [
      {'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'},
      {'role': 'user', 'content': 'how are you'}]}]
  jsonl = tmp_path / 'in.jsonl'
  jsonl.write_text(''.join(json.dumps(r) + '\n' for r in records * 2))
  batches = list(data.predict_iter(jsonl))
  assert [len(inputs) for _, inputs in batches] == [4, 2]
  assert batches[0][1][:3] == records
  batch = batches[1][0]
  assert batch['decode'].tolist() == [1, 1, 0, 0] and batch['prompt'].shape == (4, 12)
  chat = sft.parse_record(records[2], need_response=False)
  np.testing.assert_array_equal(batches[0][0]['prompt'][2][-10:], data.encoder.prompt(chat))
  assert batches[0][0]['prompt_mask'][2].sum() == 10
  text = tmp_path / 'in.txt'
  text.write_text('hi\n\nhow are you\n')
  (batch, inputs), = data.predict_iter(text)
  assert inputs == [{'prompt': 'hi'}, {'prompt': 'how are you'}]
  np.testing.assert_array_equal(batch['prompt'][0][-3:], ids('User: hi Assistant:'))


def test_build_reads_json_lines_files_and_reports_bad_rows(fake_cache, tmp_path):
  config = load_config('gpt_sft', 'tiny')
  lines = [json.dumps({'prompt': f'is {w} good ?', 'response': w}) for w in ('fun', 'dull', 'mess')]
  chat = json.dumps({'messages': [{'role': 'user', 'content': 'hi'},
                                  {'role': 'assistant', 'content': 'hello'}]})
  splits = {}
  for split in ('train', 'validation', 'test'):
    splits[split] = str(tmp_path / f'{split}.jsonl')
    (tmp_path / f'{split}.jsonl').write_text('\n'.join(lines + [chat]) + '\n')
  config.data.update(name='jsonl', splits=splits, instruction='')
  data = sft.build(config)
  assert data.num_examples == {'train': 4, 'validation': 4, 'test': 4}
  (tmp_path / 'train.jsonl').write_text('\n'.join([lines[0], '{"prompt": "hi"}'] + lines[1:]))
  with pytest.raises(UserError, match=r'^train.jsonl:2: .*bad_rows=skip') as e:
    sft.build(config)
  assert '\n' not in str(e.value)
  config.data.bad_rows = 'skip'
  assert sft.build(config).num_examples['train'] == 3
