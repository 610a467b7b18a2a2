"""The one metric writer (TensorBoard event files and `metrics.jsonl`), the console progress line,
and the end-of-run summary. Only process 0 writes files; every process logs.
"""

import json
import pathlib
import sys
import time


def _import_tensorboardx():
  """tensorboardX, imported without torch: it loads torch when it can (2.4 s at every start) only to
  accept torch tensors, which llmjax never passes. Torch stays importable afterwards."""
  if 'torch' in sys.modules:
    import tensorboardX
    return tensorboardX
  sys.modules['torch'] = None  # `import torch` raises ImportError, which tensorboardX handles.
  try:
    import tensorboardX
  finally:
    del sys.modules['torch']
  return tensorboardX


tensorboardX = _import_tensorboardx()


class MetricWriter:
  """Writes scalars per (step, split) to `workdir/metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: pathlib.Path, *, enabled: bool):
    self.enabled = enabled
    if enabled:
      self._jsonl = open(pathlib.Path(workdir) / 'metrics.jsonl', 'a')
      self._tb = tensorboardX.SummaryWriter(str(pathlib.Path(workdir) / 'tensorboard'))

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': int(step), 'split': split, **scalars}) + '\n')
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(f'{split}/{name}', value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


class Progress:
  """Throughput and ETA over the steps since the last report, for the console line."""

  def __init__(self, total_steps: int, start_step: int):
    self.total_steps = total_steps
    self._step = start_step
    self._time = time.time()

  def restart_clock(self) -> None:
    self._time = time.time()

  def update(self, step: int, tokens: int, flops: float) -> dict[str, float]:
    """Rates since the last update: `tokens` real (non-padding) tokens and `flops` model FLOPs
    (llmjax.model_info.train_flops of the batches' shapes, padding included) were trained."""
    now = time.time()
    seconds = max(now - self._time, 1e-9)
    steps = max(step - self._step, 1)
    self._step, self._time = step, now
    return {'steps_per_s': steps / seconds, 'tokens_per_s': tokens / seconds,
            'flops_per_s': flops / seconds, 'eta_s': (self.total_steps - step) * seconds / steps}

  def line(self, step: int, s: dict[str, float]) -> str:
    return (f'step {step}/{self.total_steps} | loss {s["loss"]:.4f} | lr {s["learning_rate"]:.2e} | '
            f'{s["tokens_per_s"]:,.0f} tok/s | {s["flops_per_s"] / 1e9:,.1f} GFLOP/s | '
            f'ETA {_duration(s["eta_s"])}')


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'


def format_metrics(metrics: dict[str, float]) -> str:
  return ', '.join(f'{k} {v:.4f}' for k, v in metrics.items())


def final_summary(result: dict, config) -> str:
  """One screen: training loss per epoch, validation metrics, test metrics of the best checkpoint."""
  lines = [f'== {config.model.name} on {config.data.name}: {result["steps"]} steps, '
           f'wall time {_duration(result["wall_time_s"])} ==']
  for epoch, loss in sorted(result['epoch_loss'].items()):
    lines.append(f'epoch {epoch + 1}: train loss {loss:.4f}')
  for ev in result['validation']:
    lines.append(f'step {ev["step"]} validation: ' + format_metrics(
        {k: v for k, v in ev.items() if k != 'step'}))
  if result['stopped_early']:
    lines.append('stopped early (no better validation metric within the patience)')
  lines.append(f'test (best checkpoint, step {result["best_step"]}): '
               + format_metrics(result['test']))
  return '\n'.join(lines)
