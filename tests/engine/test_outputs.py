"""Unwritable or full output locations: a one-line error, and nothing written earlier is lost.

Two ways to make writing fail: a patched writer (always runs) raising the errors a read-only
directory (EROFS/EACCES) and a full disk (ENOSPC) raise, and, where this process may mount one
(Linux, root), a real tiny tmpfs that is filled up or remounted read-only.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

import detect.io
from detect.engine.checkpoint import load_checkpoint
from detect.engine.trainer import Trainer
from detect.errors import DetectError, OutputError
from detect.io import atomic_write_json, atomic_write_text
from tests.engine.test_trainer import tiny_config


def trained_run(tmp_path, output_dir):
    """A run folder holding a finished epoch: last.pt, config, logs, summary."""
    trainer = Trainer(tiny_config(tmp_path, f"train.output_dir={output_dir}", "train.epochs=1"),
                      progress=False, tensorboard=False)
    trainer.fit()
    return {path.name: path.read_bytes() for path in output_dir.iterdir() if path.is_file()}


def assert_untouched(directory, before, logs_may_grow=False):
    """Every earlier file is byte-identical, no temporary file is left, last.pt loads.

    With ``logs_may_grow`` (the run trained before its checkpoint write failed), the CSV logs may
    have gained rows after the earlier ones, and the effective config and loss curve are rewritten.
    """
    after = {path.name: path.read_bytes() for path in directory.iterdir() if path.is_file()}
    if logs_may_grow:
        for name in ("log.csv", "metrics.csv"):
            assert after[name].startswith(before[name]), f"{name} lost rows"
        before = {name: data for name, data in before.items()
                  if name not in ("log.csv", "metrics.csv", "config.yaml", "loss_curve.png")}
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, f"files written earlier changed: {changed}"
    assert not [name for name in os.listdir(directory) if name.endswith(".tmp")], "temporary file left behind"
    load_checkpoint(directory / "last.pt")


def failing(error_number):
    def fail(*args, **kwargs):
        raise OSError(error_number, os.strerror(error_number))
    return fail


@pytest.mark.parametrize("error_number, where", [(errno.EROFS, "mkstemp"), (errno.EACCES, "mkstemp"),
                                                  (errno.ENOSPC, "fsync")])
def test_resume_into_unwritable_or_full_directory(tmp_path, monkeypatch, error_number, where):
    run = tmp_path / "run"
    before = trained_run(tmp_path, run)
    if where == "mkstemp":
        monkeypatch.setattr(detect.io.tempfile, "mkstemp", failing(error_number))
    else:  # the temporary file is created and written, then the disk is full
        monkeypatch.setattr(detect.io.os, "fsync", failing(error_number))
    trainer = Trainer(tiny_config(tmp_path, f"train.output_dir={run}", "train.epochs=2"),
                      progress=False, tensorboard=False)
    with pytest.raises(OutputError) as caught:
        trainer.fit(resume=run / "last.pt")
    message = str(caught.value)
    assert "\n" not in message and str(run) in message and os.strerror(error_number) in message
    assert "output directory" in message
    monkeypatch.undo()
    assert_untouched(run, before)


def test_full_disk_at_the_checkpoint_keeps_the_earlier_one(tmp_path, monkeypatch):
    run = tmp_path / "run"
    before = trained_run(tmp_path, run)
    real = detect.io.tempfile.mkstemp

    def full_for_checkpoints(*args, **kwargs):
        if kwargs.get("prefix", "").startswith(".last.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)
    monkeypatch.setattr(detect.io.tempfile, "mkstemp", full_for_checkpoints)
    trainer = Trainer(tiny_config(tmp_path, f"train.output_dir={run}", "train.epochs=2"),
                      progress=False, tensorboard=False)
    with pytest.raises(OutputError, match="No space left on device") as caught:
        trainer.fit(resume=run / "last.pt")
    assert str(run / "last.pt") in str(caught.value)
    monkeypatch.undo()
    assert_untouched(run, before, logs_may_grow=True)
    assert load_checkpoint(run / "last.pt")["iteration"] == 4


def test_output_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    trainer = Trainer(tiny_config(tmp_path, f"train.output_dir={blocker / 'run'}"), progress=False, tensorboard=False)
    with pytest.raises(OutputError, match="cannot create the output directory") as caught:
        trainer.fit()
    assert str(blocker / "run") in str(caught.value)
    assert blocker.read_text() == "not a directory"


def test_failed_write_keeps_previous_version(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"map": 0.5})
    monkeypatch.setattr(detect.io.os, "fsync", failing(errno.ENOSPC))
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write_text(path, "x" * 10_000)
    monkeypatch.undo()
    assert path.read_text() == '{\n  "map": 0.5\n}\n'
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_interrupted_writer_leaves_no_partial_file(tmp_path):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")
    with pytest.raises(KeyboardInterrupt):
        with detect.io.atomic_open(path, "w") as handle:
            handle.write("half of the new")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["summary.json"]


# --------------------------------------------------------------- a real tiny filesystem


@pytest.fixture
def tiny_filesystem(tmp_path):
    """Mount a tmpfs under ``tmp_path``; skip where this process may not mount (not Linux root)."""
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a size-limited tmpfs needs Linux and root")
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()

    def mount(size_bytes: int, *options: str) -> None:
        option = ",".join([f"size={size_bytes}", *options])
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", option, "tmpfs", str(mount_point)],
                                capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")
    mount.point = mount_point
    yield mount
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_full_disk_during_training_keeps_last_checkpoint(tmp_path, tiny_filesystem):
    staging = tmp_path / "staging"
    before = trained_run(tmp_path, staging)
    # room for the earlier run plus half a checkpoint: the next last.pt cannot be written
    size = sum(len(data) for data in before.values()) + len(before["last.pt"]) // 2
    tiny_filesystem(size)
    run = tiny_filesystem.point / "run"
    shutil.copytree(staging, run)
    trainer = Trainer(tiny_config(tmp_path, f"train.output_dir={run}", "train.epochs=2"),
                      progress=False, tensorboard=False)
    with pytest.raises(DetectError, match="No space left on device"):
        trainer.fit(resume=run / "last.pt")
    assert_untouched(run, before, logs_may_grow=True)
    assert load_checkpoint(run / "last.pt")["iteration"] == 4


def test_read_only_filesystem(tmp_path, tiny_filesystem):
    staging = tmp_path / "staging"
    before = trained_run(tmp_path, staging)
    tiny_filesystem(64 << 20)
    run = tiny_filesystem.point / "run"
    shutil.copytree(staging, run)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(tiny_filesystem.point)], capture_output=True)
    if remount.returncode:
        pytest.skip("cannot remount read-only here")
    trainer = Trainer(tiny_config(tmp_path, f"train.output_dir={run}", "train.epochs=2"),
                      progress=False, tensorboard=False)
    with pytest.raises(OutputError, match="Read-only file system"):
        trainer.fit(resume=run / "last.pt")
    assert_untouched(run, before)
