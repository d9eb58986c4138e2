"""Data-parallel training on the engines' own collectives: ``torch.distributed`` (gloo on CPU,
NCCL on GPUs) under ``torchrun``, ``mx.distributed`` (ring, MPI...) under ``mlx.launch``.

A `Group` is what the training loop sees: this worker's rank, the number of workers, a sum of
a few numbers over all workers, and the engine's gradient sum. A process that no launcher
started gets `SINGLE`, whose operations do nothing, so the loop has one code path.

Each rank trains on its own rows of every global batch; the loss of a step is the sum of the
target-token cross-entropies of ALL ranks divided by ALL their target tokens, so gradients are
scaled by ``1 / global_targets`` and summed across ranks: exactly the gradient a single process
would compute on the global batch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from forgellm.errors import ForgeError, UserError

log = logging.getLogger(__name__)

TORCH_ENV = "WORLD_SIZE"  # set by torchrun for every worker
MLX_ENV = ("MLX_RANK", "OMPI_COMM_WORLD_SIZE")  # set by mlx.launch (ring, jaccl, nccl) / mpirun
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
GRADIENT_BUCKET_ELEMENTS = 8 * 1024 * 1024  # float32 values per torch all-reduce


class WorkerLost(ForgeError):
    """Another worker of a distributed run died or stopped answering; the run ends, its checkpoints stay."""

    kind = "worker_lost"


class Group:
    """One process alone: every collective is the identity."""

    rank = 0
    world_size = 1
    local_rank = 0
    engine = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: Sequence[float]) -> list[float]:
        """The element-wise sum of ``values`` over all workers (every worker gets it)."""
        return [float(v) for v in values]

    def barrier(self) -> None:
        self.sum([0.0])

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every worker (a run name, so all ranks write to one folder)."""
        if self.world_size == 1:
            return text
        data = text.encode()
        length = int(self.sum([len(data) if self.is_main else 0])[0])
        codes = list(data) if self.is_main else [0] * length
        return bytes(int(c) for c in self.sum(codes)).decode() if length else ""

    def close(self) -> None:
        """Leave the group after a normal end (the other ranks do not count it as a lost worker)."""
        if self.world_size > 1:
            from forgellm.training.distributed_watchdog import finish_watch

            finish_watch()


SINGLE = Group()


class TorchGroup(Group):
    engine = "torch"

    def __init__(self) -> None:
        import torch
        import torch.distributed as dist

        self._dist = dist
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            gpus, local_workers = torch.cuda.device_count(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            if local_workers > gpus:  # NCCL refuses two workers on one GPU; every worker says so alike
                raise UserError(
                    f"{local_workers} workers on this machine need {local_workers} GPUs (NCCL runs "
                    f"one worker per GPU) but it has {gpus}: use --nproc {gpus}, or train on the CPU "
                    f"with the GPUs hidden (CUDA_VISIBLE_DEVICES=)"
                )
            torch.cuda.set_device(self.local_rank)  # one GPU per worker; the trainable uses the current one
            backend, self._device = "nccl", torch.device("cuda", self.local_rank)
        else:
            backend, self._device = "gloo", torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        log.info("torch.distributed (%s): rank %d of %d", backend, self.rank, self.world_size)

    def sum(self, values: Sequence[float]) -> list[float]:
        import torch

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._device)
        self._collective(self._dist.all_reduce, tensor)
        return tensor.tolist()

    def sum_gradients(self, params: list) -> None:
        """Sum ``p.grad`` of ``params`` in place over all workers, in buckets of flattened gradients."""
        import torch
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        bucket: list = []
        for grad in [*grads, None]:
            if grad is not None:
                bucket.append(grad)
            if bucket and (grad is None or sum(g.numel() for g in bucket) >= GRADIENT_BUCKET_ELEMENTS):
                flat = _flatten_dense_tensors(bucket)
                self._collective(self._dist.all_reduce, flat)
                for g, summed in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                    g.copy_(summed)
                bucket = []

    def _collective(self, op, *args: Any) -> None:
        try:
            op(*args)
        except RuntimeError as exc:  # gloo/NCCL: a peer closed its connection or timed out
            raise lost_worker_error(self, exc) from None

    def close(self) -> None:
        if self._dist.is_initialized():
            # Every rank reaches the end before any tears gloo down: a worker that destroyed its
            # group while a peer still finished a collective (FSDP's last checkpoint) aborted in
            # C++ ("terminate called without an active exception"), failing a completed run.
            self.barrier()
        super().close()
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


