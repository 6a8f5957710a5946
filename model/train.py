"""Train SAAN: one readable loop, every knob in RunConfig, exact checkpoint and resume.

    trainer = Trainer(RunConfig.load("run.toml"))
    trainer.fit(until_epoch=3)            # epochs 1..3 (1-based: afterwards trainer.epoch == 3)
    blob = trainer.state_dict()           # or trainer.save_checkpoint(path)
    later = Trainer(cfg); later.load_state_dict(blob)
    later.fit(until_epoch=7)              # continues exactly as if never stopped

Optimisation is the paper's unless told otherwise: Adam(betas) with coupled L2
weight decay over the trainable parameters only (the generic branch and the VGG
encoder are frozen), MSE between the sigmoid output and score / 10, and the
learning rate a pure function of the epoch (learning_rate()), so the schedule
needs no state of its own beyond the epoch counter.

On CUDA the loop uses bf16 autocast, channels_last, cudnn.benchmark, pinned
non-blocking copies and does flip + normalisation on the device; losses and
predictions stay on the device until the end of the epoch (one sync per epoch).
Batches come from model/feed.py: the split held on the device when it fits
(data.device_cache), the style branch's VGG statistics from a table computed
once (data.style_cache), the model call compiled once per process when
trainer.compile. Checkpoints are host snapshots that a CheckpointWriter can
write off the critical path (model/checkpoint.py).
On CPU it is plain fp32, channels_last too (oneDNN's convolutions and pools run
natively in NHWC, which the cache's uint8 batches already are) with denormals
flushed. Both use the fused Adam kernel (one pass over all parameters instead
of a dozen small ops per tensor: ~10% of a small CPU step). Evaluation runs in
inference mode with a larger batch (EVAL_BATCH_FACTOR x the training batch
unless eval_batch_size is set): no graph, no saved activations.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import io
import logging
import os
import random
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import checkpoint_file
from model.checkpoint import CheckpointWriter, HostSnapshot, snapshot_to_host, write_durable
from model.config import RunConfig, TrainerConfig
from model.data import ImageSplit, flip_batch, normalise_batch
from model.dataset_index import ensure_dataset, split_rows
from model.errors import CheckpointError
from model.feed import Feed
from model.metrics import compute_metrics
from model.progress import progress_enabled
from model.saan import SAAN, build_saan
from model.weights import load_pretrained

if TYPE_CHECKING:  # model/data_parallel.py imports torch.distributed: only gangs pay for it
    from model.data_parallel import Gang

CHECKPOINT_FORMAT = 1
EVAL_BATCH_FACTOR = 4
MAX_DECAYS = 4  # the paper stops decaying after epoch 40: base * 0.1**4
ENV_THREADS = "SAAN_HPO_THREADS"
# torch.compile's backend ("inductor" unless set; tests use "eager" to count graphs cheaply).
ENV_COMPILE_BACKEND = "SAAN_HPO_COMPILE_BACKEND"
# Graphs one process may compile for the model call: a configuration needs up to
# four (train and eval batch, each full and last partial), a grid several configurations.
COMPILE_RECOMPILE_LIMIT = 64
CPU_THREADS = 1  # per trial, whatever the machine: see configure_threads
logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], "bool | None"]


class TrainingAborted(Exception):
    """``should_abort()`` said stop: the epoch in flight was abandoned (the trainer's
    state is then mid-epoch; resume from the last checkpoint, never from this object)."""


def learning_rate(cfg: TrainerConfig, epoch: int) -> float:
    """The learning rate used during ``epoch`` (1-based).

    "paper": the authors' code sets base * gamma**((e // step) ) *after* 0-based
    epoch e, so it takes effect one epoch late: 1e-5 in epochs 1-11, 1e-6 in
    12-21, ... (docs/saan.md: 0-based 0-10, 11-20, ...). "step": the same decay on
    time (epochs 1-10, 11-20, ...). Both stop after four decays. "constant": base.
    """
    if cfg.schedule == "constant":
        return cfg.lr
    decays = (epoch - 1) // cfg.step_size if cfg.schedule == "step" else max(epoch - 2, 0) // cfg.step_size
    return cfg.lr * cfg.gamma ** min(decays, MAX_DECAYS)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def configure_threads(on_cuda: bool) -> None:
    """A fixed number of CPU threads per trial: CPU_THREADS, or SAAN_HPO_THREADS.

    How oneDNN and OpenMP split a convolution's or a reduction's work depends
    on the thread count, and with it the last bits of every float. A trial
    that always uses the same count computes the same numbers on any machine
    and with any number of workers beside it, so halving decisions and the
    winner are reproducible; more cores are used by running more workers
    (``launch --workers N``), never by giving a trial more threads.
    SAAN_HPO_THREADS overrides it (results then depend on that number).
    """
    threads = os.environ.get(ENV_THREADS)
    if threads or not on_cuda:
        torch.set_num_threads(int(threads or CPU_THREADS))


def configure_cpu() -> None:
    # Denormal floats are 10-100x slower on x86 and carry no information for
    # training; flushing them keeps a late-training CPU epoch from slowing down.
    torch.set_flush_denormal(True)


def configure_determinism(deterministic: bool, on_cuda: bool) -> None:
    """Deterministic algorithms always on CPU; on CUDA only with ``trainer.deterministic``.

    On CPU they cost next to nothing and, with the fixed thread count, make a
    trial bitwise repeatable. On CUDA they are slower and still not bitwise
    across GPU models or driver versions (see README, "Reproducibility").
    """
    if deterministic or not on_cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: pooling backward has no deterministic CUDA kernel; exactness is promised on CPU
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cudnn pick the fastest


def _call_model(model: SAAN, x: torch.Tensor, style=None):
    return model(x, style)


_COMPILED: dict[str, Callable] = {}


def compiled_model_call() -> Callable:
    """``torch.compile(model(x, style))`` for this process, shared by every Trainer in it.

    The model is an argument, not baked in: dynamo inlines it and guards on its
    structure, shapes and dtypes, not on its identity, so a trial rebuilt on a
    resume (a new SAAN of the same configuration) reuses the graphs compiled
    for the last one instead of compiling again (~77 s for full SAAN on an
    H200). Another configuration (backbone, batch size, train/eval) compiles
    its own graphs once; Inductor's on-disk caches (TORCHINDUCTOR_CACHE_DIR)
    make that cheaper in later processes too. Static shapes (dynamic=False):
    the last partial batch of an epoch gets its own graph rather than every
    batch a shape-generic one.
    """
    backend = os.environ.get(ENV_COMPILE_BACKEND, "inductor")
    if backend not in _COMPILED:
        import torch._dynamo
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit),
                                                 COMPILE_RECOMPILE_LIMIT))
        _COMPILED[backend] = torch.compile(_call_model, backend=backend, dynamic=False)
    return _COMPILED[backend]


# The last (model config, seed) built in this process and its freshly initialised weights.
_SEEDED: dict[tuple[str, int], SAAN] = {}


def seeded_saan(cfg: RunConfig, seed: int) -> SAAN:
    """SAAN as ``build_saan`` initialises it from ``seed`` alone, on the host, a new copy.

    Why a copy: initialising its ~30M weights takes about 0.5 s of a CPU core, and a
    worker builds the same model for every stint of every trial of a study (the seed
    is the study's, the grid varies the optimiser), so the first build is kept and later
    ones are copies, bit for bit the same, of one entry: a process that changes model
    config keeps only the newest. The global random generator is left as it was.
    """
    key = (repr(dataclasses.asdict(cfg.model)), seed)
    if key not in _SEEDED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            built = build_saan(cfg.model)
        _SEEDED.clear()
        _SEEDED[key] = built
    return copy.deepcopy(_SEEDED[key])


def frozen_fingerprint(model: SAAN) -> str:
    """Hash of the tensors a checkpoint omits, to refuse resuming onto different frozen weights."""
    digest = hashlib.blake2b(digest_size=16)
    state = model.state_dict()
    for key in sorted(model.frozen_state_keys()):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class _Log:
    """Accept a logging.Logger, a print-like callable, or None (this module's logger)."""

    def __init__(self, target=None):
        self.target = target or logger

    def info(self, msg: str, *args) -> None:
        self._emit("info", msg % args if args else msg)

    def warning(self, msg: str, *args) -> None:
        self._emit("warning", msg % args if args else msg)

    def _emit(self, level: str, text: str) -> None:
        method = getattr(self.target, level, None)
        (method or self.target)(text)


class Trainer:
    """SAAN training on one device; a plain object that hpo/ wraps as an Optuna trial."""

    def __init__(self, cfg: RunConfig, device: str | None = None, log=None, gang: "Gang | None" = None):
        """``gang``: train each epoch data-parallel as that rank (model/data_parallel.py);
        the caller has joined the gang. Every rank must be built from the same config and,
        to resume, load the same checkpoint."""
        self.cfg, t = cfg, cfg.trainer
        self._gang = gang  # the converted layers' Gang; see the gang property and use_gang
        self.log = _Log(log)
        self.device = resolve_device(device or t.device)
        self.on_cuda = self.device.type == "cuda"
        configure_threads(self.on_cuda)
        if not self.on_cuda:
            configure_cpu()
        configure_determinism(t.deterministic, self.on_cuda)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format

        # Bad input (folder, CSV, column) fails here; decoding waits for first use,
        # so evaluating the test split never builds the train cache.
        ensure_dataset(cfg.data)
        for name in ("train", "val"):
            split_rows(cfg.data, name)

        # The frozen parts are never saved, so they must be rebuilt identically
        # from the config: initialise the model from the seed alone.
        model = seeded_saan(cfg, t.seed)
        load_pretrained(model, cfg.model)
        self.fingerprint = frozen_fingerprint(model)
        self.model = model.to(self.device, memory_format=self.memory_format)
        if gang is not None:
            from model.data_parallel import convert

            convert(self.model, gang)
        # forward(x, style): the model, or the process's compiled call of it (not in a gang:
        # its layers call collectives, which the compiled graph would break around; a
        # worker's trainer that joins gangs later trains its gang epochs uneager, _forward)
        compile_it = t.compile and gang is None
        self.forward = functools.partial(compiled_model_call(), self.model) if compile_it else self.model
        self.feed = Feed(cfg.data, self.model, self.device, self.memory_format, self.log)
        self.splits = self.feed.splits

        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable = trainable
        self.optimizer = torch.optim.Adam(trainable, lr=learning_rate(t, 1),
                                          betas=(t.beta1, t.beta2), weight_decay=t.weight_decay,
                                          fused=self.device.type in ("cuda", "cpu"))
        # Shuffling and flips draw from their own generator; dropout from torch's
        # global RNG. Both are part of state_dict().
        self.generator = torch.Generator().manual_seed(t.seed)
        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        random.seed(t.seed)
        self.epoch = 0
        self.history: list[dict] = []

    @property
    def gang(self) -> "Gang | None":
        """The gang this trainer's epochs train in now; None alone (a gang of one is alone)."""
        return self._gang if self._gang is not None and self._gang.world > 1 else None

    def use_gang(self, rank: int, world: int) -> None:
        """Train the next epochs as rank ``rank`` of ``world`` (the caller has joined the
        process group; world 1: alone again). The first call converts the model's
        BatchNorm and Dropout layers (model/data_parallel.py), keeping their parameters,
        so the optimizer and the state are untouched; a converted model alone trains
        as the plain one does."""
        if self._gang is None:
            from model.data_parallel import Gang, convert

            self._gang = Gang(rank, world)
            convert(self.model, self._gang)
        self._gang.rank, self._gang.world = rank, world

    # ---- training ------------------------------------------------------------
    def fit(self, until_epoch: int, on_epoch_end: EpochCallback | None = None,
            should_abort: Callable[[], bool] | None = None) -> list[dict]:
        """Train epochs self.epoch+1 .. until_epoch, validating after each; returns their metrics.

        ``on_epoch_end(epoch, metrics)`` returning False stops after that epoch.
        ``should_abort()``, asked before every batch, returning True raises
        TrainingAborted (a hard stop: the epoch in flight is not finished).
        """
        self._should_abort = should_abort
        try:
            return self._fit(until_epoch, on_epoch_end)
        finally:
            self._should_abort = None

    def _check_abort(self) -> None:
        if getattr(self, "_should_abort", None) is not None and self._should_abort():
            raise TrainingAborted(f"aborted during epoch {self.epoch + 1}")

    def _fit(self, until_epoch: int, on_epoch_end: EpochCallback | None) -> list[dict]:
        done = []
        while self.epoch < until_epoch:
            epoch = self.epoch + 1
            start = time.perf_counter()
            train_loss, images_per_s = self._train_epoch(epoch)
            # In a gang only rank 0 validates (and reports); the others go on to the next epoch
            # and wait for it at the first collective.
            metrics = self.evaluate("val") if self.gang is None or self.gang.leader else {}
            metrics.update(train_loss=train_loss, epoch_seconds=time.perf_counter() - start,
                           images_per_s=images_per_s, lr=learning_rate(self.cfg.trainer, epoch),
                           epoch=epoch)
            self.epoch = epoch
            self.history.append(metrics)
            done.append(metrics)
            if "srcc" not in metrics:  # a gang member: rank 0 validates
                self.log.info("epoch %d: train loss %.5f (rank %d of %d)", epoch, train_loss,
                              self.gang.rank, self.gang.world)
            else:
                self.log.info("epoch %d: train loss %.5f | val srcc %.4f plcc %.4f acc %.4f "
                              "(constant %.4f) | %.1f s, %.0f img/s", epoch, train_loss, metrics["srcc"],
                              metrics["plcc"], metrics["accuracy"], metrics["constant_accuracy"],
                              metrics["epoch_seconds"], images_per_s)
            if on_epoch_end is not None and on_epoch_end(epoch, metrics) is False:
                break
        return done

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        t = self.cfg.trainer
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(t, epoch)
        self.model.train()
        data = self.split("train")
        self.feed.device_split("train")  # placement and style statistics are set up untimed
        self.feed.style_table("train")
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        bar = self._progress(len(data), f"epoch {epoch}")
        start = time.perf_counter()
        for batch in self.feed.batches("train", t.batch_size, self.generator, self.cfg.data.num_workers):
            self._check_abort()
            x, style, target = batch.x, batch.style, batch.scores / 10
            if self.gang is not None:  # this rank's rows of the global batch
                rows = self.gang.set_batch(len(batch))
                x, target = x[rows], target[rows]
                style = None if style is None else (style[0][rows], style[1][rows])
            with self._autocast():
                pred = (self.model if self.gang is not None else self.forward)(x, style)
            if self.gang is None:
                loss = self._loss(pred.float(), target)
            else:  # the slice's share of the global batch's mean loss
                loss = self._loss(pred.float(), target, reduction="sum") / len(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.gang is not None:
                self.gang.sum_gradients(self.trainable)  # one step per global batch, the same on every rank
            self.optimizer.step()
            loss_sum += loss.detach() * len(batch)
            seen += len(batch)
            bar.update(len(batch))
        if self.gang is not None:
            loss_sum = self.gang.sum(loss_sum)
        train_loss = loss_sum.item() / seen  # the epoch's one sync
        bar.close()
        return train_loss, seen / (time.perf_counter() - start)

    def _to_input(self, images: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 NHWC batch -> normalised float NCHW on the device (flipped where ``flip``)."""
        x = normalise_batch(images.to(self.device, non_blocking=True))
        if flip is not None:
            x = flip_batch(x, flip.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=self.memory_format)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.cfg.trainer.loss == "huber":
            return F.huber_loss(pred, target, delta=self.cfg.trainer.huber_delta, reduction=reduction)
        return F.mse_loss(pred, target, reduction=reduction)

    def _autocast(self):
        if self.on_cuda and self.cfg.trainer.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _progress(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="img", leave=False, disable=not progress_enabled(),
                    dynamic_ncols=True)

    # ---- evaluation ----------------------------------------------------------
    def split(self, name: str) -> ImageSplit:
        return self.feed.split(name)

    @torch.inference_mode()
    def predict(self, split: str = "val") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(predicted scores, true scores, image names) on the 0-10 scale, in CSV order."""
        data = self.split(split)
        self.model.eval()
        batch_size = self.cfg.trainer.eval_batch_size or EVAL_BATCH_FACTOR * self.cfg.trainer.batch_size
        preds = []
        for batch in self.feed.batches(split, batch_size, None, self.cfg.data.num_workers):
            self._check_abort()
            with self._autocast():
                preds.append(self.forward(batch.x, batch.style).float())
        pred = (torch.cat(preds) * 10).cpu().numpy().astype(np.float64)
        return pred, data.scores.astype(np.float64), list(data.names)

    def evaluate(self, split: str = "val") -> dict:
        """accuracy, constant_accuracy, plcc, srcc, mse of ``split`` (model/metrics.py)."""
        pred, true, _ = self.predict(split)
        return compute_metrics(pred, true)

    # ---- checkpoints ---------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything that changes while training, and nothing that does not; a copy on the host.

        The VGG encoder and frozen pretrained tensors are left out (they are
        rebuilt from the config); a fingerprint of them is kept to refuse a
        mismatched resume. The generic branch's BN running statistics are kept
        when they update (the paper's mode). The learning-rate schedule is a
        pure function of the epoch, so the epoch is all of its state.
        """
        return self.snapshot()

    def snapshot(self) -> HostSnapshot:
        """state_dict() as a host copy taken now (model/checkpoint.py): training may go on at once.

        Hand it to a CheckpointWriter to write it off the critical path; record
        a value only after that write's Future has resolved (it is durable then).
        """
        np_state = np.random.get_state()
        live = {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_mapping(),
            "epoch": self.epoch,
            "history": [dict(m) for m in self.history],
            "model": self.model.changing_state_dict(),
            "frozen_fingerprint": self.fingerprint,
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
                "python": random.getstate(),
                "generator": self.generator.get_state(),
            },
        }
        return snapshot_to_host(live)

    def load_state_dict(self, state: dict) -> None:
        try:
            if state.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"checkpoint format {state.get('format')!r}, "
                                      f"expected {CHECKPOINT_FORMAT}")
            if state["config"].get("model") != self.cfg.to_mapping()["model"]:
                raise CheckpointError("checkpoint: [model] section differs from this run's config")
            if state["frozen_fingerprint"] != self.fingerprint:
                raise CheckpointError("checkpoint: frozen weights differ (other seed or pretrained file)")
            self.model.load_changing_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            name, keys, *rest = rng["numpy"]
            np.random.set_state((name, keys.numpy(), *rest))
            random.setstate(_as_tuple(rng["python"]))
            self.generator.set_state(rng["generator"])
            self.epoch = int(state["epoch"])
            self.history = [dict(m) for m in state["history"]]
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint does not fit this run ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''})") from None

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write state_dict() atomically and durably with its checksum: never half a file."""
        return write_durable(self.snapshot(), path)

    def save_checkpoint_async(self, path: str | Path, writer: CheckpointWriter) -> "Future[Path]":
        """Snapshot now, write (durably) on ``writer``'s thread; the Future resolves when it is on disk."""
        return writer.save(self.snapshot(), path)

    @classmethod
    def from_checkpoint(cls, path: str | Path | bytes, device: str | None = None, log=None,
                        config: RunConfig | None = None) -> "Trainer":
        """A trainer resumed from a checkpoint file (or its bytes); ``config`` overrides the stored one."""
        state = read_checkpoint(path)
        try:
            cfg = config or RunConfig.from_mapping(state["config"], source=f"{path} [config]")
        except KeyError:
            raise CheckpointError(f"{path}: no config inside") from None
        trainer = cls(cfg, device=device, log=log)
        try:
            trainer.load_state_dict(state)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        return trainer


def read_checkpoint(path: str | Path | bytes) -> dict:
    """Load a checkpoint dict; missing or corrupt -> CheckpointError naming the file."""
    name = "<bytes>" if isinstance(path, (bytes, bytearray)) else str(path)
    # Checksum verified first: torch's zip reader would load a damaged file silently.
    if isinstance(path, (bytes, bytearray)):
        payload = checkpoint_file.unframe(bytes(path), name)
    else:
        payload = checkpoint_file.read(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise checkpoint_file.DamagedCheckpoint(f"{name}: not a readable checkpoint "
                                                f"({type(err).__name__})") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{name}: not a SAAN trainer checkpoint")
    return state


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
