"""One trial's epoch on a gang of k processes (ranks) with the single process's numbers.

Every rank holds the whole model and the same trainer state (checkpoints are
unchanged: one process may resume a gang's and a gang a single process's).
Every rank draws the same shuffled order and flips from the same generator, so
each sees the same global batches; rank r computes the forward and backward of
its contiguous slice of each (``slice_bounds``). What would couple the samples
of a batch is made global:

* BatchNorm in training mode normalises with the whole global batch's
  statistics (``GangBatchNorm``: the sums are all-reduced, differentiably, so
  the backward pass is the full batch's too). torch's SyncBatchNorm would do
  the forward, but it refuses CPU tensors, and gloo on CPU is how this is tested.
* Dropout draws the global batch's mask, as one process would, and each rank
  keeps its rows (``GangDropout``; bit for bit F.dropout's CPU mask).
* The loss is each rank's sum over its slice divided by the global batch size;
  the gradients are summed over the ranks in one flat all-reduce
  (``Gang.sum_gradients``), which is the global batch's mean-loss gradient, so
  the optimizer takes one identical step per global batch on every rank.

What differs from one process is only the order of float additions, so values
agree within float tolerance, not bit for bit (tests/test_data_parallel.py
measures it). Only rank 0 validates and writes; the others train.

A gang of one (``world == 1``) is the single process exactly: the converted
layers then run plain BatchNorm and F.dropout, so a worker's trainer can be
converted when its first gang forms and train alone again between gangs.
Between epochs rank 0 and its members agree on what comes next in one small
all-reduce (``Gang.exchange``): train epoch e, or disband; and who leaves.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

DEFAULT_TIMEOUT_S = 60.0  # a dead rank makes the others' collectives raise after this


@dataclass
class Gang:
    """This process's place in a gang: rank ``rank`` of ``world``; the slice of the batch now."""

    rank: int
    world: int
    batch: int = 0  # the global batch in flight (set per step by the trainer)
    lo: int = 0
    hi: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def set_batch(self, size: int) -> slice:
        self.batch = size
        self.lo, self.hi = slice_bounds(size, self.rank, self.world)
        return slice(self.lo, self.hi)

    def sum_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Sum every trainable gradient over the gang in one flat all-reduce."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the gang (a copy)."""
        value = value.clone()
        dist.all_reduce(value)
        return value

    def exchange(self, command: int, epoch: int, leaving: bool, device=None) -> tuple[int, int, list[int]]:
        """Rank 0's command for the next step and every rank's wish to leave, known to all.

        One all-reduce of (command, epoch, leave flag per rank): rank 0 writes the first
        two, each rank its own flag. Returns (command, epoch, ranks that leave)."""
        slots = torch.zeros(2 + self.world, dtype=torch.int64, device=device)
        if self.leader:
            slots[0], slots[1] = command, epoch
        slots[2 + self.rank] = int(leaving)
        dist.all_reduce(slots)
        flags = slots[2:].tolist()
        return int(slots[0]), int(slots[1]), [r for r, f in enumerate(flags) if f]

    def broadcast_bytes(self, payload: bytes | None, device=None) -> bytes:
        """Rank 0's ``payload`` on every rank (a trainer's state when a gang forms)."""
        size = torch.tensor([len(payload) if self.leader else 0], dtype=torch.int64, device=device)
        dist.broadcast(size, 0)
        buffer = (torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device) if self.leader
                  else torch.empty(int(size), dtype=torch.uint8, device=device))
        dist.broadcast(buffer, 0)
        return payload if self.leader else buffer.cpu().numpy().tobytes()


def slice_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous rows of a batch of ``size``: as even as can be, in rank order."""
    base, extra = divmod(size, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def join(address: str, rank: int, world: int, timeout_s: float = DEFAULT_TIMEOUT_S,
         backend: str | None = None, device: str | None = None) -> Gang:
    """Join the gang whose rank 0 listens at ``address`` (host:port); gloo on CPU, NCCL on CUDA.

    ``timeout_s`` bounds the rendezvous and, after it, every collective: a rank that
    died makes the others' next collective raise within it rather than hang."""
    if backend is None:
        backend = "nccl" if str(device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{address}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return Gang(rank, world)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _SumOverGang(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: every rank's output is the sum of the inputs, so
    each input's gradient is the sum of the outputs' gradients over the ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def differentiable_all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _SumOverGang.apply(x)


class GangBatchNorm(nn.BatchNorm2d):
    """BatchNorm (any input rank, (N, C, ...)) whose training statistics are the gang's.

    Subclasses BatchNorm2d only to keep the parameters, buffers and state-dict keys of
    the layer it replaces; eval mode is plain BatchNorm on the running statistics.
    Two passes (mean, then the centred squares), as one process's BatchNorm does,
    rather than E[x^2] - E[x]^2, which loses digits when the mean is large.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected (N, C, ...) input, got {input.dim()}D")

    gang: Gang | None = None  # set by convert(); a gang of one runs plain BatchNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.gang is None or self.gang.world == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=x.dtype, device=x.device)
        summed = differentiable_all_reduce(torch.cat([x.sum(dims), count]))
        n = summed[-1]
        mean = summed[:-1] / n
        centred = x - mean.view(shape)
        var = differentiable_all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        return y


class GangDropout(nn.Module):
    """Dropout with the global batch's mask (drawn as F.dropout draws it on CPU), sliced."""

    def __init__(self, p: float, gang: Gang):
        super().__init__()
        self.p, self.gang = p, gang

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gang.world == 1:
            return F.dropout(x, self.p, self.training)  # alone: exactly nn.Dropout
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        full = (self.gang.batch, *x.shape[1:])
        noise = torch.empty(full, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * noise[self.gang.lo:self.gang.hi]


def convert(model: nn.Module, gang: Gang) -> nn.Module:
    """Replace, in place, every BatchNorm by a GangBatchNorm and every Dropout by a
    GangDropout, both following ``gang`` (whose rank and world may change later);
    eval-mode layers (frozen parts) behave exactly as before.

    The new layers take the old ones' parameter and buffer objects themselves, not
    copies, so an optimizer built before the conversion still steps them."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GangBatchNorm):
            synced = GangBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            for key, param in child.named_parameters(recurse=False):
                setattr(synced, key, param)
            for key, buf in child.named_buffers(recurse=False):
                synced.register_buffer(key, buf)
            synced.gang = gang
            synced.train(child.training)
            setattr(model, name, synced)
        elif isinstance(child, nn.Dropout):
            setattr(model, name, GangDropout(child.p, gang).train(child.training))
        else:
            convert(child, gang)
    return model
