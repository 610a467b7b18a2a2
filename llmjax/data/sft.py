"""Instruction-tuning (supervised fine-tuning) data: prompt/response conversations -> token rows
whose loss weights cover the responses only.

Sources (`build(config)`):
  * JSON lines files (`config.data.name='jsonl'`, `config.data.splits` naming a file for each of
    train, validation and test), read as `llmjax.data.files` reads a user's files. Each line is
    `{"prompt": ..., "response": ...}` or the chat form `{"messages": [{"role": "system" | "user" |
    "assistant", "content": ...}, ...]}` (an optional system message first, then user and
    assistant turns alternating, ending with an assistant turn). Blank lines are ignored. Bad lines
    (not UTF-8 or JSON, a missing or non-string field, an empty prompt or response, roles out of
    order) stop the run with one error naming the first as file:line, or with
    `config.data.bad_rows='skip'` are left out, counted and named in the log.
  * a TFDS dataset (`config.data.name`) with prompt and response text features
    (`config.data.text_keys`, e.g. ('prompt', 'response')), or a classification dataset phrased as
    instructions: `config.data.instruction` is the prompt with the example's text features in
    braces ('Is this movie review positive or negative?\n{sentence}') and the response is the name
    of its class label (`config.data.label_key`), e.g. 'positive'. Examples are read and tokenized
    once, when the data is built.

Chat template (`config.data.chat_template`): a name from `TEMPLATES` or a string holding `{prompt}`
once and ending with `{response}`, e.g. the default
'Instruction:\\n{prompt}\\n\\nResponse:\\n{response}'.
Each user turn is rendered as the template's text up to `{response}` (the turn's content in place
of `{prompt}`), a system message as its content and a blank line before the first turn; each
assistant turn as its content followed by the tokenizer's EOS id. The rendered user side and each
response are tokenized separately, so a prompt gets the same ids in training, evaluation and
generation. Loss weights are 1 on the response tokens and their EOS, 0 on everything else.

Length: an example is at most `config.data.max_len` next-token pairs (max_len + 1 tokens). A longer
one keeps its last tokens: the prompt is cut from the left. One whose final response (with EOS)
does not fit after at least one prompt token is dropped. Both counts are logged per split.

Batches (numpy, for one process):
  train: packed like `llmjax.data.lm` (grain first-fit packing, endless, shuffled by (seed, epoch),
    resumable at any step): inputs, targets, segment_ids, positions [b, max_len] int32 and
    weights [b, max_len] float32; examples are never split across rows.
  eval: one example per row in stored order, the same keys (segment id 1 on real tokens), plus for
    generation: prompt, prompt_mask [b, P] int32 (the prompt LEFT-padded, P = max_len -
    task.max_new_tokens, longer prompts cut from the left), reference [b, max_len] int32 and
    reference_length [b] (the final response's ids, without EOS), and decode [b] float32 (1 on the
    first `task.eval_decode_examples` examples of the split; 0 on the others and on padding rows).
  predict (`predict_iter(path)`): prompt, prompt_mask and decode, for each line of a file: a JSON
    object like the training records (responses optional), or plain text (the prompt).
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
import dataclasses
import itertools
import pathlib
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from llmjax.data import files
from llmjax.data import lm
from llmjax.data import text as text_lib
from llmjax.data import tfds_sources
from llmjax.data import tokenizers as tokenizers_lib
from llmjax.errors import UserError

TEMPLATES = {
    # Alpaca's markers (Taori et al., 2023) without its preamble and the '#'s, which SentencePiece
    # vocabularies trained on prose often lack.
    'instruction': 'Instruction:\n{prompt}\n\nResponse:\n{response}',
    # Alpaca exactly as it marks turns.
    'alpaca': '### Instruction:\n{prompt}\n\n### Response:\n{response}',
    'chat': 'User: {prompt}\nAssistant: {response}',
}
ROLES = ('system', 'user', 'assistant')


@dataclasses.dataclass(frozen=True)
class Template:
  """A chat template split at its placeholders: a user turn renders as before + content + after."""
  before: str
  after: str

  @classmethod
  def parse(cls, spec: str) -> 'Template':
    text = TEMPLATES.get(spec, spec)
    if text.count('{prompt}') != 1 or text.count('{response}') != 1 or not text.endswith(
        '{response}'):
      raise UserError(f'config.data.chat_template={spec!r} is neither one of '
                      f'{", ".join(TEMPLATES)} nor a string holding {{prompt}} once and '
                      'ending with {response}')
    before, after = text[:-len('{response}')].split('{prompt}')
    return cls(before, after)

  def user_text(self, content: str, system: str | None = None) -> str:
    return (f'{system}\n\n' if system else '') + self.before + content + self.after


def parse_record(record: Any, *, need_response: bool = True) -> list[tuple[str, str]]:
  """A JSON record -> [(role, content), ...]; raises ValueError naming what is wrong.

  The result alternates user and assistant turns after an optional system message and ends with an
  assistant turn, or (need_response=False) with a user turn as well.
  """
  if not isinstance(record, dict):
    raise ValueError(f'a {type(record).__name__}, not an object')
  if 'messages' in record:
    messages = record['messages']
    if not isinstance(messages, list) or not messages:
      raise ValueError('"messages" is not a non-empty list')
    turns = []
    for i, m in enumerate(messages):
      if (not isinstance(m, dict) or m.get('role') not in ROLES
          or not isinstance(m.get('content'), str)):
        raise ValueError(f'message {i} is not {{"role": "system"|"user"|"assistant", "content": '
                         'a string}')
      turns.append((m['role'], m['content']))
  elif 'prompt' in record:
    turns = [('user', record['prompt'])]
    if 'response' in record or need_response:
      turns.append(('assistant', record.get('response')))
    if not all(isinstance(c, str) for _, c in turns):
      raise ValueError('"prompt" and "response" must be strings')
  else:
    raise ValueError('no "prompt" and "response" nor "messages" field')
  body = turns[1:] if turns[0][0] == 'system' else turns
  expected = itertools.cycle(('user', 'assistant'))
  if not body or any(role != want for (role, _), want in zip(body, expected)):
    raise ValueError('roles must be an optional system message, then user and assistant '
                     'alternating')
  if need_response and body[-1][0] != 'assistant':
    raise ValueError('the last message is not the assistant\'s response')
  for role, content in body:
    if not content.strip():
      raise ValueError(f'empty {"response" if role == "assistant" else "prompt"}')
  return turns


@dataclasses.dataclass(frozen=True)
class Encoder:
  """Conversations -> token ids, the same way for training, evaluation and generation."""
  template: Template
  encode: Callable[[str], Sequence[int]]
  eos_id: int

  def conversation(self, turns: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, loss mask) of a whole conversation: mask 1 on each response and its EOS."""
    ids, mask = [], []
    system = turns[0][1] if turns[0][0] == 'system' else None
    for role, content in turns[1:] if system is not None else turns:
      if role == 'user':
        piece, weight = list(self.encode(self.template.user_text(content, system))), 0
        system = None
      else:
        piece, weight = list(self.encode(content)) + [self.eos_id], 1
      ids += piece
      mask += [weight] * len(piece)
    return np.asarray(ids, np.int32), np.asarray(mask, np.int32)

  def prompt(self, turns: list[tuple[str, str]]) -> np.ndarray:
    """The ids a model continues to produce the final response: everything before it."""
    if turns[-1][0] == 'assistant':
      turns = turns[:-1]
    return self.conversation(turns + [('assistant', '')])[0][:-1]  # without the empty turn's EOS

  def reference(self, turns: list[tuple[str, str]]) -> np.ndarray:
    """The ids of the final response (without EOS); empty when the conversation ends with a user."""
    return np.asarray(self.encode(turns[-1][1]) if turns[-1][0] == 'assistant' else [], np.int32)


