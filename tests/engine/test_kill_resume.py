"""kill -9 in the middle of an epoch, then --resume: the same weights as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from detect.config import DEFAULT_CONFIG_PATH, load_config
from detect.engine.checkpoint import load_checkpoint
from detect.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]

COMMON = ["data.builtin.image_size=64", "data.builtin.num_trainval=8", "data.builtin.num_test=2",
          "data.num_workers=0", "data.augmentation.max_size=64", "model.input_size=64", "train.epochs=3",
          "train.batch_size=2", "train.warmup_iters=2", "train.eval_every=0", "train.checkpoint_every=1",
          "train.log_every=1",
          # The default config fine-tunes ../shared's MobileNetV2; these runs need no weights file.
          "model.backbone.name=small", "model.backbone.weights=null", "model.backbone.frozen_stages=0",
          # Fused AdamW, whose state the checkpoint must restore exactly (the default fine-tunes with SGD).
          "train.optimizer=adamw", "train.lr=0.0015", "train.weight_decay=0.01"]
DETECTORS = {
    "faster_rcnn": ["model.anchors.sizes=[8,16,32]", "model.rpn.min_size=1", "model.rpn.pre_nms_top_n_train=300",
                    "model.rpn.post_nms_top_n_train=100", "model.rpn.pre_nms_top_n_test=300",
                    "model.rpn.post_nms_top_n_test=50", "model.roi_head.hidden_dim=32",
                    "model.roi_head.batch_size_per_image=16"],
    "yolo": ["model.name=yolo", "model.yolo.grid_size=4", "model.yolo.conv_channels=[16]", "model.yolo.hidden_dim=32"],
}

# The child trains with tools/train.py's code path; each step is slowed down so that the parent
# can kill it between two checkpoints (where exactly does not matter: last.pt is atomic).
CHILD = textwrap.dedent("""
    import sys, time
    from detect.engine import trainer as engine
    step = engine.Trainer._step
    def slow_step(self, *args, **kwargs):
        time.sleep(0.3)
        return step(self, *args, **kwargs)
    engine.Trainer._step = slow_step
    sys.argv = ["train.py", "--quiet", *sys.argv[1:]]
    sys.path.insert(0, "tools")
    import train
    sys.exit(train.main())
""")


def overrides(tmp_path: Path, name: str, run: str) -> list[str]:
    return [f"data.builtin_root={tmp_path / 'shapes'}", *COMMON, *DETECTORS[name], f"train.output_dir={tmp_path / run}"]


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_kill_9_mid_epoch_then_resume_is_bitwise_identical(tmp_path, name):
    torch.manual_seed(0)
    # tools/train.py without --config starts from the default config, and so does this run.
    config = load_config(ROOT / DEFAULT_CONFIG_PATH, overrides(tmp_path, name, "straight"))
    straight = Trainer(config, progress=False, tensorboard=False)
    straight.fit()
    total = straight.iteration

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, *overrides(tmp_path, name, "killed")], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.exists() and 2 <= load_checkpoint(last)["iteration"] < total - 2:
            break
        assert child.poll() is None, child.stderr.read().decode()
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    stopped_at = load_checkpoint(last)["iteration"]
    assert child.returncode == -signal.SIGKILL and 2 <= stopped_at < total
    assert load_checkpoint(last)["batch"] != 0 or stopped_at % 4 == 0

    resumed = subprocess.run([sys.executable, "tools/train.py", "--quiet", "--resume",
                              *overrides(tmp_path, name, "killed")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = load_checkpoint(last)
    assert final["iteration"] == total
    expected = straight.model.state_dict()
    for key, value in final["model"].items():
        assert torch.equal(expected[key].cpu(), value), f"{key} differs after kill -9 and resume"
