"""Checkpoints: one wrapper around orbax's CheckpointManager.

Each checkpoint holds the train state (sharded arrays, written by all processes together) and a small
JSON `meta` item with what the loop needs to resume exactly: the step, the data position
(`meta['data']`: the step, seed, global batch size and process count that fix every later batch; see
`llmjax.train._data_position`), early-stopping bookkeeping and the history of evaluations. Saves
are asynchronous. The last `keep` checkpoints are kept, plus the best one by the validation metric,
which the caller names. Restoring onto another mesh works because the caller passes the target tree
with its shardings.

A checkpoint that cannot be read (a truncated file, a disk that filled up) is never the end of a
run: `restore_latest` warns and falls back to the one before, and moves the damaged one to
`<directory>/../damaged_checkpoints/`. A save killed midway leaves a
`<step>.orbax-checkpoint-tmp` directory, which orbax never lists, so it is not restored either.
"""

import dataclasses
import pathlib
import time

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from llmjax.errors import UserError


@dataclasses.dataclass
class _Pinned(pp.PreservationPolicy):
  """Keeps the checkpoints whose steps are in `steps` (the best one, chosen by the training loop)."""
  steps: set[int] = dataclasses.field(default_factory=set)

  def should_preserve(self, checkpoints, *, context):
    del context
    return [c.step in self.steps for c in checkpoints]


class Checkpointer:
  """Saves and restores (state, meta) pairs under `directory`."""

  def __init__(self, directory: pathlib.Path, *, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    # The loop, not orbax, decides which checkpoint is best: it owns early stopping and breaks ties
    # towards the earlier step, and orbax's BestN would keep a later one of equal merit.
    self._pinned = _Pinned()
    options = ocp.CheckpointManagerOptions(
        preservation_policy=pp.AnyPreservationPolicy([pp.LatestN(n=keep), self._pinned]),
        enable_async_checkpointing=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, meta: dict, *, pin: int | None = None) -> None:
    """Starts an asynchronous save of `step`; the next save or `wait` waits for it to finish.

    Besides the last `keep` checkpoints, the one of step `pin` (the best so far) is kept.
    """
    self._pinned.steps = {pin} if pin is not None else set()
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, target):
    """Returns (state, meta) of `step`, laid out like `target` (arrays or ShapeDtypeStructs with
    shardings), which may be on another mesh than the one that saved it."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for a damaged or foreign checkpoint.
      raise UserError(
          f'checkpoint {self.directory / str(step)} cannot be restored ({type(e).__name__}: '
          f'{_cause(e)}); move it out of the way to resume from an earlier one, or pass a new '
          f'--workdir') from e
    return restored.state, restored.meta

  def restore_latest(self, target):
    """(step, state, meta) of the newest checkpoint that restores, or None when there is none.

    Newer ones that fail are moved aside, once an older one has restored, with a warning naming
    the step and the cause (a later save of the same step would collide with them). If none
    restores, nothing is moved (a config that no longer matches fails them all) and the newest's
    error is raised."""
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, target)
      except UserError as e:
        logging.warning('The checkpoint of step %d does not restore (%s); trying the previous one.',
                        step, _cause(e.__cause__ or e))
        damaged.append((step, e))
        continue
      for bad, _ in damaged:
        logging.warning('Moved the damaged checkpoint of step %d to %s; resuming from step %d.',
                        bad, self._move_aside(bad), step)
      return step, state, meta
    if damaged:
      raise damaged[0][1]
    return None

  def _move_aside(self, step: int) -> pathlib.Path:
    """Moves the checkpoint of `step` out of the manager's directory (kept for inspection)."""
    # Suffixed with the time: the same step may be damaged again in a later attempt.
    moved = self.directory.parent / 'damaged_checkpoints' / f'{step}.{int(time.time())}'
    if jax.process_index() == 0:
      moved.parent.mkdir(exist_ok=True)
      (self.directory / str(step)).rename(moved)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'llmjax: checkpoint {step} moved aside')
    self._manager.reload()
    return moved

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _cause(e: Exception, limit: int = 400) -> str:
  """The first line of `e`'s message, short enough to read: tensorstore appends kilobytes of JSON
  spec ('[tensorstore_spec=...]') to the one line that says what is wrong."""
  lines = str(e).splitlines()
  text = lines[0].split(' [tensorstore_spec')[0] if lines else ''
  return text if len(text) <= limit else text[:limit - 3] + '...'
