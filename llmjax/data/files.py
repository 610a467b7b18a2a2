"""A user's own labelled text: CSV, TSV or JSON-lines files, read without writing any code.

`config.data.name` is the format (`csv`, `tsv` or `jsonl`) and `config.data.splits` maps each split
to a file: `{'train': 'data/train.csv', 'validation': 'data/dev.csv', 'test': ''}`. A split left
empty is carved out of the train file: 10% each for validation and test, chosen by a hash of the
row's text, so the carving is deterministic, independent of row order, and identical texts never
land on both sides. CSV and TSV files start with a header naming the columns; `config.data.
text_keys` names one text column (or two for sentence pairs) and `config.data.label_key` the label.

Class labels are discovered: the sorted distinct values of the train file's label column (numbers
sorted as numbers). A run saves them in its config (`data.label_names`), its checkpoints and its
exported model, and a resumed or evaluated run must find the same set. A regression target must
parse as a finite number.

Bad rows (not UTF-8, not valid JSON or CSV, a missing or empty text or label, a label the train file
never shows) are reported with file and line: with `config.data.bad_rows='error'` (the default) the
run stops with one line naming the first of them; with 'skip' they are left out and counted in the
log. Nothing is ever guessed.
"""

import csv
import dataclasses
import hashlib
import io
import json
import math
import pathlib
from collections.abc import Iterator, Sequence

from absl import logging

from llmjax.errors import UserError

FORMATS = ('csv', 'tsv', 'jsonl')
# The share of the train file that becomes each missing evaluation split.
CARVE_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Row:
  """One example: its texts, its label as written in the file, and where it came from."""
  texts: tuple[str, ...]
  label: str
  where: str  # 'file:line'


def read_records(path: pathlib.Path, fmt: str) -> Iterator[tuple[int, dict | None, str]]:
  """(line number, record or None, problem) per row of a CSV/TSV (after its header) or JSONL file;
  a record of None comes with the reason it could not be read."""
  raw = path.read_bytes()
  if fmt == 'jsonl':
    for lineno, line in enumerate(raw.splitlines(), start=1):
      try:
        text = line.decode('utf-8')
      except UnicodeDecodeError:
        yield lineno, None, 'not UTF-8'
        continue
      if not text.strip():
        continue
      try:
        record = json.loads(text)
      except json.JSONDecodeError as e:
        yield lineno, None, f'not JSON ({e.msg})'
        continue
      if not isinstance(record, dict):
        yield lineno, None, 'not a JSON object'
        continue
      yield lineno, record, ''
    return
  try:
    text = raw.decode('utf-8-sig')  # Spreadsheet exports often start with a byte-order mark.
  except UnicodeDecodeError as e:
    lineno = raw[:e.start].count(b'\n') + 1
    raise UserError(f'{path}:{lineno}: not UTF-8: save the file as UTF-8') from None
  reader = csv.reader(io.StringIO(text, newline=''), delimiter='\t' if fmt == 'tsv' else ',')
  try:
    header = next(reader)
  except StopIteration:
    raise UserError(f'{path} is empty: it needs a header row naming the columns') from None
  previous = reader.line_num
  try:
    for fields in reader:
      lineno, previous = previous + 1, reader.line_num  # A quoted field may span several lines.
      if not any(f.strip() for f in fields):
        continue
      if len(fields) != len(header):
        yield lineno, None, f'{len(fields)} fields where the header has {len(header)}'
        continue
      yield lineno, dict(zip(header, fields)), ''
  except csv.Error as e:
    raise UserError(f'{path}:{reader.line_num}: not valid {fmt.upper()} ({e}): fix the quoting '
                    'on that line') from None


def read_rows(path: pathlib.Path, fmt: str, text_keys: Sequence[str], label_key: str | None,
              problems: list[str]) -> list[Row]:
  """The rows of one file; each unusable row adds 'file:line: why' to `problems`. label_key None:
  unlabelled inputs (prediction)."""
  rows = []
  keys = (*text_keys, *([label_key] if label_key else []))
  for lineno, record, problem in read_records(path, fmt):
    where = f'{path.name}:{lineno}'
    if record is None:
      problems.append(f'{where}: {problem}')
      continue
    missing = [k for k in keys if k not in record]
    if missing:
      problems.append(f'{where}: no {missing[0]!r} field (has {sorted(record)})')
      continue
    values = [record[k] for k in keys]
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
      empty = keys[next(i for i, v in enumerate(values)
                        if v is None or (isinstance(v, str) and not v.strip()))]
      problems.append(f'{where}: empty {empty!r}')
      continue
    if any(not isinstance(v, (str, int, float)) or isinstance(v, bool) for v in values):
      problems.append(f'{where}: {keys[0]!r}..{keys[-1]!r} must be strings or numbers')
      continue
    texts = tuple(str(v) for v in values[:len(text_keys)])
    label = str(values[-1]).strip() if label_key else ''
    rows.append(Row(texts, label, where))
  return rows


