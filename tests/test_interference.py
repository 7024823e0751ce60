"""Host interference during a case: the readings, the verdict, and what compare and the summary say."""
from __future__ import annotations

import json
import multiprocessing
import sys
import time

import pytest

from infermatrix.commands.main import main
from infermatrix.core.records import LatencyRecord
from infermatrix.core.schema import Case, read_record
from infermatrix.reports.history import latest_per_machine, load_frame
from infermatrix.reports.int8_schemes import load_checks
from infermatrix.reports.summary import summary_markdown
from infermatrix.runner import interference as host
from infermatrix.runner.interference import HostReading, HostWatch, dispersion, parse_stat, verdict
from tests.runs import bench, write_run

STAT = """cpu  300 0 30 1000 5 0 1 7 0 0
cpu0 100 0 10 500 2 0 0 3 0 0
cpu1 200 0 20 500 3 0 1 4 0 0
cpu2 9999 0 9999 1 0 0 0 999 0 0
intr 1 2 3
"""
STEADY = [1e-3 * (1 + 0.01 * (i % 5)) for i in range(100)]  # IQR/median 0.02: one steady state


def reading(wall, busy, steal=0.0, own=0.0, cpus=2, load=0.5) -> HostReading:
    return HostReading(wall, busy, steal, own, cpus, load)


def fake(*readings: HostReading):
    it = iter(readings)
    return lambda: next(it)


def test_parse_stat_sums_only_the_cpus_this_process_may_use():
    busy, steal = parse_stat(STAT, {0, 1}, 0.01)
    # user + nice + system + irq + softirq of cpu0 and cpu1; cpu2 is outside the affinity
    assert busy == pytest.approx((100 + 10) * 0.01 + (200 + 20 + 1) * 0.01)
    assert steal == pytest.approx((3 + 4) * 0.01)
    with pytest.raises(ValueError, match=r"no line for CPU\(s\) \[5\]"):
        parse_stat(STAT, {0, 5}, 0.01)


def test_a_clean_case_has_no_verdict_and_records_its_figures():
    # 1 s on 2 CPUs: the host was busy 1.03 CPU s, 1.0 of them ours
    watch = HostWatch(fake(reading(10.0, 50.0, own=3.0), reading(11.0, 51.03, own=4.0, load=1.2)))
    figures = watch.finish(STEADY)
    assert figures["interference"] is None and figures["host_interference_note"] is None
    assert figures["host_other_cpu_s"] == pytest.approx(0.03)
    assert figures["host_wall_s"] == pytest.approx(1.0) and figures["host_cpus"] == 2
    assert figures["host_load_avg"] == 1.2 and figures["dispersion_iqr_ratio"] == pytest.approx(0.02, abs=0.005)


def test_other_processes_cpu_marks_the_case():
    # the host was busy 1.8 CPU s, 0.9 of them ours: others took 0.9 of 2.0 CPU s (45 %)
    watch = HostWatch(fake(reading(0.0, 100.0, own=1.0), reading(1.0, 101.8, own=1.9)))
    figures = watch.finish(STEADY)
    assert figures["host_other_cpu_s"] == pytest.approx(0.9)
    assert figures["interference"].startswith("other processes took 0.90 CPU s of 2.00 (45% > 10%")


def test_steal_marks_the_case():
    watch = HostWatch(fake(reading(0.0, 10.0, steal=1.0, own=0.0), reading(2.0, 12.0, steal=1.3, own=2.0)))
    figures = watch.finish(STEADY)
    assert figures["host_steal_s"] == pytest.approx(0.3) and figures["host_other_cpu_s"] == 0.0
    assert figures["interference"] == "steal 0.30 s (8% > 2%)"


def test_dispersed_rounds_mark_the_case_even_on_a_quiet_host():
    bimodal = [1.5e-4] * 50 + [4e-2] * 50  # the 0.15 ms and 40 ms rounds in one case
    assert dispersion(bimodal) > 1.9  # the quartiles sit in the two modes
    figures = HostWatch(fake(reading(0.0, 0.0), reading(1.0, 0.0))).finish(bimodal)
    assert "rounds' IQR/median" in figures["interference"] and "> 0.25" in figures["interference"]


