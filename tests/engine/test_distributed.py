"""Multi-process training on CPU with gloo (issue 8): two processes equal one with the same global batch.

Tolerance: weights of the two ranks are bitwise equal (DDP gives both the same averaged
gradient); against the single-process run they agree to 1e-5 absolute + 1e-4 relative, the
difference being float summation order (all-reduce of per-rank gradient sums, BatchNorm
statistics from per-rank sums) over a few iterations.

Compared: YOLO with dropout off, and Faster R-CNN, whose anchor and RoI sampling draws from a
generator seeded per image (:func:`detect.boxes.sampling_generator`), so that both runs sample
the same minibatches whatever process trains on an image.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from detect.config import load_config
from detect.distributed import DistributedBatchNorm2d, share
from detect.engine.checkpoint import load_checkpoint
from detect.engine.batches import EpochBatches, batches_per_epoch
from detect.engine.trainer import Trainer
from tests.engine.test_kill_resume import COMMON, DETECTORS

ROOT = Path(__file__).resolve().parents[2]
# 11 images, global batch 3: batches of 3, 3, 3, 2 → rank shares 2/1 (unequal: the loss weighting
# matters) and a last batch of 1/1.
RUN = ["train.batch_size=3", "train.epochs=1", "data.builtin.num_trainval=11", "train.checkpoint_every=0",
       "train.eval_every=1"]
COMPARED = {"yolo": [*COMMON, *DETECTORS["yolo"], "model.yolo.dropout=0.0", *RUN],
            "faster_rcnn": [*COMMON, *DETECTORS["faster_rcnn"], *RUN]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_config(tmp_path: Path, name: str, run: str):
    return load_config(None, [f"data.builtin_root={tmp_path / 'shapes'}", *COMPARED[name],
                              f"train.output_dir={tmp_path / run}"])


def _rank_main(rank: int, world_size: int, port: int, tmp_path: Path, name: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from detect import distributed

    distributed.init_from_environment("cpu")
    trainer = Trainer(run_config(tmp_path, name, "ddp"), progress=False, tensorboard=False)
    summary = trainer.fit()
    torch.save({"model": trainer.model.state_dict(), "map": summary["map"]}, tmp_path / f"rank{rank}.pt")
    distributed.barrier()   # nobody leaves the group while another rank still talks to it
    distributed.shutdown()


@pytest.mark.parametrize("name", sorted(COMPARED))
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path, name):
    single = Trainer(run_config(tmp_path, name, "single"), progress=False, tensorboard=False)
    single_summary = single.fit()
    assert single_summary["iterations"] == 4
    mp.start_processes(_rank_main, args=(2, free_port(), tmp_path, name), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    expected = single.model.state_dict()
    assert ranks[0]["model"].keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name]), f"ranks differ in {name}"
        if value.is_floating_point():
            torch.testing.assert_close(ranks[0]["model"][name], value, atol=1e-5, rtol=1e-4, msg=name)
        else:
            assert torch.equal(ranks[0]["model"][name], value), name
    assert ranks[0]["map"] == ranks[1]["map"]                      # evaluation gathered, same on all ranks
    assert abs(ranks[0]["map"] - single_summary["map"]) < 1e-6
    checkpoint = load_checkpoint(tmp_path / "ddp" / "last.pt")     # written once, by rank 0
    assert len(checkpoint["rng_per_rank"]) == 2 and checkpoint["iteration"] == 4


def test_batches_are_split_into_contiguous_shares_of_the_single_process_batches():
    one = list(EpochBatches(10, 4, seed=3, epoch=1))
    ranks = [list(EpochBatches(10, 4, seed=3, epoch=1, rank=r, world_size=3)) for r in range(3)]
    # 10 images, global batch 4, 3 ranks: batches of 4, 4 and 2; the last (2 < 3 ranks) is dropped
    assert batches_per_epoch(10, 4, 3) == 2 and batches_per_epoch(10, 4, 1) == 3
    assert [len(b) for b in one] == [4, 4, 2]
    for index in range(2):
        assert sum((ranks[r][index] for r in range(3)), []) == one[index]
        assert [len(ranks[r][index]) for r in range(3)] == [2, 1, 1]
    assert share([1, 2, 3, 4, 5], 1, 2) == [4, 5] and share([1, 2, 3, 4, 5], 0, 2) == [1, 2, 3]
    resumed = list(EpochBatches(10, 4, seed=3, epoch=1, start=1, rank=2, world_size=3))
    assert resumed == ranks[2][1:]


def _batchnorm_rank(rank: int, world_size: int, port: int, tmp_path: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from detect import distributed

    distributed.init_from_environment("cpu")
    x, layers = _batchnorm_case()
    mine = x[:3] if rank == 0 else x[3:]              # unequal shares: 3 and 1 images
    results = []
    for layer in layers:
        synced = distributed.convert_batchnorm(torch.nn.Sequential(layer), torch.device("cpu"))
        assert isinstance(synced[0], DistributedBatchNorm2d)
        inputs = mine.clone().requires_grad_(True)
        output = synced(inputs)
        (output * torch.arange(output.numel()).view_as(output).sin()).sum().backward()   # grads reduced by hand below
        grads = [inputs.grad] + [distributed.all_reduce_sum(p.grad) for p in synced.parameters()]
        results.append({"output": output.detach(), "grads": grads, "state": synced[0].state_dict()})
    torch.save(results, tmp_path / f"bn{rank}.pt")
    distributed.barrier()
    distributed.shutdown()


def _batchnorm_case():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5) * 0.5 + 100.0         # |mean| ≫ std: E[x²] − E[x]² would be off by ~1e-3
    return x, [torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3, momentum=None)]


def test_distributed_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path):
    mp.start_processes(_batchnorm_rank, args=(2, free_port(), tmp_path), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(2)]
    x, layers = _batchnorm_case()
    for index, layer in enumerate(layers):
        inputs = x.clone().requires_grad_(True)
        output = layer(inputs)
        (torch.cat([output[:3] * torch.arange(output[:3].numel()).view_as(output[:3]).sin(),
                    output[3:] * torch.arange(output[3:].numel()).view_as(output[3:]).sin()])).sum().backward()
        got = torch.cat([ranks[0][index]["output"], ranks[1][index]["output"]])
        torch.testing.assert_close(got, output.detach(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.cat([ranks[0][index]["grads"][0], ranks[1][index]["grads"][0]]), inputs.grad,
                                   atol=1e-3, rtol=1e-3)
        for mine, expected in zip(ranks[0][index]["grads"][1:], [p.grad for p in layer.parameters()]):
            torch.testing.assert_close(mine, expected, atol=1e-3, rtol=1e-4)
        for key, value in layer.state_dict().items():
            torch.testing.assert_close(ranks[0][index]["state"][key], value, atol=1e-4, rtol=1e-4, msg=key)
            torch.testing.assert_close(ranks[1][index]["state"][key], value, atol=1e-4, rtol=1e-4, msg=key)


def test_torchrun_trains_faster_rcnn_with_two_processes(tmp_path):
    overrides = [f"data.builtin_root={tmp_path / 'shapes'}", *COMMON, *DETECTORS["faster_rcnn"],
                 "train.epochs=1", "train.eval_every=1", f"train.output_dir={tmp_path / 'run'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "tools/train.py", "--quiet", *overrides], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test mAP@0.5 (VOC07)") == 1          # rank 0 alone reports
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["iteration"] == 4 and len(checkpoint["rng_per_rank"]) == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())


def test_global_batch_smaller_than_the_number_of_processes_is_refused(tmp_path, monkeypatch):
    from detect import distributed
    from detect.errors import ConfigError

    monkeypatch.setattr(distributed, "context", lambda: distributed.DistributedContext(0, 2, 0))
    config = load_config(None, [f"data.builtin_root={tmp_path / 'shapes'}", *COMPARED["yolo"], "train.batch_size=1",
                                f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="global batch and must be at least the number of processes"):
        Trainer(config, progress=False, tensorboard=False)


def test_torchrun_runs_every_rcnn_stage_with_sharded_caches(tmp_path):
    overrides = [f"data.builtin_root={tmp_path / 'shapes'}", *COMMON, "data.builtin.num_test=4", "train.epochs=1",
                 "model.proposals.selective_search.max_boxes=100", "model.proposals.selective_search.min_size=2",
                 "model.proposals.workers=1", f"model.proposals.cache_dir={tmp_path / 'proposals'}",
                 f"model.rcnn.feature_cache_dir={tmp_path / 'features'}", f"train.output_dir={tmp_path / 'run'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "tools/train.py", "--quiet", "--config", "configs/rcnn_shapes.yaml", *overrides],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test mAP@0.5 (VOC07)") == 1
    assert len(list((tmp_path / "proposals").rglob("*.npz"))) == 8 + 4      # every image once, by either rank
    assert len(list((tmp_path / "features").rglob("*.npz"))) == 8
    assert "svm" in load_checkpoint(tmp_path / "run" / "best.pt")