def fit(ids: np.ndarray, mask: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
  """The last `limit` tokens of an example, or None when its final response does not fit after at
  least one prompt token."""
  if len(ids) <= limit:
    return ids, mask
  # The final response (with its EOS): the trailing run of mask 1.
  response = int(np.argmin(mask[::-1])) if (mask == 0).any() else len(mask)
  if response >= limit:
    return None
  return ids[-limit:], mask[-limit:]


def read_jsonl(path: str | pathlib.Path, to_turns: Callable[[Any], list[tuple[str, str]]],
               problems: list[str]) -> list[tuple[Any, list[tuple[str, str]]]]:
  """(record, conversation) for each usable line of a JSON lines file (read as
  `llmjax.data.files` reads a user's files); each bad line adds 'file:line: why' to `problems`."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise UserError(f'{path}: no such file: fix config.data.splits')
  return conversations(((f'{path.name}:{n}', record, problem)
                        for n, record, problem in files.read_records(path, 'jsonl')),
                       to_turns, problems)


def conversations(located: Iterable[tuple[str, Any, str]],
                  to_turns: Callable[[Any], list[tuple[str, str]]],
                  problems: list[str]) -> list[tuple[Any, list[tuple[str, str]]]]:
  """(record, conversation) of each (location, record, problem) triple whose record is not None
  and makes a conversation (`to_turns` raises ValueError saying why not); the others add
  'location: why' to `problems`."""
  pairs = []
  for where, record, problem in located:
    if record is None:
      problems.append(f'{where}: {problem}')
      continue
    try:
      pairs.append((record, to_turns(record)))
    except ValueError as e:
      problems.append(f'{where}: {e}')
  return pairs


def read_prompts(path: str | pathlib.Path, to_turns: Callable[[Any], list[tuple[str, str]]],
                 text_field: str | None) -> list[tuple[Any, list[tuple[str, str]]]]:
  """(record, conversation) per non-blank line of a file to predict for: a JSON object, or plain
  text that fills `text_field`. A line that makes no prompt is a UserError naming file:line."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise UserError(f'--input={path}: no such file')
  lines = path.read_bytes().splitlines()
  pairs = []
  for lineno, record, problem in files.read_records(path, 'jsonl'):
    where = f'{path}:{lineno}'
    if record is None:  # Not a JSON object: a line of plain text.
      if text_field is None:
        raise UserError(f'{where}: {problem}: write one JSON object per line')
      try:
        record = {text_field: lines[lineno - 1].decode('utf-8')}
      except UnicodeDecodeError:
        raise UserError(f'{where}: not UTF-8: save the file as UTF-8') from None
    try:
      pairs.append((record, to_turns(record)))
    except ValueError as e:
      raise UserError(f'{where}: {e}: fix the line') from None
  if not pairs:
    raise UserError(f'{path} holds no input lines')
  return pairs


@dataclasses.dataclass(frozen=True)
class Phrasing:
  """How a source's records (a JSON line, or a TFDS example as a dict of str and int) become
  conversations, and which field a line of plain text fills when predicting.

  Records are the chat form of `parse_record` (JSON lines files), or carry the TFDS dataset's
  features: `text_keys` = (prompt, response) features, or, with `instruction`, the text features it
  names and the class label `label_key` whose name (`label_names`) is the response.
  """
  text_keys: tuple[str, ...] = ()
  instruction: str = ''
  label_key: str = ''
  label_names: tuple[str, ...] = ()

  @property
  def text_field(self) -> str | None:
    """The field a plain-text line fills; None when a record needs several text fields."""
    if self.instruction:
      return self.text_keys[0] if len(self.text_keys) == 1 else None
    return self.text_keys[0] if self.text_keys else 'prompt'

  def turns(self, record: Any, *, need_response: bool = True) -> list[tuple[str, str]]:
    if not self.text_keys or not isinstance(record, dict):
      return parse_record(record, need_response=need_response)
    fields = {}
    if self.instruction:
      texts = {}
      for key in self.text_keys:
        if not isinstance(record.get(key), str):
          raise ValueError(f'field {key!r} is missing or not a string')
        texts[key] = record[key]
      fields['prompt'] = self.instruction.format(**texts)
      label = record.get(self.label_key)
      if isinstance(label, int) and 0 <= label < len(self.label_names):
        fields['response'] = self.label_names[label]
      elif isinstance(label, str) and label in self.label_names:
        fields['response'] = label
      elif label is not None:
        raise ValueError(f'{self.label_key}={label!r} is not one of {list(self.label_names)}')
    else:
      prompt, response = self.text_keys
      fields['prompt'] = record.get(prompt)
      if response in record:
        fields['response'] = record[response]
    return parse_record(fields, need_response=need_response)


def open_tfds(data: ml_collections.ConfigDict) -> tuple[Phrasing, dict[str, Iterator]]:
  """The phrasing of `data.name` and, per split, (location, record, '') triples for
  `conversations`: each example as a record of str (text features) and int (the class label)."""
  sources = tfds_sources.open_splits(data.name, dict(data.splits),
                                     tfds_sources.resolve_data_dir(data))
  features = next(iter(sources.values())).dataset_info.features
  keys = tuple(data.text_keys)
  for key in keys:
    if key not in features or not isinstance(features[key], tfds.features.Text):
      raise UserError(f'dataset {data.name!r} has no text feature {key!r} (features: '
                      f'{sorted(features.keys())}): set config.data.text_keys')
  names = ()
  if data.instruction:
    label = features[data.label_key] if data.label_key in features else None
    if not isinstance(label, tfds.features.ClassLabel):
      raise UserError(f'dataset {data.name!r} has no class label {data.label_key!r} to answer '
                      'config.data.instruction with: set config.data.label_key')
    names = tuple(label.names)
    try:
      data.instruction.format(**dict.fromkeys(keys, ''))
    except (KeyError, IndexError, ValueError) as e:
      raise UserError(f'config.data.instruction={data.instruction!r} must name only the text '
                      f'features {keys} in braces ({e!r})') from None
  elif len(keys) != 2:
    raise UserError(f'config.data.text_keys={keys} must name the prompt and response features '
                    "of an instruction dataset, e.g. ('prompt', 'response'), or set "
                    'config.data.instruction to phrase a classification dataset')
  phrasing = Phrasing(keys, data.instruction, data.label_key if names else '', names)

  def record(example):
    fields = {k: text_lib.as_str(example[k]) for k in keys}
    if names:
      fields[data.label_key] = int(example[data.label_key])
    return fields

  def located(split, source):
    return ((f'{data.name} {split}[{i}]', record(source[i]), '') for i in range(len(source)))

  return phrasing, {split: located(split, source) for split, source in sources.items()}


class SFTData:
  """Prompt/response data for one process: packed train rows, unpacked eval rows with prompts to
  generate from, and predict batches (see the module docstring)."""

  # Packed rows have no fixed number per epoch: runs are sized in steps.
  steps_per_epoch = None

  def __init__(self, conversations: dict[str, list[list[tuple[str, str]]]],
               tokenizer: tokenizers_lib.TextTokenizer, template: Template, phrasing: Phrasing, *,
               seq_len: int, max_new_tokens: int, eval_decode_examples: int, batch_size: int,
               eval_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1):
    if max_new_tokens < 1 or seq_len - max_new_tokens < 1:
      raise UserError(f'config.task.max_new_tokens={max_new_tokens} must be in [1, data.max_len='
                      f'{seq_len}): generated tokens and the prompt share the model\'s context')
    self.tokenizer = tokenizer
    self.encoder = encoder = Encoder(template, tokenizer.encode, tokenizer.eos_id)
    self.phrasing = phrasing
    self.vocab_size = tokenizer.vocab_size
    self._seq_len = seq_len
    self._prompt_len = seq_len - max_new_tokens
    self._decode_examples = eval_decode_examples
    self._eval_batch_size = eval_batch_size
    self._eval_rows = eval_batch_size // process_count
    self._process_index = process_index
    self._examples = {}  # split -> [(ids, mask, prompt ids, reference ids)]
    for split, convs in conversations.items():
      examples, truncated = [], 0
      for turns in convs:
        ids, mask = encoder.conversation(turns)
        fitted = fit(ids, mask, seq_len + 1)
        if fitted is None:
          continue
        truncated += len(fitted[0]) < len(ids)
        examples.append((*fitted, encoder.prompt(turns), encoder.reference(turns)))
      self._examples[split] = examples
      logging.info('sft %s: %d examples; %d prompts cut from the left and %d examples dropped '
                   '(final response longer than data.max_len=%d)', split, len(examples), truncated,
                   len(convs) - len(examples), seq_len)
    self.num_examples = {split: len(e) for split, e in self._examples.items()}
    if not self.num_examples.get('train'):
      raise UserError('the train split holds no usable example: check config.data.files / '
                      'config.data.name, or raise config.data.max_len')
    self._packed = lm.LMData(
        {split: [e[:2] for e in examples] for split, examples in self._examples.items()},
        lambda pair: pair, seq_len=seq_len, batch_size=batch_size,
        eval_batch_size=eval_batch_size, seed=seed, vocab_size=tokenizer.vocab_size,
        process_index=process_index, process_count=process_count, example_format=packed_format())

  def train_iter(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """This process's endless packed train batches from global step `start_step`."""
    return self._packed.train_iter(start_step)

  def eval_iter(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of `split` in stored order, one example a row; the last batch padded."""
    if split not in self._examples:
      raise UserError(f'no split {split!r} is configured (have {sorted(self._examples)}): add it '
                      'to config.data.splits')
    examples = self._examples[split]
    limit = len(examples) if self._decode_examples < 0 else self._decode_examples
    for start in range(0, len(examples), self._eval_batch_size):
      rows = [self._eval_row(*e, decode=start + i < limit)
              for i, e in enumerate(examples[start:start + self._eval_batch_size])]
      yield self._local(rows)

  def predict_iter(self, path: str | pathlib.Path) -> Iterator[tuple[dict[str, np.ndarray], list]]:
    """(batch, inputs) for a file of prompts, one per line: a JSON object like the training
    records (responses optional), or plain text, the prompt (or the one text feature an
    instruction phrases). `inputs` are the records of the real rows of the global batch."""
    records = read_prompts(path, lambda r: self.phrasing.turns(r, need_response=False),
                           self.phrasing.text_field)
    for start in range(0, len(records), self._eval_batch_size):
      chunk = records[start:start + self._eval_batch_size]
      rows = [{**self._prompt_row(self.encoder.prompt(turns)), 'decode': np.float32(1)}
              for _, turns in chunk]
      yield self._local(rows), [record for record, _ in chunk]

  def _prompt_row(self, prompt: np.ndarray) -> dict[str, np.ndarray]:
    prompt = prompt[-self._prompt_len:]
    ids = np.zeros(self._prompt_len, np.int32)
    ids[len(ids) - len(prompt):] = prompt
    return {'prompt': ids, 'prompt_mask': (np.arange(self._prompt_len) >=
                                           self._prompt_len - len(prompt)).astype(np.int32)}

  def _eval_row(self, ids, mask, prompt, reference, *, decode: bool) -> dict[str, np.ndarray]:
    length = len(ids) - 1
    row = {k: np.zeros(self._seq_len, np.int32)
           for k in ('inputs', 'targets', 'segment_ids', 'positions')}
    row['inputs'][:length] = ids[:-1]
    row['targets'][:length] = ids[1:]
    row['segment_ids'][:length] = 1
    row['positions'][:length] = np.arange(length)
    row['weights'] = np.zeros(self._seq_len, np.float32)
    row['weights'][:length] = mask[1:]
    row['reference'] = np.zeros(self._seq_len, np.int32)
    reference = reference[:self._seq_len]
    row['reference'][:len(reference)] = reference
    row['reference_length'] = np.int32(len(reference))
    row['decode'] = np.float32(decode)
    return {**row, **self._prompt_row(prompt)}

  def _local(self, rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The global batch of `rows` padded with empty rows, as this process's slice."""
    empty = {k: np.zeros_like(v) for k, v in rows[0].items()}
    empty['prompt_mask'][-1] = 1  # a padding row still decodes from one (pad) token
    rows = rows + [empty] * (self._eval_batch_size - len(rows))
    lo = self._process_index * self._eval_rows
    return {k: np.stack([r[k] for r in rows[lo:lo + self._eval_rows]]) for k in rows[0]}


def _split_example(pair, seq_len, rng):
  """One packed example per (ids, mask): next-token pairs, weighted by the target's mask."""
  del seq_len, rng  # `fit` already bounded the length; nothing is random.
  ids, mask = pair
  return [{'inputs': ids[:-1], 'targets': ids[1:], 'weights': mask[1:]}]


def _to_row(packed):
  row = lm.NEXT_TOKEN.to_row(packed)
  row['weights'] = packed['weights'].astype(np.float32)
  return row


def packed_format() -> 'lm.ExampleFormat':
  """Next-token rows whose weights are the examples' loss masks. (Built on call: llmjax.tasks
  imports this module while llmjax.data.lm may still be initialising.)"""
  return lm.ExampleFormat(
      split=_split_example, to_row=_to_row, empty_row=lm.NEXT_TOKEN.empty_row,
      lengths=lambda seq_len: {'inputs': seq_len, 'targets': seq_len, 'weights': seq_len})


def build(config: ml_collections.ConfigDict, *, process_index: int = 0,
          process_count: int = 1) -> SFTData:
  """Reads the configured conversations and tokenizer (see the module docstring)."""
  data = config.data
  if config.task.eval_decode_examples == 0:
    raise UserError('config.task.eval_decode_examples=0 leaves exact_match undefined: decode at '
                    'least 1 example per evaluation, or -1 for all')
  tok = tokenizers_lib.text_tokenizer(config)
  problems = []
  if data.name in files.FORMATS:
    if data.name != 'jsonl':
      raise UserError(f'config.data.name={data.name!r}: instruction data is read from JSON lines '
                      'files: set data.name=jsonl')
    empty = [split for split, path in data.splits.items() if not path]
    if empty:
      raise UserError(f'config.data.splits has no file for {empty}: name a JSON lines file for '
                      'each of train, validation and test')
    phrasing = Phrasing()
    records = {split: read_jsonl(path, phrasing.turns, problems)
               for split, path in data.splits.items()}
  else:
    phrasing, located = open_tfds(data)
    records = {split: conversations(items, phrasing.turns, problems)
               for split, items in located.items()}
  files.report(problems, data.bad_rows,
               ', '.join(data.splits.values()) if data.name == 'jsonl' else data.name)
  turns = {split: [t for _, t in pairs] for split, pairs in records.items()}
  return SFTData(turns, tok, Template.parse(data.chat_template), phrasing,
                 seq_len=data.max_len, max_new_tokens=config.task.max_new_tokens,
                 eval_decode_examples=config.task.eval_decode_examples,
                 batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                 seed=config.seed, process_index=process_index, process_count=process_count)
