"""Multi-process training with ``torch.distributed``: what the trainer needs, in one place.

Launch with torchrun, which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``::

    torchrun --nproc_per_node 2 tools/train.py --config configs/yolo_shapes.yaml
    # several machines: the same command on each, with torchrun's rendezvous flags
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --master_addr HOST --master_port 29500 tools/train.py ...

Without those variables everything here is a no-op and training is the single-process loop.

The rules (see the README, "Training on several processes"):

* ``train.batch_size`` is the **global** batch: each of the N processes takes a contiguous 1/N
  share of every batch of the single-process schedule, so the schedule, the learning rate and the
  iterations per epoch do not depend on N (except that a last batch of an epoch smaller than N is
  dropped). Each rank's loss is weighted by its share, so the averaged gradient is the gradient
  of the global batch's per-image mean.
* BatchNorm layers that train are synchronised across processes (torch's ``SyncBatchNorm`` on
  GPUs, :class:`DistributedBatchNorm2d` on CPUs, where torch's has no kernel), so statistics are
  those of the global batch, as in one process.
* Gradients are averaged by ``DistributedDataParallel`` (NCCL on GPUs, gloo on CPUs).
* Rank 0 alone logs, shows progress and writes checkpoints; evaluation runs on a 1/N shard of
  the test images per rank, and the detections are gathered so every rank computes the same mAP.
* Several machines need a **shared filesystem** for the run folder and caches: rank 0 writes the
  checkpoints every rank resumes from, and R-CNN's SVM stage reads the features all ranks wrote.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from detect.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> DistributedContext:
    """The running job's context; single-process when no process group is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init_from_environment(device: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes in the environment (no-op without torchrun).

    The backend is NCCL when the processes train on GPUs and gloo otherwise; each process takes the
    GPU of its ``LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return context()


def shutdown() -> None:
    """Leave the process group at the end of a job (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: torch.device, ctx: DistributedContext) -> torch.device:
    """One GPU per process: ``cuda`` becomes ``cuda:<local rank>``."""
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def barrier() -> None:
    if context().enabled:
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """The first process of each machine (``LOCAL_RANK`` 0) runs the block first (e.g. generating
    the built-in dataset), the others after it."""
    ctx = context()
    first = ctx.local_rank == 0
    if ctx.enabled and not first:
        dist.barrier()
    yield
    if ctx.enabled and first:
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    ctx = context()
    if not ctx.enabled:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, source: int = 0) -> Any:
    """Rank ``source``'s ``obj`` on every rank."""
    if not context().enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def all_reduce_sum(values: Tensor) -> Tensor:
    """The sum of ``values`` over ranks (a copy)."""
    if not context().enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def max_over_ranks(value: int, device: torch.device | str = "cpu") -> int:
    """The largest ``value`` of all ranks (``device``: this process's, a GPU under NCCL)."""
    if not context().enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank if ``flag`` is true on at least one."""
    if not context().enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def share(indices: list[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous share of ``indices`` (sizes differ by at most one, first ranks larger)."""
    base, extra = divmod(len(indices), world_size)
    start = rank * base + min(rank, extra)
    return indices[start:start + base + (1 if rank < extra else 0)]


# ---------------------------------------------------------------------- BatchNorm across processes


class _DifferentiableSum(torch.autograd.Function):
    """All-reduce (sum) that gradients flow through: every rank's output is the sum of all ranks'
    inputs, so each input's gradient is the sum of all ranks' output gradients. (What
    ``torch.distributed.nn.functional.all_reduce`` did before its deprecation.)"""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch on all ranks (CPU or GPU).

    Two differentiable all-reduces give the global per-channel mean (from each rank's sums and
    element count) and then the global (biased) variance from the centred squares; the variance
    normalises, its unbiased version feeds the running estimate, as :class:`torch.nn.BatchNorm2d`
    does in one process.
    Outside training, or in a single process, it is a plain BatchNorm2d.
    """

    def forward(self, input: Tensor) -> Tensor:
        ctx = context()
        if not (self.training and ctx.enabled):
            return super().forward(input)
        channels = input.shape[1]
        flat = input.transpose(0, 1).reshape(channels, -1)
        count = torch.full((1,), float(flat.shape[1]), dtype=input.dtype, device=input.device)
        sums = _DifferentiableSum.apply(torch.cat([flat.sum(1), count]))
        total = sums[-1]
        if total <= 1:
            raise ValueError(f"expected more than 1 value per channel when training, got input size {tuple(input.shape)}")
        mean = sums[:channels] / total
        # a second, centred reduction: E[x²] − E[x]² would lose the variance to rounding when |mean| ≫ std
        var = _DifferentiableSum.apply(((flat - mean[:, None]) ** 2).sum(1)) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        shape = (1, channels, 1, 1)
        output = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Synchronise every ``nn.BatchNorm2d`` (pretrained backbones' ``FrozenBatchNorm2d`` is another
    class, and stays as it is)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = DistributedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats).to(device)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            if child.affine:
                synced.weight.requires_grad_(child.weight.requires_grad)
                synced.bias.requires_grad_(child.bias.requires_grad)
            setattr(module, name, synced)
        else:
            convert_batchnorm(child, device)
    return module


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with synchronised BatchNorm, inside DistributedDataParallel; unchanged in one process."""
    if not context().enabled:
        return model
    convert_batchnorm(model, device)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        # Robust to detector parts a step may not use (e.g. R-CNN's fine-tuning touches only its
        # crop path); costs one traversal of the autograd graph per step.
        find_unused_parameters=True)


__all__ = ["DistributedContext", "DistributedBatchNorm2d", "all_gather_objects", "any_rank",
           "all_reduce_sum", "barrier", "broadcast_object", "max_over_ranks", "context", "convert_batchnorm", "device_for", "init_from_environment",
           "main_process_first", "share", "shutdown", "wrap"]
