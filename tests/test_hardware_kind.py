"""The hardware kind (core/hardware_kind.py): the series key of a history and the id that names its
folder; `infermatrix kind` reads it without torch."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infermatrix.core.hardware import cpu_flags, hardware_id
from infermatrix.core.hardware_kind import (MAX_ID_CHARS, RESULT_FLAGS, HardwareKind, KindError, kind_of,
                                            result_flags, this_host_kind, torch_cuda_version)
from infermatrix.fixtures.machine import host_kind, library_versions

ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
XEON = HardwareKind(cpu_model="Intel(R) Xeon(R) Platinum 8480+", cpu_flags=("amx_bf16", "amx_int8", "amx_tile", "avx2",
                                                                             "avx512_bf16", "avx512_fp16", "avx512_vnni",
                                                                             "avx512f", "avx_vnni"),
                    cpus=16, gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, driver="580.65.06", cuda="13.0",
                    libraries=(("onnxruntime-gpu", "1.23.0"), ("tensorrt-cu13", "10.14.1"), ("torch", "2.14.1")))
EPYC = HardwareKind(cpu_model="AMD EPYC", cpu_flags=("avx2",), cpus=2, gpu_name=None, gpu_count=0, driver=None,
                    cuda=None, libraries=(("onnxruntime", "1.31.1"), ("torch", "2.14.1")))


def test_the_id_is_stable_across_versions_of_this_code():
    # a history folder is named by it: a change here splits every series in two
    assert XEON.id == "intel-xeon-platinum-8480-16cpu-amx-vnni-bf16-fp16-1x-nvidia-h100-80gb-f889219b"
    assert EPYC.id == "amd-epyc-2cpu-avx2-ee380256"


@pytest.mark.parametrize("change", [
    {"cpu_model": "Intel(R) Xeon(R) Platinum 8580"}, {"cpu_flags": ("avx2", "avx512f")}, {"cpus": 8},
    {"gpu_name": "NVIDIA A100-SXM4-80GB"}, {"gpu_count": 2}, {"driver": "575.57.08"}, {"cuda": "12.8"},
    {"libraries": (("onnxruntime-gpu", "1.23.0"), ("tensorrt-cu13", "10.14.2"), ("torch", "2.14.1"))},
    {"libraries": (("onnxruntime-gpu", "1.23.0"), ("torch", "2.14.1"))},
], ids=lambda c: next(iter(c)))
def test_each_field_that_changes_results_changes_the_id(change):
    other = replace(XEON, **change)
    assert other.id != XEON.id and other.digest != XEON.digest


def test_library_versions_change_the_kind_but_not_the_hardware():
    """An A/B of an upgrade compares two kinds of one machine: the compare gate matches the hardware."""
    upgraded = replace(EPYC, libraries=(("onnxruntime", "1.32.0"), ("torch", "2.14.1")))
    assert upgraded.id != EPYC.id and upgraded.hardware == EPYC.hardware == "AMD EPYC, 2 CPUs (avx2)"
    assert replace(EPYC, cpus=4).hardware != EPYC.hardware


def machine_info(node: str, kind: HardwareKind | None = None) -> dict:
    """pytest-benchmark's machine_info as the plugin extends it (with the kind, or as an older run saved it)."""
    ours = {"cpu_model": "AMD EPYC", "usable_cpus": 2, "logical_cpus": 2, "gpu": None,
            "libraries": {"torch": "2.14.1", "onnxruntime": "1.31.1"}}
    if kind is not None:
        ours["hardware_kind"] = kind.to_json()
    return {"node": node, "processor": "x86_64",
            "cpu": {"brand_raw": "AMD EPYC", "count": 2, "flags": ["avx", "avx2", "sse4_2", "fma"]}, "infermatrix": ours}


def test_the_same_kind_on_two_runners_is_one_kind():
    assert kind_of(machine_info("runner-a", EPYC)) == kind_of(machine_info("runner-b", EPYC)) == EPYC
    # and a run saved before kinds were recorded reads as the kind its machine_info describes
    assert kind_of(machine_info("runner-a")) == kind_of(machine_info("runner-b")) == EPYC
    assert hardware_id(machine_info("runner-a", EPYC)) == hardware_id(machine_info("runner-b")) == EPYC.hardware


def test_an_older_runs_machine_info_gives_its_kind():
    info = {"node": "gpu-box", "cpu": {"brand_raw": "ignored: infermatrix's cpu_model wins", "count": 32,
                                       # py-cpuinfo adds CPUID spellings beside the kernel's
                                       "flags": ["avx2", "avx512f", "avx512vnni", "avx512_bf16", "sse4_2"]},
            "infermatrix": {"cpu_model": "Intel Xeon", "usable_cpus": 16, "libraries": {"torch": "2.14.1"},
                            "gpu": {"name": "NVIDIA L4", "count": 2, "cuda": "13.0", "driver": "580.65.06",
                                    "memory_bytes": 1, "capability": "8.9"}}}
    assert kind_of(info) == HardwareKind(cpu_model="Intel Xeon", cpu_flags=("avx2", "avx512_bf16", "avx512_vnni",
                                                                            "avx512f"),
                                         cpus=16, gpu_name="NVIDIA L4", gpu_count=2, driver="580.65.06", cuda="13.0",
                                         libraries=(("torch", "2.14.1"),))
    # the oldest runs: a CPU model and a GPU name only; the hardware line is what it always was
    assert hardware_id({"infermatrix": {"cpu_model": "AMD EPYC", "gpu": {"name": "X"}}}) == "AMD EPYC + X"
    assert hardware_id({"cpu": {"brand_raw": "AMD EPYC"}}) == "AMD EPYC"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU host: its old-style gpu block needs torch")