def report(problems: list[str], bad_rows: str, path_hint: str) -> None:
  """Stops on bad rows (bad_rows='error') or logs how many were skipped ('skip')."""
  if not problems:
    return
  if bad_rows == 'error':
    more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
    raise UserError(f'{problems[0]}{more}: fix or remove the bad rows of {path_hint}, or pass '
                    "--config.data.bad_rows=skip to leave them out")
  logging.warning('Skipped %d bad rows of %s: %s', len(problems), path_hint,
                  '; '.join(problems[:5]) + (' ...' if len(problems) > 5 else ''))


def _carve_bucket(row: Row) -> str:
  """'train', 'validation' or 'test' for a row of the train file, by a hash of its texts."""
  digest = hashlib.sha256('\x1f'.join(row.texts).encode('utf-8')).digest()
  u = int.from_bytes(digest[:8], 'little') / 2**64
  return 'validation' if u < CARVE_FRACTION else 'test' if u < 2 * CARVE_FRACTION else 'train'


def _natural_order(labels: set[str]) -> list[str]:
  try:
    return sorted(labels, key=float)
  except ValueError:
    return sorted(labels)


def open_files(data, regression: bool) -> tuple[dict[str, list[tuple[tuple[str, ...], object]]],
                                                list[str]]:
  """Reads the configured files: ({split: [(texts, label)]}, label names ([] for regression)).

  Labels are class ids into the label names, or floats for regression.
  """
  fmt = data.name
  text_keys = (data.text_keys,) if isinstance(data.text_keys, str) else tuple(data.text_keys)
  specs = dict(data.splits)
  if not specs.get('train'):
    raise UserError(f'config.data.splits has no train file for data.name={fmt!r}: pass e.g. '
                    "--config.data.splits.train=data/train.csv")
  problems = []
  rows = {}
  for split, spec in specs.items():
    if not spec:
      continue
    path = pathlib.Path(spec).expanduser()
    if not path.is_file():
      raise UserError(f'config.data.splits.{split}={spec!r}: no such file')
    rows[split] = read_rows(path, fmt, text_keys, data.label_key, problems)
  carved = [s for s in ('validation', 'test') if s in specs and not specs[s]]
  if carved:
    whole, rows['train'] = rows['train'], []
    for s in carved:
      rows[s] = []
    for row in whole:
      bucket = _carve_bucket(row)
      rows[bucket if bucket == 'train' or bucket in carved else 'train'].append(row)

  if regression:
    label_names = []
  else:
    found = {row.label for row in rows['train']}
    saved = list(data.get('label_names', ()))
    if saved and not found <= set(saved):
      unknown = sorted(found - set(saved))[0]
      where = next(r.where for r in rows['train'] if r.label == unknown)
      raise UserError(f'{where}: label {unknown!r} is not one of the labels this run was started '
                      f'with {saved}: use a new --workdir for a new label set')
    label_names = saved or _natural_order(found)
  ids = {name: i for i, name in enumerate(label_names)}
  splits = {}
  for split, split_rows in rows.items():
    splits[split] = []
    for row in split_rows:
      if regression:
        try:
          label = float(row.label)
        except ValueError:
          label = math.nan
        if not math.isfinite(label):
          problems.append(f'{row.where}: label {row.label!r} is not a finite number')
          continue
      elif row.label in ids:
        label = ids[row.label]
      else:
        problems.append(f'{row.where}: label {row.label!r} never occurs in the train file '
                        f'(labels: {label_names})')
        continue
      splits[split].append((row.texts, label))
  report(problems, data.bad_rows, ', '.join(sorted({s for s in specs.values() if s})))
  for split, examples in splits.items():
    if not examples:
      raise UserError(f'the {split} split of {specs.get(split) or specs["train"]} has no usable '
                      'rows: give it more data or its own file')
  logging.info('data %s: %s rows, labels %s', fmt, {s: len(e) for s, e in splits.items()},
               label_names or 'real-valued')
  return splits, label_names


def read_inputs(path, text_keys: Sequence[str]) -> list[dict]:
  """The inputs to predict for, one per line of `path`: JSON objects holding the `text_keys`
  fields (other fields are kept and echoed back), or, for a single text field, plain text lines.
  A line that fits neither is a UserError naming file and line."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise UserError(f'--input={path}: no such file')
  inputs = []
  for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
    try:
      text = line.decode('utf-8')
    except UnicodeDecodeError:
      raise UserError(f'{path}:{lineno}: not UTF-8: save the file as UTF-8') from None
    if not text.strip():
      continue
    record = None
    if text.lstrip().startswith('{'):
      try:
        record = json.loads(text)
      except json.JSONDecodeError:
        pass
    if not isinstance(record, dict):
      if len(text_keys) != 1:
        raise UserError(f'{path}:{lineno}: not a JSON object with the fields {list(text_keys)}: '
                        'write one JSON object per line')
      record = {text_keys[0]: text}
    missing = [k for k in text_keys if not isinstance(record.get(k), str)]
    if missing:
      raise UserError(f'{path}:{lineno}: no text field {missing[0]!r}: give each line the fields '
                      f'{list(text_keys)}')
    inputs.append(record)
  if not inputs:
    raise UserError(f'{path} holds no input lines')
  return inputs
