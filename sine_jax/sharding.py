"""Where arrays live: the ('data', 'model') device mesh, the item table's padded rows, and the
sharding rules of the train state and the batches.

Batches are split over 'data'; each process reads only its rows of a global batch
(`local_rows`) and the global array is put together from every process's rows
(`global_batch`). The item table (and, with `mesh.shard_prototypes`, the
prototype pool) and their Adam moments are split row-wise over 'model'; everything else is
replicated. Shapes: B global batch, R item-table rows, M items.
"""

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_dict

from sine_jax.errors import ConfigError

# The item table's rows are padded to a multiple of this (and of the 'model' axis size), so
# that checkpoints restore onto meshes of other shapes (1, 2, 4, ... 128 'model' devices).
TABLE_ROW_MULTIPLE = 128


def mesh_shape(config: config_dict.ConfigDict, num_devices: int) -> tuple[int, int]:
    """(data, model) axis sizes from mesh.data (-1 = the devices left) and mesh.model.

    Raises:
        ConfigError: the sizes do not fit `num_devices`.
    """
    model = config.mesh.model
    if not isinstance(model, int) or model < 1 or num_devices % model:
        raise ConfigError(
            f"mesh.model={model} does not fit the {num_devices} visible device(s): use a "
            f"divisor of {num_devices}"
        )
    data = config.mesh.data
    if data == -1:
        return num_devices // model, model
    if data < 1 or num_devices % (data * model):
        raise ConfigError(
            f"mesh.data={data} x mesh.model={model} does not fit the {num_devices} visible "
            f"device(s): use mesh.data=-1 or sizes whose product divides {num_devices}"
        )
    return data, model


def make_mesh(
    config: config_dict.ConfigDict, devices: list[jax.Device] | None = None
) -> jax.sharding.Mesh:
    """The ('data', 'model') mesh of `mesh.data` x `mesh.model` devices."""
    devices = jax.devices() if devices is None else devices
    data, model = mesh_shape(config, len(devices))
    return jax.make_mesh(
        (data, model), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2,
        devices=devices[: data * model],
    )


def padded_table_rows(num_items: int, model_size: int) -> int:
    """R: M + 1 rounded up to a multiple of lcm(TABLE_ROW_MULTIPLE, model_size)."""
    multiple = math.lcm(TABLE_ROW_MULTIPLE, model_size)
    return -(-(num_items + 1) // multiple) * multiple


def state_sharding(abstract_state: Any, mesh: jax.sharding.Mesh, shard_prototypes: bool) -> Any:
    """The shardings of a pytree of train state or parameters: row-split over 'model' for the
    item table, its moments (and the prototypes when asked); everything else replicated."""

    def sharding(path, leaf):
        name = jax.tree_util.keystr(path)
        rows = "item_embedding" in name or "item_moments" in name
        rows |= shard_prototypes and "prototypes" in name
        return NamedSharding(mesh, P("model", None) if rows and leaf.ndim == 2 else P())

    return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """`abstract` (ShapeDtypeStructs) with `shardings` attached, as restores want them."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """A batch [B, ...] split over 'data' (B divisible by its size)."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Every device holds the whole array (metrics, counts, evaluation outputs)."""
    return NamedSharding(mesh, P())


def local_rows(mesh: jax.sharding.Mesh, batch_size: int) -> tuple[int, int]:
    """(start, stop): the rows of a [B, ...] batch split over 'data' that this process's
    devices hold, which are the rows this process reads of every global batch: all of them in
    a one-process run, B / P in each of P processes that split 'data' evenly.

    Raises:
        ConfigError: none of this process's devices is in the mesh.
    """
    spans = sorted({
        index[0].indices(batch_size)[:2]
        for index in batch_sharding(mesh).addressable_devices_indices_map((batch_size,)).values()
    })
    if not spans:
        raise ConfigError(
            f"process {jax.process_index()}'s devices are not in the {dict(mesh.shape)} mesh: "
            f"in a multi-process run the mesh spans every process's devices (mesh.data=-1)"
        )
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        assert start == stop, f"this process's rows of a batch are not contiguous: {spans}"
    return spans[0][0], spans[-1][1]


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh,
                 batch_size: int) -> dict[str, jax.Array]:
    """The global [B, ...] arrays, split over 'data', of this process's rows (`local_rows`)
    of each; no data crosses between processes."""
    batch = batch_sharding(mesh)
    return {
        name: jax.make_array_from_process_local_data(batch, rows, (batch_size, *rows.shape[1:]))
        for name, rows in local.items()
    }
