"""Where a compiled step's time goes: a `jax.profiler` trace read back into time per operation.

`llmjax.bench --profile=DIR` traces a few steps and prints `summarize`'s tables; the trace stays in DIR
for TensorBoard's profile plugin, XProf or Perfetto. An operation is an instruction of the step's
optimised HLO module: on a CPU the executor's spans (one per fusion, oneDNN call or copy, on XLA's
threads), on a GPU the kernels on the device's streams (named by the instruction they run, `hlo_op`).
Operations that run side by side (XLA:CPU runs independent ones on its threads at once) share their
time evenly, so the times add up to the time the device was busy. Matrix products are counted from
the dots in the HLO (2 x output size x contracted size), so each product's FLOP/s is printed beside it.
"""

import collections
import glob
import gzip
import json
import math
import os
import re
import tempfile

from llmjax import model_info
from llmjax.errors import UserError

TOP = 12  # single operations listed, the slowest first
KINDS = 15  # kinds of operation listed, the busiest first
_TYPE = r'\((?:[^()]|\([^()]*\))*\)|[^\s(]+'  # a tuple (possibly of tuples) or one array type


def instructions(hlo_text: str) -> dict[str, dict]:
  """Each instruction of an HLO module's text: {name: {'type': result type, 'operands': [names],
  'op_name': the JAX operation it came from, 'flops': its matrix products' FLOPs}}, layouts dropped
  from the types. A fusion's FLOPs are those of the dots it computes (oneDNN and YNNPACK products on a
  CPU, Triton's on a GPU); library calls XLA makes as custom calls (cuBLAS) count none."""
  found, members, calls = {}, {}, {}
  computation = None
  for line in hlo_text.splitlines():
    head = re.match(r'^(?:ENTRY\s+)?%?([\w.\-]+) \(.*\) -> .*\{$', line)
    if head:
      computation = members.setdefault(head.group(1), [])
      continue
    m = re.match(rf'^\s*(?:ROOT\s+)?%?([\w.\-]+) = ({_TYPE}) ([\w\-]+)\(([^)]*)\)(.*)$', line)
    if not m:
      continue
    name, type_, opcode, operands, rest = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    found[name] = {'type': re.sub(r'\{[^{}]*\}|/\*[^*]*\*/', '', type_),
                   'operands': re.findall(r'%?([\w.\-]+)', operands),
                   'op_name': op_name.group(1) if op_name else '', 'flops': 0}
    if computation is not None:
      computation.append(name)
    if opcode == 'dot':
      contracting = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest)
      lhs = found.get(found[name]['operands'][0], {}).get('type', '')
      if contracting and lhs:
        dims = _dims(lhs)
        k = math.prod(dims[int(i)] for i in contracting.group(1).split(',') if i)
        found[name]['flops'] = 2 * math.prod(_dims(found[name]['type'])) * k
    elif opcode == 'fusion':
      calls[name] = re.findall(r'calls=%?([\w.\-]+)', rest)
  for name, called in calls.items():  # A fusion's body is printed before the fusion's caller.
    found[name]['flops'] = sum(found[i]['flops'] for c in called for i in members.get(c, ()))
  return found


def _dims(array_type: str) -> list[int]:
  """The dimensions of an array type such as 'f32[464,512]' ([] for a scalar)."""
  return [int(d) for d in re.findall(r'\d+', array_type.partition('[')[2])]


def signature(name: str, table: dict[str, dict]) -> str:
  """'result <- operand types' of an instruction, e.g. 'f32[464,528] <- f32[464,32128], f32[32128,528]'."""
  if name not in table:
    return '?'
  operands = [table[o]['type'] for o in table[name]['operands'] if o in table]
  return table[name]['type'] + (' <- ' + ', '.join(operands) if operands else '')


def module_name(hlo_text: str) -> str:
  """The name the profiler gives the module's operations (`hlo_module`): the text's HloModule."""
  m = re.match(r'\s*HloModule ([\w.\-]+)', hlo_text)
  return m.group(1) if m else ''


def prepare(log_dir: str) -> None:
  """Creates `log_dir` for a trace, or says in one line why it cannot be written: checked before
  the steps run, so that a bad path loses no measurement."""
  try:
    os.makedirs(log_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=log_dir):
      pass
  except OSError as e:
    raise UserError(f'--profile={log_dir}: cannot write a trace there ({e.strerror}): '
                    f'give a directory this process can create and write') from None


def trace_file(log_dir: str) -> str | None:
  """The newest trace-viewer file `jax.profiler.trace(log_dir)` wrote, or None."""
  files = glob.glob(os.path.join(log_dir, 'plugins', 'profile', '*', '*.trace.json.gz'))
  return max(files, key=os.path.getmtime) if files else None


def operation_times(events: list[dict], module: str) -> dict[str, tuple[float, int]]:
  """{instruction: (busy microseconds, runs)} of `module`'s operations among trace events.

  Device events are used where the trace has any of the module's (a GPU's kernels), else the host's
  (a CPU's). At each moment the running operations share the time evenly (a loop and the
  operations of its body too)."""
  processes = {e['pid']: e['args']['name'] for e in events
               if e.get('ph') == 'M' and e.get('name') == 'process_name'}
  ops = [e for e in events if e.get('ph') == 'X' and e.get('args', {}).get('hlo_module') == module
         and e['args'].get('hlo_op')]
  on_device = [e for e in ops if processes.get(e['pid'], '').startswith('/device:')]
  ops = on_device or ops
  # Sweep over the start and end of every operation; between two of these points the
  # operations running divide the interval.
  points = sorted([(e['ts'], 1, i) for i, e in enumerate(ops)]
                  + [(e['ts'] + e['dur'], 0, i) for i, e in enumerate(ops)])
  busy = collections.defaultdict(float)
  running, last = set(), None
  for t, starts, i in points:
    if running:
      for j in running:
        busy[ops[j]['args']['hlo_op']] += (t - last) / len(running)
    last = t
    (running.add if starts else running.discard)(i)
  runs = collections.Counter(e['args']['hlo_op'] for e in ops)
  return {name: (busy[name], runs[name]) for name in runs}


