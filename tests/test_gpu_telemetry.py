"""The GPU timing and telemetry code that can run without a GPU.

NVML readers where NVML or the GPU is absent (None and a reason, never a number), clock-event
reason decoding and the energy arithmetic as pure functions, the CUDA-event summary math on
given samples, bench/gpu_check.py's table from constructed runs and its no-GPU exit. The CUDA
and NVML readings themselves need a GPU and are not exercised here.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from bench import gpu_check
from infermatrix.core.percentiles import NOTES_KEY
from infermatrix.scenarios import gpu_telemetry as gt
from infermatrix.scenarios.gpu_timing import gpu_timing_summary
from tests.runs import bench, write_run

NO_CUDA = not torch.cuda.is_available()


def _bit(name: str, documented: int) -> int:
    """A reason bit from nvidia-ml-py when installed, else NVML's documented value."""
    return getattr(gt.pynvml, name, documented)


IDLE = _bit("nvmlClocksEventReasonGpuIdle", 0x1)
APP_CLOCKS = _bit("nvmlClocksEventReasonApplicationsClocksSetting", 0x2)
SW_POWER = _bit("nvmlClocksEventReasonSwPowerCap", 0x4)
HW_SLOW = _bit("nvmlClocksEventReasonHwSlowdown", 0x8)
HW_THERMAL = _bit("nvmlClocksEventReasonHwThermalSlowdown", 0x40)


# ---- NVML absent ----
@pytest.fixture
def without_pynvml(monkeypatch):
    """The module as it is where nvidia-ml-py is not installed."""
    monkeypatch.setattr(gt, "pynvml", None)
    gt.nvml.cache_clear()
    yield
    gt.nvml.cache_clear()


def test_readers_without_nvidia_ml_py_give_none_and_the_reason(without_pynvml):
    lib, why = gt.nvml()
    assert lib is None and "pip install nvidia-ml-py" in why
    snap = gt.snapshot(0)
    assert {k: snap[k] for k in ("sm_clock_mhz", "temperature_c", "clock_event_reasons", "throttled")} == \
        dict.fromkeys(("sm_clock_mhz", "temperature_c", "clock_event_reasons", "throttled"))
    assert "nvidia-ml-py" in snap["notes"]["all"]
    calls = []
    energy = gt.energy_window(lambda: calls.append(1), 0, batch_size=8)
    assert energy["energy_j_per_inference"] is None and energy["avg_power_w"] is None
    assert "nvidia-ml-py" in energy["energy_reason"] and not calls  # nothing run for a figure that cannot come


@pytest.mark.skipif(gt.pynvml is None or gt.nvml()[0] is not None, reason="needs nvidia-ml-py without an NVIDIA driver")
def test_readers_without_the_nvml_library_give_none_and_the_reason():
    lib, why = gt.nvml()
    assert lib is None and "NVML did not initialise" in why
    snap = gt.snapshot(0)
    assert snap["sm_clock_mhz"] is None and snap["throttled"] is None and "NVML" in snap["notes"]["all"]
    assert gt.energy_window(lambda: None, 0, 1)["energy_reason"] == why


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is present")
def test_no_cuda_device_index_inventory_and_machine_info_say_why():
    index, why = gt.cuda_nvml_index()
    assert index is None and "torch.cuda.is_available() is False" in why
    assert gt.snapshot(None)["notes"]["all"] == "no NVML index for this device"
    gpus, why = gt.gpu_inventory()
    assert gpus == [] and "torch.cuda.is_available() is False" in why
    from infermatrix.fixtures.machine import machine_details
    info = machine_details()
    assert info["gpus"] == [] and info["gpus_reason"] == why


# ---- clock-event reasons ----
@pytest.mark.parametrize("mask,names,throttling", [
    (0, [], []),
    (IDLE, ["gpu_idle"], []),
    (IDLE | APP_CLOCKS, ["gpu_idle", "applications_clocks_setting"], []),
    (SW_POWER, ["sw_power_cap"], ["sw_power_cap"]),
    (IDLE | HW_SLOW | HW_THERMAL, ["gpu_idle", "hw_slowdown", "hw_thermal_slowdown"], ["hw_slowdown", "hw_thermal_slowdown"]),
    (SW_POWER | 0x1000, ["sw_power_cap", "bit_0x1000"], ["sw_power_cap", "bit_0x1000"]),
])
def test_clock_event_reasons_decode(mask, names, throttling):
    assert gt.decode_reasons(mask) == names
    assert gt.throttle_reasons(mask) == throttling


def test_reason_bits_are_nvml_s_own_constants():
    pynvml = pytest.importorskip("pynvml")
    assert gt.REASON_BITS[pynvml.nvmlClocksEventReasonSwThermalSlowdown] == "sw_thermal_slowdown"
    assert gt.REASON_BITS[pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown] == "hw_power_brake_slowdown"
    assert len(gt.REASON_BITS) == 11 and all(bin(bit).count("1") == 1 for bit in gt.REASON_BITS)


