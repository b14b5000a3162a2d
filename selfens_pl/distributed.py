"""Which process answers what: the device mesh of a multi-process run (data-parallel replicas, tensor-parallel
ranks), read from the Lightning strategy. Below every layer: the data module shards by it, the engine and the
writer read it."""

from __future__ import annotations

#: Mesh dimension names of Lightning's ``ModelParallelStrategy``.
TP_DIM, DP_DIM = "tensor_parallel", "data_parallel"


# -- where this process sits ---------------------------------------------------------------------------------------
def device_mesh_of(strategy):
    """The ``ModelParallelStrategy``'s device mesh, ``None`` for every other strategy."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    return strategy.device_mesh if isinstance(strategy, ModelParallelStrategy) else None


def tensor_parallel_rank(strategy) -> int:
    """This process's index inside its tensor-parallel group (0 without tensor parallelism)."""
    mesh = device_mesh_of(strategy)
    return 0 if mesh is None else mesh[TP_DIM].get_local_rank()


def data_parallel_shard(trainer) -> tuple[int, int]:
    """``(number of data-parallel replicas, this process's replica)``: the processes of one tensor-parallel group
    are one replica and answer the same groups."""
    mesh = device_mesh_of(trainer.strategy)
    if mesh is None:
        return trainer.world_size, trainer.global_rank
    return mesh[DP_DIM].size(), mesh[DP_DIM].get_local_rank()
