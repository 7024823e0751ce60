"""A full disk under OpenVINO says so (issue 16 item 15): OpenVINO reports any failed write of its IR
as "basic_ios::clear: iostream error"."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
from infermatrix.engines.openvino_engine import save_ir  # noqa: E402


def a_model():
    from openvino import opset13 as ops
    x = ops.parameter([1, 512], np.float32, name="x")
    w = ops.constant(np.random.default_rng(0).random((512, 512), dtype=np.float32))   # 1 MiB of weights
    return ov.Model([ops.matmul(x, w, False, False)], [x])


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB filesystem where the machine lets us mount one (root, Linux), else a skip."""
    where = tmp_path / "full"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs here")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def test_a_real_full_disk_is_named(tiny_disk):
    with pytest.raises(OSError) as info:
        save_ir(a_model(), tiny_disk / "model.xml")
    assert info.value.errno == errno.ENOSPC
    assert f"no space left on {tiny_disk}" in str(info.value) and "iostream" not in str(info.value)


def test_the_same_message_off_a_real_full_disk(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")
    monkeypatch.setattr(ov, "save_model", fails)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 1 << 30, 4096))
    with pytest.raises(OSError, match=r"no space left on .*: OpenVINO could not write model.xml \(about 10485"):
        save_ir(a_model(), tmp_path / "model.xml")


def test_a_write_error_with_space_left_is_not_called_a_full_disk(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")
    monkeypatch.setattr(ov, "save_model", fails)
    with pytest.raises(OSError) as info:
        save_ir(a_model(), Path(tmp_path) / "model.xml")
    assert info.value.errno == errno.EIO and "OpenVINO could not write" in str(info.value)
