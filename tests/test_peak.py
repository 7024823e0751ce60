"""The machine's GEMM peak per precision (runner/peak.py): measured once, cached like an engine,
re-measured when the file is damaged or when asked; each case's share of it in the record and in
summary.md."""
from __future__ import annotations

import json
import warnings

import pytest

from infermatrix.core import checked_record
from infermatrix.core.records import LatencyRecord
from infermatrix.reports.history import latest_per_machine, load_frame
from infermatrix.reports.summary import summary_markdown
from infermatrix.runner import peak as peak_mod
from infermatrix.runner import peak_kernels
from infermatrix.runner.peak import CorruptPeakWarning, PeakCache, peak_precision, share_fields
from tests.runs import bench, write_run

KEY = {"hardware": "Fake CPU", "device": "cpu", "threads": 2, "usable_cpus": 2, "versions": {"torch": "0"}}


class FakeMeasure:
    """Counts measurements; gives a fixed figure per precision (None: not measurable)."""

    def __init__(self, figures=None, interference=None):
        self.figures = figures or {"fp32": 80.0, "int8": 600.0, "bf16": 200.0}
        self.interference = interference
        self.calls: list[str] = []

    def __call__(self, device, precision, threads):
        self.calls.append(precision)
        g = self.figures.get(precision)
        if g is None:
            return {"gflops_per_s": None, "method": None, "reason": f"no {precision} kernel"}
        return {"gflops_per_s": g, "median_gflops_per_s": g * 0.9, "n": 1024, "samples": 20,
                "method": f"fake {precision} GEMM", "note": None, "interference": self.interference, "reason": None}


def cache(root, fake, recalibrate=False):
    return PeakCache(root, "cpu", 2, recalibrate=recalibrate, measure_fn=fake, key=KEY)


def test_a_peak_is_measured_once_and_read_back_by_the_next_run(tmp_path):
    fake = FakeMeasure()
    first = cache(tmp_path, fake).peak("fp32")
    assert first["gflops_per_s"] == 80.0 and first["cached"] is False
    assert cache(tmp_path, fake).peak("int8")["gflops_per_s"] == 600.0
    again = cache(tmp_path, fake)  # a new run: both figures come from the file
    assert again.peak("fp32") == {**first, "cached": True}
    assert again.peak("int8")["cached"] is True
    assert fake.calls == ["fp32", "int8"]
    files = list((tmp_path / peak_mod.PEAK_DIR).glob("*.json"))
    assert len(files) == 1 and set(json.loads(files[0].read_text())["peaks"]) == {"fp32", "int8"}
    assert not list((tmp_path / peak_mod.PEAK_DIR).glob(".*.tmp")), "no temp file is left behind"