def test_this_hosts_kind_equals_the_kind_derived_from_its_older_machine_info():
    """A history keeps one series across the change: an older run of this host derives the kind a
    new run records (the plugin's machine_info fields, without the hardware_kind key)."""
    from infermatrix.runner.run_stats import host_fingerprint
    older = {"cpu": {"flags": sorted(cpu_flags())},
             "infermatrix": {"cpu_model": host_fingerprint("cpu")["cpu"], "usable_cpus": len(os.sched_getaffinity(0)),
                             "libraries": library_versions(), "gpu": None}}
    assert kind_of(older) == host_kind()


def test_json_round_trip_and_a_stored_id_that_its_fields_do_not_give_is_refused():
    data = json.loads(json.dumps(XEON.to_json()))
    assert set(data) == {"id", "label", "fields"} and HardwareKind.from_json(data) == XEON
    assert "Xeon" in data["label"] and "H100" in data["label"] and "\n" not in data["label"]
    data["fields"]["cpus"] = 32
    with pytest.raises(KindError, match="does not match its fields"):
        HardwareKind.from_json(data)
    with pytest.raises(KindError, match="expected exactly"):
        HardwareKind.from_json({"fields": {"cpu_model": "x"}})


@pytest.mark.parametrize("change, message", [
    ({"cpu_model": " "}, "cpu_model"), ({"cpus": -1}, "cpus -1"), ({"gpu_count": 0}, "gpu_name 'NVIDIA H100"),
    ({"cpu_flags": ("avx2", "avx10")}, "cpu_flags"), ({"cpu_flags": ("avx512f", "avx2")}, "sorted"),
    ({"libraries": (("torch", "2"), ("onnx", "1"))}, "sorted"), ({"driver": ""}, "driver"),
])
def test_a_bad_field_is_refused_naming_it(change, message):
    with pytest.raises(KindError, match=re.escape(message)):
        replace(XEON, **change)


@settings(max_examples=200, deadline=None)
@given(cpu=st.text(min_size=1, max_size=300).filter(str.strip),
       gpu=st.none() | st.text(min_size=1, max_size=300).filter(str.strip),
       flags=st.sets(st.sampled_from(RESULT_FLAGS)), cpus=st.integers(0, 4096))
def test_the_id_is_a_short_filesystem_safe_name_whatever_the_model_names(cpu, gpu, flags, cpus):
    kind = HardwareKind(cpu_model=cpu, cpu_flags=tuple(sorted(flags)), cpus=cpus, gpu_name=gpu,
                        gpu_count=1 if gpu else 0, driver=None, cuda=None, libraries=())
    assert ID_RE.match(kind.id) and len(kind.id) <= MAX_ID_CHARS and kind.id.endswith(kind.digest)


def test_result_flags_keeps_only_those_that_change_results():
    assert result_flags(["sse4_2", "AVX2", "avx512vnni", "amx_tile", "avxvnni"]) == ("amx_tile", "avx2", "avx512_vnni",
                                                                                     "avx_vnni")


FAKE_SMI = """#!/bin/sh
echo "0, GPU-aaaa1111-0000, NVIDIA L4, 580.65.06"
echo "1, GPU-bbbb2222-0000, NVIDIA L4, 580.65.06"
"""


@pytest.mark.parametrize("visible, count", [(None, 2), ("1", 1), ("GPU-bbbb", 1), ("0,1", 2), ("", 0), ("7", 0)])
def test_the_gpus_are_the_ones_cuda_would_see(tmp_path, monkeypatch, visible, count):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    kind = this_host_kind({"torch": "2.14.1"})
    assert kind.gpu_count == count
    if count:
        assert (kind.gpu_name, kind.driver, kind.cuda) == ("NVIDIA L4", "580.65.06", torch_cuda_version())
    else:
        assert (kind.gpu_name, kind.driver, kind.cuda) == (None, None, None)


def test_the_cuda_version_read_without_torch_is_torchs():
    import torch
    assert torch_cuda_version() == torch.version.cuda


def test_infermatrix_kind_prints_the_id_and_never_imports_torch(repo_root):
    probe = ("import io, json, sys, contextlib\n"
             "from infermatrix.commands.main import main\n"
             "out = io.StringIO()\n"
             "with contextlib.redirect_stdout(out):\n"
             "    codes = [main(['kind']), main(['kind', '--json'])]\n"
             "heavy = sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt') if m in sys.modules)\n"
             "print(json.dumps({'codes': codes, 'heavy': heavy, 'out': out.getvalue()}))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=repo_root)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0] and result["heavy"] == []
    kind_id, whole = result["out"].split("\n", 1)
    assert kind_id == host_kind().id and ID_RE.match(kind_id)
    assert HardwareKind.from_json(json.loads(whole)).id == kind_id
