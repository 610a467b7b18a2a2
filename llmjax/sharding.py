"""The device mesh and the map from logical axis names to it.

Models name the axes of their parameters and activations (`batch`, `embed`, `heads`, ...); rules map
those names to the mesh axes `data`, `fsdp` and `tensor`. A run picks named presets of rules with
`config.parallelism` ('fsdp+tensor'; the tables are config_lib.PARALLELISM_PRESETS) and may replace
the rule of any name with `config.logical_rules`. Changing the parallelism of a run is a change of
`config.parallelism`, `config.mesh` and perhaps `config.logical_rules`, never of the model.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from llmjax import config_lib
from llmjax.errors import UserError
from llmjax.optim import path_str


def make_mesh(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes (data, fsdp, tensor) over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = config_lib.mesh_shape(config.mesh, len(devices))
  # Auto axes: Linen's logical constraints need them (Explicit axes reject sharded contractions).
  # make_mesh lays the axes out along the physical interconnect (TPU tori, GPU NVLink islands).
  return jax.make_mesh(tuple(shape[a] for a in config_lib.MESH_AXES), config_lib.MESH_AXES,
                       axis_types=(AxisType.Auto,) * len(config_lib.MESH_AXES), devices=devices)


MeshAxes = str | tuple[str, ...] | None


def _mesh_axes(axes) -> MeshAxes:
  """One spelling for each split: None, 'fsdp' or ('data', 'fsdp') (never () or ('fsdp',))."""
  axes = tuple(axes) if isinstance(axes, (list, tuple)) else (axes,)
  axes = tuple(a for a in axes if a is not None)
  return None if not axes else axes[0] if len(axes) == 1 else axes


def rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, MeshAxes], ...]:
  """The logical-axis rules of a run, as Flax's `logical_axis_rules` takes them.

  First `config.logical_rules` as written; then, for every logical axis they do not name, the presets
  of `config.parallelism` merged: an axis several presets split is split over all their mesh axes,
  in the order the presets are named. The default 'data+fsdp+tensor' splits batch over data x fsdp,
  embed over fsdp and heads, mlp and vocab over tensor.
  """
  explicit = tuple((name, _mesh_axes(axes)) for name, axes in config.logical_rules)
  named = {name for name, _ in explicit}
  merged = {name: () for name in config_lib.LOGICAL_AXES if name not in named}
  for preset in config_lib.parallelism_presets(config.parallelism):
    for name, axis in config_lib.PARALLELISM_PRESETS[preset].items():
      if name in merged and axis not in merged[name]:
        merged[name] += (axis,)
  return explicit + tuple((name, _mesh_axes(axes)) for name, axes in merged.items())


def logical_to_sharding(logical_specs, mesh: Mesh, config: ml_collections.ConfigDict):
  """A tree of logical PartitionSpecs -> a tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules(config))


def check_divisible(abstract, logical_specs, mesh: Mesh, config: ml_collections.ConfigDict) -> None:
  """Raises UserError for a parameter dimension that its mesh axes do not divide evenly."""
  def check(path, leaf, spec):
    for size, name in zip(leaf.shape, spec):
      mesh_axes = nn.logical_to_mesh_axes((name,), rules(config))[0]
      mesh_axes = mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)
      split = math.prod(mesh.shape[a] for a in mesh_axes if a is not None)
      if size % split:
        raise UserError(
            f'parameter {path_str(path)} has a dimension of {size} along logical axis {name!r}, '
            f'which the rules (config.parallelism={config.parallelism!r}, config.logical_rules) '
            f'split over {split} devices '
            f'({", ".join(mesh_axes)}): map {name!r} to None '
            f'(--config.logical_rules="(({name!r}, None),)") or choose mesh sizes that divide {size}')
  jax.tree_util.tree_map_with_path(check, abstract, logical_specs,
                                   is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, config: ml_collections.ConfigDict) -> NamedSharding:
  """The sharding of any batch array: its leading axis is `batch`, the others are not split."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(('batch',), rules(config)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(batch: dict[str, np.ndarray], mesh: Mesh, config) -> dict[str, jax.Array]:
  """Assembles each process's rows of a batch into global arrays sharded along `batch`."""
  target = batch_sharding(mesh, config)
  return {k: jax.make_array_from_process_local_data(target, v) for k, v in batch.items()}