@pytest.mark.parametrize("damage", ["truncate", "figure", "garbage", "negative"])
def test_a_damaged_calibration_is_measured_again_with_a_warning(tmp_path, damage):
    fake = FakeMeasure()
    path = cache(tmp_path, fake).path
    cache(tmp_path, fake).peak("fp32")
    text = path.read_text()
    data = json.loads(text)
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "figure":  # a changed figure, the checksum left as it was
        data["peaks"]["fp32"]["gflops_per_s"] = 8000.0
        path.write_text(json.dumps(data))
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:  # a negative figure with a checksum that matches it: the entry itself is invalid
        data["peaks"]["fp32"]["gflops_per_s"] = -1.0
        body = {k: data[k] for k in ("schema", "key", "peaks")}
        data["checksum"] = checked_record.digest(body)
        path.write_text(json.dumps(data))
    with pytest.warns(CorruptPeakWarning, match="corrupt"):
        entry = cache(tmp_path, fake).peak("fp32")
    assert entry["gflops_per_s"] == 80.0 and entry["cached"] is False
    assert fake.calls == ["fp32", "fp32"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten whole: the next run reads it without a warning
        assert cache(tmp_path, fake).peak("fp32")["cached"] is True


def test_recalibrate_measures_again_and_keeps_the_other_precisions(tmp_path):
    fake = FakeMeasure()
    cache(tmp_path, fake).peak("fp32")
    cache(tmp_path, fake).peak("int8")
    fake.figures["fp32"] = 90.0
    assert cache(tmp_path, fake, recalibrate=True).peak("fp32")["gflops_per_s"] == 90.0
    later = cache(tmp_path, fake)
    assert later.peak("fp32")["gflops_per_s"] == 90.0 and later.peak("int8")["cached"] is True
    assert fake.calls == ["fp32", "int8", "fp32"]


def test_an_interfered_or_missing_peak_is_used_but_not_kept(tmp_path):
    noisy = FakeMeasure(interference="other processes took 0.90 CPU s of 1.00")
    entry = cache(tmp_path, noisy).peak("fp32")
    assert entry["gflops_per_s"] == 80.0
    assert "measured under host interference (other processes took 0.90 CPU s" in peak_mod.method_text(entry)
    none = FakeMeasure({"fp32": None})
    assert cache(tmp_path, none).peak("fp32")["gflops_per_s"] is None
    assert not (tmp_path / peak_mod.PEAK_DIR / cache(tmp_path, noisy).path.name).exists()


def test_a_cache_that_cannot_be_written_measures_for_the_run_alone(tmp_path):
    root = tmp_path / "not-a-folder"
    root.write_text("a file where the cache root should be")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing there is no damage
        entry = cache(root, FakeMeasure()).peak("fp32")
    assert entry["gflops_per_s"] == 80.0 and entry["cached"] is False
    assert "cache not writable" in peak_mod.method_text(entry)


def test_a_case_share_is_its_gflops_over_the_peak_of_its_precision():
    entry = {"gflops_per_s": 80.0, "method": "fake fp32 GEMM", "note": None}
    fields = share_fields(20.0, entry)
    assert fields == {"peak_gflops_per_s": 80.0, "peak_method": "fake fp32 GEMM", "share_of_peak": 0.25,
                      "share_of_peak_reason": None}
    unknown = share_fields(None, entry)
    assert unknown["share_of_peak"] is None and unknown["share_of_peak_reason"].startswith("FLOPs unknown")
    missing = share_fields(20.0, {"gflops_per_s": None, "method": None, "reason": "no fp16 kernel"})
    assert missing["share_of_peak"] is None and missing["share_of_peak_reason"].endswith("no fp16 kernel")
    record = LatencyRecord.of(_case(), None, **fields)  # the record's typed fields take them
    assert record.to_extra_info()["share_of_peak"] == 0.25


def _case():
    from infermatrix.core.schema import Case
    return Case("tiny-cnn", "torch", "fp32", 1, "cpu")


def test_each_case_compares_to_its_precision_peak():
    assert peak_precision("int8", "cpu") == "int8"
    assert peak_precision("fp32", "cuda", tf32=True) == "fp32-tf32"
    assert peak_precision("fp32", "cpu", tf32=True) == "fp32"


def test_bf16_without_native_flags_is_said_to_be_emulated():
    emulated = peak_kernels.native_note("bf16", frozenset({"avx2", "fma", "avx512f"}))
    assert emulated.startswith("bf16 emulated") and "avx512_bf16" in emulated
    assert peak_kernels.native_note("bf16", frozenset({"avx512_bf16"})) == "bf16 native (avx512_bf16)"
    assert peak_kernels.native_note("fp32", frozenset()) is None
    with pytest.raises(peak_kernels.NotMeasured, match="avx512_fp16"):
        peak_kernels.kernel("cpu", "fp16", None, frozenset({"avx512_bf16"}))
    with pytest.raises(ValueError, match="expected one of"):
        peak_kernels.kernel("cpu", "fp8", None, frozenset())


def test_measuring_a_real_gemm_gives_its_kernel_size_and_note(monkeypatch):
    # small sizes: the test checks what is recorded, not the figure
    monkeypatch.setattr(peak_kernels, "MIN_N", {"cpu": 128})
    monkeypatch.setattr(peak_kernels, "MAX_N", {"cpu": 256})
    entry = peak_mod.measure("cpu", "bf16", 1, flags=frozenset({"avx2"}), seconds=0.05)
    assert entry["gflops_per_s"] > 0 and entry["samples"] >= peak_kernels.MIN_SAMPLES
    assert entry["n"] in (128, 256)
    assert entry["method"].startswith(f"torch.matmul bf16, {entry['n']}x{entry['n']}x{entry['n']}")
    assert entry["note"].startswith("bf16 emulated")
    int8 = peak_mod.measure("cpu", "int8", 1, seconds=0.05)
    assert int8["gflops_per_s"] > 0 and "MatMulInteger" in int8["method"]
    fp16 = peak_mod.measure("cpu", "fp16", 1, flags=frozenset(), seconds=0.05)
    assert fp16["gflops_per_s"] is None and "not measured" in fp16["reason"]


def test_summary_shows_each_case_share_beside_its_speedup_and_the_peaks(tmp_path):
    entry = {"gflops_per_s": 80.0, "method": "torch.matmul fp32, 1024x1024x1024", "note": None}
    cases = [bench(median=1e-3, seed=1), bench(engine="onnxruntime", median=5e-4, seed=2)]
    cases[0]["extra_info"].update(share_fields(8.0, entry))
    cases[1]["extra_info"].update(share_fields(None, entry))
    frame = load_frame([write_run(tmp_path / "r.json", cases)])
    text = summary_markdown(latest_per_machine(frame[frame["is_latency"]]), 1, [])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| tiny-cnn")}
    assert "| 1.00× | 10.0% | pass |" in rows["tiny-cnn-torch-fp32-bs1-cpu"]
    assert "| 2.00× | n/a (FLOPs unknown) | pass |" in rows["tiny-cnn-onnxruntime-fp32-bs1-cpu"]
    assert "| 2.00× | n/a (FLOPs unknown) |" in rows["tiny-cnn"]  # the best engine's row
    assert "Calibrated GEMM peaks" in text and "cpu 80.0 GFLOP/s (torch.matmul fp32, 1024x1024x1024)" in text


def test_a_run_reads_each_precision_once_and_recalibrate_measures_once_per_run(tmp_path, monkeypatch):
    fake = FakeMeasure()
    monkeypatch.setattr(peak_mod, "_CACHES", {})  # a fresh process
    monkeypatch.setattr(peak_mod, "calibration_key", lambda device, threads: {**KEY, "threads": threads})
    monkeypatch.setattr(peak_mod, "measure", lambda d, p, t: fake(d, p, t))
    for _ in range(3):  # three int8 cases (any scheme) and an fp32 one
        assert peak_mod.case_peak(tmp_path, "cpu", "int8", 2)["gflops_per_s"] == 600.0
    peak_mod.case_peak(tmp_path, "cpu", "fp32", 2)
    assert fake.calls == ["int8", "fp32"]
    monkeypatch.setattr(peak_mod, "_CACHES", {})  # the next run, with --recalibrate-peak
    for _ in range(2):
        assert peak_mod.case_peak(tmp_path, "cpu", "int8", 2, recalibrate=True)["cached"] is False
    assert fake.calls == ["int8", "fp32", "int8"]
    peak_mod.case_peak(tmp_path, "cpu", "fp32", 1)  # another thread count is another calibration
    assert fake.calls == ["int8", "fp32", "int8", "fp32"]