class MlxGroup(Group):
    engine = "mlx"

    def __init__(self) -> None:
        from forgellm.engines import blas

        blas.activate()  # before mlx is imported (see forgellm.engines.blas)
        import mlx.core as mx

        self._mx = mx
        self._group = mx.distributed.init(strict=True)
        self.rank, self.world_size = self._group.rank(), self._group.size()
        self.local_rank = self.rank
        log.info("mx.distributed: rank %d of %d", self.rank, self.world_size)

    def sum(self, values: Sequence[float]) -> list[float]:
        mx = self._mx
        # float32 on the wire (what every backend reduces); exact for the integer counts we send
        out = mx.distributed.all_sum(mx.array(np.asarray(values, dtype=np.float32)), group=self._group)
        self._collective(mx.eval, out)
        return [float(v) for v in np.asarray(out)]

    def sum_gradients(self, grads: Any) -> Any:
        """The tree of gradients summed over all workers (mlx's batched all-reduce)."""
        import mlx.nn as nn
        from mlx.utils import tree_map

        n = self.world_size
        summed = tree_map(lambda g: g * n, nn.average_gradients(grads, group=self._group))
        self._collective(self._mx.eval, summed)
        return summed

    def _collective(self, op, *args: Any) -> None:
        try:
            op(*args)
        except RuntimeError as exc:  # ring: "connection to a peer was lost"
            raise lost_worker_error(self, exc) from None


def ignore_stop_signals() -> None:
    """A failing distributed run only records why, then exits: the launcher's SIGTERMs to the
    surviving workers (torchrun's agent and mlx.launch send them, sometimes twice) must not cut
    the ``error`` event short."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def lost_worker_error(group: Group, exc: BaseException) -> WorkerLost:
    """A `WorkerLost` naming the rank that left when the liveness watch knows it."""
    from forgellm.training.distributed_watchdog import lost_ranks

    ignore_stop_signals()
    return worker_lost(lost_ranks(wait=3.0), group.world_size, f"rank {group.rank} saw: {exc}")


def worker_lost(ranks: list[int], world_size: int, seen: str) -> WorkerLost:
    """The error of a run that lost workers ``ranks`` (empty when unknown); ``seen``: how it showed."""
    who = f"worker rank {', '.join(map(str, ranks))} of {world_size}" if ranks else f"a worker of {world_size}"
    return WorkerLost(
        f"{who} stopped ({seen}); the run ended at its last checkpoint, "
        f"continue it with `forgellm train --resume RUN_DIR` (any number of workers)"
    )


def launched_engine() -> str | None:
    """The engine whose launcher started this process ("torch", "mlx"), or None."""
    if int(os.environ.get(TORCH_ENV, "1")) > 1:
        return "torch"
    if any(name in os.environ for name in MLX_ENV):
        return "mlx"
    return None


_current: Group = SINGLE


def init_group(engine: str) -> Group:
    """This process's group for ``engine``: joined on the first call, the same object afterwards."""
    global _current
    if _current is not SINGLE:
        if _current.engine != engine:
            raise UserError(f"this process already joined a {_current.engine} group; engine {engine} cannot join it")
        return _current
    launcher = launched_engine()
    if launcher is None:
        return SINGLE
    if launcher != engine:
        tool = {"torch": "torchrun", "mlx": "mlx.launch"}
        raise UserError(
            f"this run uses the {engine} engine but was started by {tool[launcher]}; start it with "
            f"`forgellm train --nproc N` (it picks {tool[engine]}) or set engine: {launcher}"
        )
    _current = TorchGroup() if engine == "torch" else MlxGroup()
    if _current.world_size > 1:
        from forgellm.training.distributed_watchdog import start_watch

        start_watch(_current)
    return _current


def rank_batches(count: int, group: Group, trainable: object) -> list[int | None]:
    """This rank's share of ``count`` batches split over the workers (batch ``i`` to rank ``i %
    world_size``). A trainable whose every forward is a collective (FSDP: ``collective_forward``)
    needs as many forwards on every rank: the share is then padded with None, a forward whose
    result the caller discards."""
    mine: list[int | None] = list(range(group.rank, count, group.world_size))
    if getattr(trainable, "collective_forward", False):
        mine += [None] * (-(-count // group.world_size) - len(mine))
    return mine


def reshard_position(position: int, sequences: int, old_rows: int, new_rows: int) -> int:
    """A data position saved with global micro-batches of ``old_rows`` sequences (``batch_size x
    world_size``) as the position for ``new_rows``: another number of workers, another batch size.

    The position is kept within its epoch (same shuffle); the new run starts at the first
    sequence not yet trained on, rounded up to a whole new batch (nothing is seen twice)."""
    if old_rows <= 0 or old_rows == new_rows:
        return position
    old_per_epoch, new_per_epoch = max(sequences // old_rows, 1), max(sequences // new_rows, 1)
    epoch, start = divmod(position, old_per_epoch)
    moved = -(-start * old_rows // new_rows)
    if moved >= new_per_epoch:
        epoch, moved = epoch + 1, 0
    return epoch * new_per_epoch + moved