# ---- energy ----
def test_energy_figures_from_millijoule_counters():
    figures, why = gt.energy_figures(1_000_000, 1_250_000, seconds=1.25, calls=500, batch_size=8)
    assert why is None
    assert figures == pytest.approx({"energy_j_per_inference": 0.5, "energy_j_per_item": 0.0625, "avg_power_w": 200.0})


@pytest.mark.parametrize("start,end,seconds,calls,bs,expect", [
    (5_000, 5_000, 1.0, 100, 1, "did not advance"),
    (5_000, 4_000, 1.0, 100, 1, "did not advance"),     # a driver reload resets the counter
    (5_000, 6_000, 1.0, 0, 1, "empty energy window"),
    (5_000, 6_000, 0.0, 10, 1, "empty energy window"),
])
def test_energy_figures_refuse_a_window_without_a_figure(start, end, seconds, calls, bs, expect):
    figures, why = gt.energy_figures(start, end, seconds, calls, bs)
    assert figures is None and expect in why


def test_energy_window_that_sees_no_counter_step_gives_a_reason(monkeypatch):
    monkeypatch.setattr(gt, "COUNTER_STALL_S", 0.05)
    out = gt._energy_steps(lambda: 123_456, lambda: None, batch_size=1, min_seconds=0.01)
    assert out == {"energy_reason": "the energy counter stood still for 0.05 s of inferences"}


def test_energy_window_opens_and_closes_on_counter_steps():
    """A counter that steps every 20 ms at a constant 150 W (what NVML's does, at 20-100 ms):
    aligning the window to its steps recovers the power to well within the step quantization."""
    t_origin = time.perf_counter()

    def counter() -> int:
        steps = int((time.perf_counter() - t_origin) / 0.02)
        return 10_000_000 + int(steps * 0.02 * 150 * 1000)  # mJ at each step

    out = gt._energy_steps(counter, lambda: time.sleep(0.001), batch_size=4, min_seconds=0.3)
    assert out["avg_power_w"] == pytest.approx(150, rel=0.1)
    assert out["energy_window_s"] >= 0.3 and out["energy_window_calls"] > 10
    assert out["energy_j_per_item"] == pytest.approx(out["energy_j_per_inference"] / 4)


# ---- CUDA-event summary ----
def test_gpu_timing_summary_percentiles_and_host_overhead():
    gpu = [1.0e-3 + i * 1e-7 for i in range(200)]
    host = [g * 1.25 for g in gpu]
    out = gpu_timing_summary(gpu, host, notes={})
    assert out["gpu_compute_p50_s"] == pytest.approx(1.0e-3 + 99.5e-7)
    assert out["gpu_compute_p90_s"] is not None and out["gpu_compute_p99_s"] is not None
    assert out["host_overhead_ratio"] == pytest.approx(1.25)
    assert out["gpu_compute_sample_count"] == 200 and out["gpu_compute_min_s"] == 1.0e-3
    assert out[NOTES_KEY] == {}


def test_gpu_timing_summary_keeps_the_percentile_rule_and_the_host_notes():
    host_notes = {"p99_s": "p99 needs >= 100 samples; 50 were taken"}
    out = gpu_timing_summary([2e-3] * 50, [3e-3] * 50, notes=host_notes)
    assert out["gpu_compute_p90_s"] == 2e-3 and out["gpu_compute_p99_s"] is None
    assert out[NOTES_KEY] == {**host_notes, "gpu_compute_p99_s": "p99 needs >= 100 samples; 50 were taken"}
    assert out["host_overhead_ratio"] == pytest.approx(1.5)
    assert host_notes == {"p99_s": "p99 needs >= 100 samples; 50 were taken"}  # the caller's dict is not changed


def test_gpu_timing_summary_without_gpu_work_or_samples_has_no_ratio():
    idle = gpu_timing_summary([0.0] * 20, [1e-3] * 20)
    assert idle["host_overhead_ratio"] is None and "cuda_stream()" in idle[NOTES_KEY]["host_overhead_ratio"]
    empty = gpu_timing_summary([], [1e-3] * 20)
    assert empty["gpu_compute_p50_s"] is None and empty["host_overhead_ratio"] is None and empty["gpu_compute_sample_count"] == 0
    # the GPU compute pass has its own sample count (at most 200), apart from the host's rounds
    apart = gpu_timing_summary([1e-3] * 10, [2e-3] * 11)
    assert apart["gpu_compute_sample_count"] == 10 and apart["host_overhead_ratio"] == pytest.approx(2.0)


