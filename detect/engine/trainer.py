"""The training loop shared by every SGD-trained detector.

``Trainer(config).fit()`` builds the datasets and the detector from the config, then runs SGD
with momentum, warm-up and a cosine or step schedule, gradient clipping and AMP (CUDA only),
showing a tqdm bar with ETA and running losses. It evaluates VOC07 mAP on the test split every
``train.eval_every`` epochs, keeps ``last.pt`` and ``best.pt`` (atomic writes), logs to CSV and
TensorBoard and draws ``loss_curve.png``.

Exact resume: batches come from a permutation seeded by ``(seed, epoch)``, augmentation from
``(seed, epoch, index)``, and every RNG state is stored in the checkpoint together with the
position inside the epoch, so ``fit(resume=True)`` continues with bit-identical weights (CPU).
SIGINT/SIGTERM save ``last.pt`` at the next iteration boundary before stopping; a NaN/Inf loss or
gradient stops training with a message naming the iteration and the loss, leaving the
checkpoints as they were.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from detect import distributed
from detect.config import Config, TrainConfig, dump_config
from detect.data.build import build_datasets
from detect.data.dataset import DetectionDataset
from detect.data.transforms import collate
from detect.engine.batches import EpochBatches, batches_per_epoch
from detect.engine.checkpoint import checkpoint_config, load_checkpoint, load_matching_weights, save_checkpoint
from detect.engine.evaluate import evaluate_detector
from detect.engine.history import TrainingLog
from detect.engine.runtime import autocast_dtype, rng_state, seed_everything, select_device, set_rng_state
from detect.engine.schedule import lr_factor
from detect.engine.stop_signals import StopSignal, ignore_stop_signals
from detect.errors import CheckpointError, ConfigError, DetectError
from detect.io import atomic_write_json, atomic_write_text, make_output_dir
from detect.models import build_detector

logger = logging.getLogger(__name__)


class TrainingDiverged(DetectError):
    """A loss or gradient became NaN/Inf."""


class TrainingInterrupted(DetectError):
    """SIGINT/SIGTERM arrived; ``last.pt`` holds the state at the interruption."""


def build_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the papers') or AdamW, with the configured learning rate and weight decay.

    AdamW runs as one fused kernel over all parameters: on the CPU, PyTorch's default is a Python
    loop of ~10 tensor operations per parameter, which took a quarter of a Faster R-CNN training
    step on the small backbone (36 ms of ~150; fused: under 3 ms).
    """
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class Trainer:
    """Train the detector a :class:`Config` describes.

    Args:
        config: the experiment.
        datasets: ``(train, test)``; built from ``config.data`` when None.
        progress: show tqdm bars.
        tensorboard: write TensorBoard events.
    """

    def __init__(self, config: Config, datasets: tuple[DetectionDataset, DetectionDataset] | None = None,
                 progress: bool = True, tensorboard: bool = True):
        self.config = config
        self.progress = progress
        self.tensorboard = tensorboard
        self.output_dir = Path(config.train.output_dir)
        self.dist = distributed.context()
        self.is_main = self.dist.is_main
        self.progress = progress and self.is_main
        self.device = distributed.device_for(select_device(config.train.device), self.dist)
        if self.dist.enabled and config.train.batch_size < self.dist.world_size:
            raise ConfigError(f"train.batch_size ({config.train.batch_size}) is the global batch and must be at "
                              f"least the number of processes ({self.dist.world_size})")
        seed_everything(config.train.seed)
        if datasets is None:
            with distributed.main_process_first():   # rank 0 generates the built-in data if absent
                datasets = build_datasets(config.data, config.train.seed)
        self.train_set, self.test_set = datasets
        self.train_set.seed = config.train.seed
        self.class_names = self.train_set.class_names
        self.model = build_detector(config.model, len(self.class_names)).to(self.device)
        if self.dist.enabled:  # same initial weights everywhere; then each rank its own random stream
            seed_everything(config.train.seed + self.dist.rank)
        self.forward_model = distributed.wrap(self.model, self.device)
        if self.model.uses_proposals:
            from detect.proposals.cache import attach_proposals

            for dataset in (self.train_set, self.test_set):
                if dataset.proposals is None:
                    attach_proposals(dataset, config.model.proposals, self.progress)
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(parameters, config.train)
        self.amp_dtype = autocast_dtype(self.device, cuda=config.train.amp, cpu=config.train.cpu_amp)
        if self.amp_dtype is not None and self.is_main:
            key = "train.amp" if self.device.type == "cuda" else "train.cpu_amp"
            logger.info("mixed precision: %s autocast on %s (%s=false for float32)",
                        str(self.amp_dtype).replace("torch.", ""), self.device.type, key)
        # float16 needs its gradients scaled against underflow; bfloat16 has float32's range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch = 0            # epoch in progress
        self.batch = 0            # next batch of that epoch
        self.iteration = 0        # optimizer steps done
        self.best_map = -math.inf
        self.metrics: dict[str, float] = {}
        self.final_evaluation = True

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict:
        states = distributed.all_gather_objects(rng_state())   # every rank's, for an exact resume
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "batch": self.batch, "iteration": self.iteration,
                "rng": states[0], "rng_per_rank": states, "metrics": self.metrics, "best_map": self.best_map}

    def save(self, name: str) -> Path:
        """Write a checkpoint (rank 0 only; every rank must call it: RNG states are gathered)."""
        path = self.output_dir / name
        state = self._state()
        if self.is_main:
            save_checkpoint(path, model=self.model, config=self.config, class_names=self.class_names, **state)
        return path

    def resume(self, path: str | Path) -> None:
        """Restore model, optimizer, position and RNG state from a ``last.pt``."""
        # On the CPU: the model and optimizer copy their tensors to the device, RNG states stay there.
        checkpoint = load_checkpoint(path, map_location="cpu")
        if checkpoint["class_names"] != self.class_names:
            raise CheckpointError("checkpoint classes differ from the dataset's; to fine-tune on new "
                                  "classes use --weights instead of --resume", path)
        saved = checkpoint_config(checkpoint, path)
        if saved.model != self.config.model:
            raise CheckpointError("checkpoint was trained with a different model config; resume with the "
                                  "same config (it is saved in the run folder as config.yaml)", path)
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint["scaler"]:   # empty when written without float16 scaling (CPU, bfloat16, float32)
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.batch, self.iteration = checkpoint["epoch"], checkpoint["batch"], checkpoint["iteration"]
        self.best_map, self.metrics = checkpoint["best_map"], checkpoint["metrics"]
        per_rank = checkpoint.get("rng_per_rank") or [checkpoint["rng"]]
        if len(per_rank) != self.dist.world_size:
            logger.warning("checkpoint was written by %d process(es), this run has %d: random streams restart, "
                           "so the resumed run is not bit-identical", len(per_rank), self.dist.world_size)
        set_rng_state(per_rank[self.dist.rank % len(per_rank)])
        logger.info("resumed from %s at epoch %d, batch %d (iteration %d)", path, self.epoch + 1, self.batch, self.iteration)

    def load_weights(self, path: str | Path) -> None:
        """Initialise from another checkpoint's weights (fine-tuning); mismatched tensors are skipped."""
        checkpoint = load_checkpoint(path, map_location=self.device)
        loaded, skipped = load_matching_weights(self.model, checkpoint["model"])
        logger.info("initialised %d tensors from %s", len(loaded), path)
        if skipped:
            logger.warning("skipped %d tensors that do not fit (re-initialised): %s", len(skipped), "; ".join(skipped))

    # ------------------------------------------------------------------ loop

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        sampler = EpochBatches(len(self.train_set), self.config.train.batch_size, self.config.train.seed, epoch,
                               start_batch, self.dist.rank, self.dist.world_size)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate,
                          num_workers=self.config.data.num_workers, worker_init_fn=ignore_stop_signals,
                          generator=torch.Generator().manual_seed(self.config.train.seed + epoch))

    def _interrupted(self, reason: str, history: TrainingLog) -> TrainingInterrupted:
        """Save ``last.pt`` and the logs at an iteration boundary; the error to raise."""
        self.save("last.pt")
        history.flush()
        return TrainingInterrupted(f"{reason or 'a signal to another process'}: stopped at iteration {self.iteration}; last.pt saved — "
                                   "continue with --resume", self.output_dir / "last.pt")

    def _batches(self, stop: StopSignal, history: TrainingLog) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        """The remaining batches of the current epoch.

        Ctrl-C reaches the loader's worker processes too, which then exit; once a stop was
        requested, that loader failure is reported as the interruption it is.
        """
        iterator = iter(self._loader(self.epoch, self.batch))
        try:
            while True:
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                except RuntimeError:
                    if stop.received is None or self.dist.enabled:
                        raise
                    raise self._interrupted(stop.received, history) from None
                yield batch
        finally:
            # However the epoch ends (its end, a bad image, a stop, max_iterations): the workers
            # ignore SIGTERM, so the interpreter's exit could not stop them; the loader must.
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    def iterations_per_epoch(self) -> int:
        return batches_per_epoch(len(self.train_set), self.config.train.batch_size, self.dist.world_size)

    def fit(self, resume: str | Path | None = None, max_iterations: int | None = None,
            final_evaluation: bool = True) -> dict:
        """Train to the end of the schedule (or ``max_iterations`` optimizer steps in total).

        ``final_evaluation=False`` skips the test-set evaluation after the last iteration (R-CNN's
        fine-tuning stage, whose softmax detector is not the one it ships).

        Returns:
            summary dict: final metrics, checkpoint paths, wall-clock seconds.
        """
        config = self.config.train
        self.final_evaluation = final_evaluation
        if len(self.train_set) == 0:
            raise DetectError(f"training split {self.train_set.name!r} has no images")
        if resume is not None:
            self.resume(resume)
        make_output_dir(self.output_dir)
        if self.is_main:
            atomic_write_text(self.output_dir / "config.yaml", dump_config(self.config))
        history = TrainingLog(self.output_dir, resume_iteration=self.iteration if resume else None,
                              tensorboard=self.tensorboard, enabled=self.is_main)
        per_epoch = self.iterations_per_epoch()
        total = config.epochs * per_epoch
        end = total if max_iterations is None else min(total, max_iterations)
        started = time.perf_counter()
        bar = tqdm(total=end, initial=self.iteration, unit="it", disable=not self.progress, dynamic_ncols=True)
        running: dict[str, float] = {}
        self.model.train()
        try:
            with StopSignal() as stop, bar:
                while self.epoch < config.epochs and self.iteration < end:
                    self.train_set.set_epoch(self.epoch)
                    with contextlib.closing(self._batches(stop, history)) as batches:   # closed on break or error
                        for images, targets in batches:
                            losses = self._step(images, targets, self.iteration, total, per_epoch)
                            self.iteration += 1
                            self.batch += 1
                            for name, value in losses.items():
                                running[name] = value if name not in running else 0.9 * running[name] + 0.1 * value
                            bar.set_description(f"epoch {self.epoch + 1}/{config.epochs}")
                            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
                            bar.update()
                            if self.iteration % config.log_every == 0:
                                history.log_losses(self.iteration, self.epoch, self._lr(), losses)
                            if distributed.any_rank(stop.received is not None, self.device):
                                raise self._interrupted(stop.received, history)
                            if config.checkpoint_every and self.iteration % config.checkpoint_every == 0:
                                self.save("last.pt")
                            if self.iteration >= end:
                                break
                    if self.batch >= per_epoch:
                        self.epoch, self.batch = self.epoch + 1, 0
                        if self._evaluation_due():
                            self._evaluate(history)
                        self.save("last.pt")
                        history.flush()
            if final_evaluation and (not self.metrics or self.metrics.get("iteration") != self.iteration):
                self._evaluate(history)
                self.save("last.pt")
        finally:
            history.close()
        seconds = time.perf_counter() - started
        summary = {"map": self.metrics.get("map"), "metric": "voc07", "iterations": self.iteration,
                   "train_seconds": seconds, "last": str(self.output_dir / "last.pt"),
                   "best": str(self.output_dir / "best.pt"), "ap": self.metrics.get("ap", {})}
        if self.is_main:
            atomic_write_json(self.output_dir / "summary.json", summary)
        distributed.barrier()
        return summary

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _step(self, images: list[torch.Tensor], targets: list[dict], iteration: int, total: int,
              per_epoch: int) -> dict[str, float]:
        config = self.config.train
        lr = config.lr * lr_factor(iteration, total, per_epoch, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = [image.to(self.device, non_blocking=True) for image in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.forward_model(images, targets)
        total_loss = sum(losses.values())
        if self.dist.enabled:
            # This rank's share of the global batch: DDP averages gradients over ranks, so weighting
            # each by share × ranks gives the gradient of the global batch's per-image mean.
            global_count = min(config.batch_size, len(self.train_set) - self.batch * config.batch_size)
            total_loss = total_loss * (len(images) * self.dist.world_size / global_count)
        stacked = torch.stack([value.detach().float() for value in losses.values()])
        if self.dist.enabled:
            # The global batch's per-image mean (shares weighted by size); every rank gets the same
            # values, so all agree on a NaN anywhere and stop together.
            sums = distributed.all_reduce_sum(torch.cat([stacked * len(images), stacked.new_tensor([len(images)])]))
            stacked = sums[:-1] / sums[-1]
        values = {name: float(value) for name, value in zip(losses, stacked)}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(
                f"loss {', '.join(bad)} is {values[bad[0]]} at iteration {iteration + 1} (epoch {self.epoch + 1}); "
                "training stopped, checkpoints untouched — lower train.lr or raise train.warmup_iters",
                self.output_dir)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total_loss).backward()
        self.scaler.unscale_(self.optimizer)
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(parameters, config.clip_grad_norm if config.clip_grad_norm > 0 else math.inf)
        if not torch.isfinite(norm) and not self.scaler.is_enabled():  # the float16 scaler skips such steps itself
            raise TrainingDiverged(
                f"gradient norm is {float(norm)} at iteration {iteration + 1} (epoch {self.epoch + 1}); "
                "training stopped, checkpoints untouched — lower train.lr or enable train.clip_grad_norm",
                self.output_dir)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return values

    def _evaluation_due(self) -> bool:
        every = self.config.train.eval_every
        return (every > 0 and self.epoch % every == 0) or (self.epoch == self.config.train.epochs
                                                             and self.final_evaluation)

    def _evaluate(self, history: TrainingLog) -> None:
        self.model.eval()
        result, _ = evaluate_detector(self.model, self.test_set, self.device, metric="voc07",
                                      num_workers=self.config.data.num_workers, progress=self.progress,
                                      distributed=self.dist.enabled)
        self.model.train()
        value = float(result.map) if not math.isnan(result.map) else 0.0
        self.metrics = {"map": value, "iteration": self.iteration, "epoch": self.epoch,
                        "ap": result.as_dict()["ap"]}
        history.log_metrics(self.iteration, self.epoch, {"map": value})
        if self.is_main:
            logger.info("epoch %d: test mAP@0.5 (VOC07) = %.4f\n%s", self.epoch, value, result.table())
        if value > self.best_map:
            self.best_map = value
            self.save("best.pt")