def kind(instruction: str) -> str:
  """The kind of an instruction: its name without XLA's numeric suffix (`onednn_fusion.12`)."""
  return re.sub(r'\.\d+$', '', instruction)


def summarize(log_dir: str, hlo_text: str, steps: int, step_s: float) -> dict:
  """Per step, from the trace of `steps` steps in `log_dir` of the module in `hlo_text`: busy time
  (ms) and runs by kind of operation, and the slowest single operations with their result types."""
  path = trace_file(log_dir)
  if path is None:
    return {'log_dir': log_dir, 'steps': steps, 'step_ms': 1e3 * step_s, 'kinds': {}, 'top': [],
            'note': 'no trace-viewer file was written'}
  with gzip.open(path, 'rt') as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  module = module_name(hlo_text)
  times = operation_times(events, module)
  kinds = collections.defaultdict(lambda: [0.0, 0])
  for name, (busy, runs) in times.items():
    kinds[kind(name)][0] += busy
    kinds[kind(name)][1] += runs
  per_step = lambda us: us / 1e3 / steps  # noqa: E731
  table = instructions(hlo_text)
  flops = {name: table.get(name, {}).get('flops', 0) for name in times}

  def rate(name):  # FLOP/s of an operation over the time it had
    busy, runs = times[name]
    return flops[name] * runs / (busy * 1e-6) if busy else 0.

  products = [name for name in times if flops[name]]
  top = sorted(times.items(), key=lambda item: -item[1][0])[:TOP]
  return {
      'log_dir': log_dir, 'trace': path, 'steps': steps, 'step_ms': 1e3 * step_s,
      'busy_ms': per_step(sum(busy for busy, _ in times.values())),
      'products': {'ms': per_step(sum(times[name][0] for name in products)),
                   'flops': sum(flops[name] * times[name][1] for name in products) / steps},
      'kinds': {k: {'ms': per_step(busy), 'runs': runs / steps}
                for k, (busy, runs) in sorted(kinds.items(), key=lambda item: -item[1][0])},
      'top': [{'name': name, 'ms': per_step(busy), 'runs': runs / steps, 'flops': flops[name],
               'flops_per_s': rate(name), 'signature': signature(name, table),
               'op_name': table.get(name, {}).get('op_name', '')}
              for name, (busy, runs) in top],
      'note': '' if times else f'no operation of the module {module!r} in {path}',
  }


def format_summary(s: dict) -> str:
  """`summarize`'s figures as two tables: by kind of operation (the KINDS busiest, then the rest
  together), then the slowest single operations with their types and the JAX operation each ran."""
  steps = f'{s["steps"]} step' + ('s' if s['steps'] != 1 else '')
  lines = [f'profile: {steps} traced, {s["step_ms"]:,.1f} ms each (median), in {s["log_dir"]}']
  if not s['kinds']:
    return '\n'.join(lines + [f'  no operations of the step found: {s["note"]}'])
  lines.append(f'  busy {s["busy_ms"]:,.1f} ms per step; operations running side by side share '
               'their time')
  products = s['products']
  if products['flops']:
    lines.append(f'  matrix products (XLA dots) {products["ms"]:,.1f} ms per step '
                 f'({100 * products["ms"] / s["busy_ms"]:.1f}%), '
                 f'{model_info.human(products["flops"], "FLOP")} at '
                 f'{model_info.human(products["flops"] / (products["ms"] * 1e-3), "FLOP/s")}')
  rows = list(s['kinds'].items())
  if len(rows) > KINDS:
    rest = rows[KINDS:]
    rows = rows[:KINDS] + [(f'({len(rest)} other kinds)', {'ms': sum(v['ms'] for _, v in rest),
                                                          'runs': sum(v['runs'] for _, v in rest)})]
  width = max(len(k) for k, _ in rows)
  lines.append(f'  {"kind":{width}s}  {"ms/step":>9s}  {"share":>6s}  {"runs/step":>9s}')
  for k, v in rows:
    lines.append(f'  {k:{width}s}  {v["ms"]:9,.1f}  {100 * v["ms"] / s["busy_ms"]:5.1f}%  '
                 f'{v["runs"]:9,.1f}')
  width = max(len(t['name']) for t in s['top'])
  lines.append(f'  {"slowest operations":{width}s}  {"ms/step":>9s}  {"runs/step":>9s}  '
               f'{"FLOP/s":>12s}  result <- operands (JAX operation)')
  for t in s['top']:
    source = re.sub(r'^jit\([^)]*\)/', '', t['op_name'])
    rate = model_info.human(t['flops_per_s'], 'FLOP/s') if t['flops_per_s'] else '-'
    lines.append(f'  {t["name"]:{width}s}  {t["ms"]:9,.1f}  {t["runs"]:9,.1f}  {rate:>12s}  '
                 f'{t["signature"]}' + (f' ({source})' if source else ''))
  return '\n'.join(lines)
