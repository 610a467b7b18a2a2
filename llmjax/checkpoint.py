"""Checkpoints: one wrapper around orbax's CheckpointManager.

Each checkpoint holds the train state (sharded arrays, written by all processes together) and a small
JSON `meta` item with what the loop needs to resume exactly: the step, early-stopping bookkeeping and
the history of evaluations. Saves are asynchronous. The last `keep` checkpoints are kept, plus the best
one by the validation metric. Restoring onto another mesh works because the caller passes the target
tree with its shardings.
"""

import pathlib

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from llmjax.errors import UserError


class Checkpointer:
  """Saves and restores (state, meta) pairs under `directory`."""

  def __init__(self, directory: pathlib.Path, *, keep: int, metric: str, mode: str):
    self.directory = pathlib.Path(directory).absolute()
    best = lambda metrics: metrics[metric]  # noqa: E731
    options = ocp.CheckpointManagerOptions(
        preservation_policy=pp.AnyPreservationPolicy([
            pp.LatestN(n=keep),
            # BestN keeps the top of an ascending sort: reverse it when smaller is better.
            pp.BestN(get_metric_fn=best, reverse=(mode == 'min'), n=1,
                     keep_checkpoints_without_metrics=False),
        ]),
        best_fn=best, best_mode=mode,
        enable_async_checkpointing=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    return self._manager.best_step()

  def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
    """Starts an asynchronous save; the next save or `wait` waits for it to finish."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        metrics=metrics, force=True)

  def restore(self, step: int, target):
    """Returns (state, meta) of `step`, laid out like `target` (arrays or ShapeDtypeStructs with
    shardings), which may be on another mesh than the one that saved it."""
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for a damaged or foreign checkpoint.
      raise UserError(
          f'checkpoint {self.directory / str(step)} cannot be restored ({type(e).__name__}: '
          f'{str(e).splitlines()[0] if str(e) else ""}); move it out of the way to resume from an '
          f'earlier one, or pass a new --workdir') from e
    return restored.state, restored.meta

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