def test_below_five_ticks_is_rounding_not_interference():
    # 0.04 CPU s of a 0.1 s case on 2 CPUs is 20 %, but only 4 ticks of 10 ms
    assert verdict(0.04, 0.0, 0.1, 2, 0.01, tick=0.01) is None
    assert verdict(0.06, 0.0, 0.1, 2, 0.01, tick=0.01).startswith("other processes took 0.06")


def test_without_proc_the_figures_are_none_with_the_reason(monkeypatch):
    def no_proc():
        raise FileNotFoundError(2, "No such file or directory", "/proc/stat")
    figures = HostWatch(no_proc).finish(STEADY)
    assert figures["host_other_cpu_s"] is None and figures["host_steal_s"] is None and figures["host_cpus"] is None
    assert "host interference not measured on" in figures["host_interference_note"]
    assert "/proc/stat" in figures["host_interference_note"]
    assert figures["interference"] is None  # no evidence either way; the dispersion alone decides
    assert "IQR/median" in HostWatch(no_proc).finish([1.0, 1.0, 5.0, 9.0, 1.0, 9.0])["interference"]


def test_the_record_keeps_every_figure_through_a_saved_run():
    figures = HostWatch(fake(reading(0.0, 100.0, own=1.0), reading(1.0, 101.8, own=1.9))).finish(STEADY)
    info = LatencyRecord.of(Case("tiny-cnn", "torch", "fp32", 1, "cpu"), None, **figures).to_extra_info()
    back = read_record(info, "test_latency[tiny-cnn-torch-fp32-bs1-cpu]")
    assert back.interference == figures["interference"] and back.host_other_cpu_s == pytest.approx(0.9)
    assert back.details == {}  # typed fields, not loose extras


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat: Linux only")
def test_cpu_burnt_by_other_processes_is_measured():
    """Two child processes spin for ~1 s on this host's 2 cores while this one waits: the real
    /proc/stat counts their CPU as other processes', not as this process's."""
    watch = HostWatch()
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=burn, args=(1.0,)) for _ in range(2)]
    for c in children:
        c.start()
    for c in children:
        c.join(timeout=30)
    assert all(c.exitcode == 0 for c in children)
    figures = watch.finish(STEADY)
    assert figures["host_other_cpu_s"] > 0.5, figures
    assert figures["host_wall_s"] >= 0.9 and figures["host_cpus"] >= 1
    assert figures["interference"] is not None and "other processes took" in figures["interference"]


def test_read_host_subtracts_this_process_own_cpu(monkeypatch):
    """This process spinning is its own CPU time: with /proc/stat faked to count exactly what it
    burnt, nothing is left for other processes."""
    own = {"s": 0.0}
    monkeypatch.setattr(host, "parse_stat", lambda text, cpus, tick: (own["s"] + 100.0, 0.0))
    monkeypatch.setattr(host.os, "times", lambda: type("T", (), {"user": own["s"], "system": 0.0})())
    watch = HostWatch()
    own["s"] = 0.8
    figures = watch.finish(STEADY)
    assert figures["host_other_cpu_s"] == 0.0 and figures["interference"] is None


NOISY = "other processes took 1.60 CPU s of 2.00 (80% > 10% of 2 CPU(s) x 1.00 s)"


def interfered(b: dict, why: str = NOISY) -> dict:
    b["extra_info"]["interference"] = why
    return b