# ---- bench/gpu_check.py ----
def _gpu_bench(engine, precision, bs, median, **extra):
    b = bench(model="resnet50", engine=engine, precision=precision, bs=bs, device="cuda", samples=[median] * 200)
    b["extra_info"].update({"equivalence_row": precision, "gpu_compute_p50_s": median * 0.9, "host_overhead_ratio": 1 / 0.9,
                            "energy_j_per_inference": median * 300, "avg_power_w": 300.0, "throttled": False, **extra})
    return b


def test_gpu_check_table_from_a_saved_run(tmp_path):
    import json
    runs = [_gpu_bench("torch", "fp32", 1, 4e-3), _gpu_bench("torch", "fp16", 1, 2e-3),
            _gpu_bench("torch_compile", "fp16", 1, 1e-3, throttled=True, throttle_reasons=["sw_power_cap"])]
    path = write_run(tmp_path / "r.json", runs, gpu="NVIDIA H100 80GB HBM3")
    data = json.loads(path.read_text())
    data["machine_info"]["infermatrix"]["gpus"] = [
        {"index": 0, "cuda_index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2 ** 30,
         "compute_capability": "9.0", "driver": "580.65.06", "driver_cuda": "13.0"}]
    data["infermatrix_equivalence"] = [{"id": "resnet50-onnxruntime-fp16-bs1-cuda", "equivalence": "fail",
                                        "equivalence_row": "fp16", "cosine_min": 0.91, "sqnr_db_min": 12.5}]
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="perf_tests.test_latency" name="test_latency[resnet50-torch-fp32-bs1-cuda]"/>'
        '<testcase classname="perf_tests.test_latency" name="test_latency[resnet50-onnxruntime-fp16-bs1-cuda]">'
        '<failure message="not timed: outputs differ from the baseline&#10;details">tb</failure></testcase>'
        '<testcase classname="perf_tests.test_latency" name="test_latency[resnet50-tensorrt-fp16-bs1-cuda]">'
        '<skipped type="pytest.skip" message="tensorrt needs [\'tensorrt\'] (pip install tensorrt-cu13)"/></testcase>'
        '</testsuite></testsuites>')
    outcomes = gpu_check.junit_outcomes(xml)
    assert outcomes["resnet50-onnxruntime-fp16-bs1-cuda"] == ("failed", "not timed: outputs differ from the baseline")
    report = gpu_check.render_report([data], outcomes)
    lines = report.splitlines()
    assert lines[0].startswith("GPU: NVIDIA H100 80GB HBM3 (cc 9.0, 80 GiB); driver 580.65.06; CUDA 13.0")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in lines if line.startswith("| resnet50")}
    assert rows["resnet50 bs1 torch fp32"][:2] == ["4.000 ms", "1.00×"]
    assert rows["resnet50 bs1 torch fp16"][1] == "2.00×"
    p50, speedup, gpu_host, memory, energy, equivalence = rows["resnet50 bs1 torch_compile fp16"]
    assert (p50, speedup) == ("1.000 ms", "4.00×")
    assert gpu_host == "0.900 ms / 1.000 ms (1.11×)"
    assert memory == "45 MiB" and energy == "300.00 mJ (300 W)" and equivalence == "pass (fp16)"
    assert "- resnet50 bs1 torch_compile fp16: sw_power_cap" in lines
    assert ("- resnet50-onnxruntime-fp16-bs1-cuda: failed: not timed: outputs differ from the baseline "
            "(equivalence fail, row fp16, cosine 0.91, SQNR 12.5 dB)") in lines
    assert any(line.startswith("- resnet50-tensorrt-fp16-bs1-cuda: skipped: tensorrt needs") for line in lines)
    assert gpu_check.failed_cases(outcomes) == ["resnet50-onnxruntime-fp16-bs1-cuda"]


def test_gpu_check_without_an_eager_baseline_or_gpu_fields_says_n_a(tmp_path):
    b = bench(model="distilbert", engine="onnxruntime", precision="fp16", bs=8, device="cuda", median=2e-3)
    b["extra_info"]["gpu_peak_bytes"] = None
    report = gpu_check.render_report([{"benchmarks": [b], "machine_info": {}}])
    row = next(line for line in report.splitlines() if line.startswith("| distilbert"))
    assert "n/a (no reference case)" in row and row.count("n/a") == 4
    assert report.splitlines()[0] == "GPU: none recorded in machine_info"


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is present: gpu_check would run the matrix")
def test_gpu_check_without_cuda_exits_2_with_the_reason(repo_root):
    res = subprocess.run([sys.executable, str(repo_root / "bench" / "gpu_check.py")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no CUDA device is present, nothing was run" in res.stderr
    assert "torch.cuda.is_available() is False" in res.stderr and res.stdout == ""