def test_compare_says_noisy_and_passes_an_interfered_case(tmp_path, capsys):
    # the runs: 0.15 ms, then 40-64 ms on a loaded host
    base = write_run(tmp_path / "base.json", [bench(median=1.5e-4, seed=1)])
    new = write_run(tmp_path / "new.json", [interfered(bench(median=5e-2, seed=2))])
    assert main(["compare", str(base), str(new)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| tiny-cnn-torch-fp32-bs1-cpu |"))
    assert f"noisy (host interference: new: {NOISY})" in row
    assert "figures alone: slower" in row and "🔴" not in row
    assert "1 noisy" in out and "0 slower" in out


def test_a_clean_regression_still_fails_beside_a_noisy_case(tmp_path, capsys):
    base = write_run(tmp_path / "base.json", [interfered(bench(median=1e-3, seed=1), "steal 0.30 s (8% > 2%)"),
                                              bench(engine="onnxruntime", median=1e-3, seed=2)])
    new = write_run(tmp_path / "new.json", [bench(median=3e-3, seed=3),
                                            bench(engine="onnxruntime", median=2e-3, seed=4)])
    assert main(["compare", str(base), str(new)]) == 1
    lines = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()
             if line.startswith("| ")}
    assert "noisy (host interference: base: steal 0.30 s (8% > 2%))" in lines["tiny-cnn-torch-fp32-bs1-cpu"]
    assert "slower" in lines["tiny-cnn-onnxruntime-fp32-bs1-cpu"]
    assert "noisy" not in lines["tiny-cnn-onnxruntime-fp32-bs1-cpu"]


def summary(tmp_path, benches) -> str:
    frame = load_frame([write_run(tmp_path / "r.json", benches)])
    return summary_markdown(latest_per_machine(frame[frame["is_latency"]]), 1, [])


def test_the_best_engine_skips_a_case_measured_under_interference(tmp_path):
    text = summary(tmp_path, [bench(median=1e-3, seed=1), interfered(bench(engine="onnxruntime", median=1e-4, seed=2))])
    assert "| tiny-cnn | cpu | 1 | torch fp32 (1 noisy case(s) not ranked) | 1.000 ms |" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny-cnn-onnxruntime-fp32-bs1-cpu |"))
    assert row.endswith(f"| ⚠️ noisy: {NOISY} |")


def test_the_best_engine_is_marked_when_every_case_was_interfered(tmp_path):
    text = summary(tmp_path, [interfered(bench(median=1e-3, seed=1)),
                              interfered(bench(engine="onnxruntime", median=1e-4, seed=2))])
    assert (f"| tiny-cnn | cpu | 1 | onnxruntime fp32 ⚠️ measured under host interference ({NOISY}) | 0.100 ms |"
            in text)


def int8(engine: str, scheme: str, median: float) -> dict:
    b = bench(engine=engine, precision="int8", median=median)
    b["extra_info"]["int8_scheme"] = scheme
    case = f"tiny-cnn-{engine}-int8-{scheme}-bs1-cpu"
    b["name"], b["fullname"] = f"test_latency[{case}]", f"perf_tests/test_latency.py::test_latency[{case}]"
    return b


def check(engine: str, scheme: str) -> dict:
    """A passing int8 equivalence check as the plugin saves it beside the run's benchmarks."""
    return {"id": f"tiny-cnn-{engine}-int8-{scheme}-bs1-cpu", "model": "tiny-cnn", "engine": engine,
            "precision": "int8", "int8_scheme": scheme, "batch_size": 1, "device": "cpu", "equivalence": "pass",
            "equivalence_row": "int8", "cosine_min": 0.999, "sqnr_db_min": 30.0, "top1_min": None}


def test_the_fastest_int8_scheme_is_a_clean_one(tmp_path):
    run = write_run(tmp_path / "r.json", [bench(median=1e-2), interfered(int8("onnxruntime", "static", 1e-3)),
                                          int8("torch", "dynamic", 5e-3)])
    data = json.loads(run.read_text())
    data["infermatrix_equivalence"] = [check("onnxruntime", "static"), check("torch", "dynamic")]
    run.write_text(json.dumps(data))
    frame = load_frame([run])
    text = summary_markdown(latest_per_machine(frame[frame["is_latency"]]), 1, [], load_checks([run]))
    assert "Fastest passing int8 scheme for **tiny-cnn** at batch 1: torch `dynamic` (p50 5.0" in text
    # only noisy schemes left: the fastest of them, said to be measured under interference
    data["benchmarks"] = [bench(median=1e-2), interfered(int8("onnxruntime", "static", 1e-3))]
    data["infermatrix_equivalence"] = [check("onnxruntime", "static")]
    run.write_text(json.dumps(data))
    frame = load_frame([run])
    text = summary_markdown(latest_per_machine(frame[frame["is_latency"]]), 1, [], load_checks([run]))
    assert "Fastest passing int8 scheme for **tiny-cnn** at batch 1: onnxruntime `static` (p50 1.0" in text
    assert f"10.00× over its reference), ⚠️ measured under host interference ({NOISY})." in text
