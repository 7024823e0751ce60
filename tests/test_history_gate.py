"""The gate learned from a history (reports/history_gate.py, `infermatrix watch`) on histories built
here in the layout of core/history_layout.py: a step is found at its commit with its sign and size,
a flat series gives no alarm, two kinds are never one series, incomplete runs are no points, noisy
records give no verdict, and the exit codes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from infermatrix.commands.main import main
from infermatrix.core import history_layout as layout
from infermatrix.core.records import LatencyRecord
from infermatrix.core.schema import Case, Reference
from infermatrix.reports.changepoints import detect
from infermatrix.reports.history import InputError
from infermatrix.reports.history_gate import analyse_history

CASE = Case("tiny-cnn", "onnxruntime", "fp32", 1, "cpu")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Kind:
    """What core/history_layout.py write_run needs of a hardware kind."""

    id: str

    def to_json(self) -> dict:
        return {"id": self.id, "label": f"label of {self.id}", "fields": {}}


def commit_of(i: int) -> str:
    return hashlib.sha1(f"commit {i}".encode()).hexdigest()


def write_run(history: Path, kind: str, i: int, p50: float, *, complete: bool = True,
              interference: str | None = None) -> Path:
    """Run ``i`` of a kind: one latency record of CASE, its p90/p99 a little above its p50."""
    record = LatencyRecord.of(CASE, Reference("torch", "fp32", "cpu"), p50_s=p50, p90_s=p50 * 1.1, p99_s=p50 * 1.3,
                              interference=interference)
    run = {"machine_info": {}, "commit_info": {"id": commit_of(i)}, "datetime": "", "version": "5.3.1",
           "benchmarks": [{"name": f"test_latency[{CASE.id}]", "group": None,
                           "extra_info": record.to_extra_info(), "stats": {"median": p50, "rounds": 100}}],
           layout.RUN_KEY: {"complete": complete, "splits": 2, "shards_present": [1, 2] if complete else [1],
                            "shards_missing": [] if complete else [2], "cases_missing": [], "kind": kind,
                            "commit": commit_of(i), "sources": ["shard-1.json", "shard-2.json"][:2 if complete else 1],
                            "datetime": (START + timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ"), "outcomes": {}}}
    return layout.write_run(history, Kind(kind), run)


def series(n: int, level: float = 1e-3, seed: int = 0, rel: float = 0.02) -> np.ndarray:
    return level * np.exp(np.random.default_rng(seed).normal(0.0, rel, n))


def flat(n: int, level: float = 1e-3) -> np.ndarray:
    """Noise with no step in it by construction: the same few values over and over."""
    return level * np.resize([1.0, 1.02, 0.98, 1.01, 0.99], n)


def history_of(tmp_path: Path, values, kind: str = "cpu-a-00000001", **kw) -> Path:
    history = tmp_path / "history"
    for i, v in enumerate(values):
        write_run(history, kind, i, float(v), **kw)
    return history


def watch(history: Path, *extra: str, capsys) -> tuple[int, str, str]:
    code = main(["watch", str(history), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("factor", [1.3, 0.7])
def test_a_30_percent_step_is_found_at_its_commit_with_its_sign_and_size(tmp_path, capsys, factor):
    values = series(24)
    values[14:] *= factor
    history = history_of(tmp_path, values)
    (trend,) = analyse_history(history)
    assert trend.case == CASE.id and len(trend.points) == 24
    (step,) = trend.change_points
    assert step.index == 14 and step.commit == commit_of(14)
    assert step.change_rel == pytest.approx(factor - 1, abs=0.03)
    assert step.regression is (factor > 1) and trend.regressed is (factor > 1)
    assert 0 < step.band_rel < 0.1 and 0 < trend.band_rel < 0.1
    code, out, _ = watch(history, capsys=capsys)
    what = "regressed" if factor > 1 else "improved"
    assert f"{what} at commit {commit_of(14)}" in out
    assert code == (1 if factor > 1 else 0)


def test_a_flat_series_gives_no_alarm(tmp_path, capsys):
    history = history_of(tmp_path, series(30, seed=3, rel=0.05))
    (trend,) = analyse_history(history)
    assert trend.change_points == () and trend.band_rel is not None
    code, out, _ = watch(history, capsys=capsys)
    assert code == 0 and "steady" in out


def test_an_improvement_then_a_regression_fails_on_the_newest(tmp_path, capsys):
    values = series(36, seed=4)
    values[12:] *= 0.7
    values[24:] *= 1.5
    (trend,) = analyse_history(history_of(tmp_path, values))
    assert [c.index for c in trend.change_points] == [12, 24]
    assert [c.regression for c in trend.change_points] == [False, True] and trend.regressed


def test_two_kinds_are_never_one_series(tmp_path, capsys):
    # kind b runs three times slower: as one series, a's runs then b's would be a +200 % step
    history = tmp_path / "history"
    for i, v in enumerate(series(12, seed=5)):
        write_run(history, "cpu-a-00000001", i, float(v))
    for i, v in enumerate(series(12, level=3e-3, seed=6)):
        write_run(history, "gpu-b-00000002", 12 + i, float(v))
    trends = analyse_history(history)
    assert [t.kind_id for t in trends] == ["cpu-a-00000001", "gpu-b-00000002"]
    assert all(len(t.points) == 12 and t.change_points == () for t in trends)
    assert {p.commit for p in trends[0].points}.isdisjoint({p.commit for p in trends[1].points})
    code, out, _ = watch(history, "--kind", "gpu-b-00000002", capsys=capsys)
    assert code == 0 and "cpu-a-00000001" not in out


def test_incomplete_runs_are_no_points(tmp_path, capsys):
    history = history_of(tmp_path, flat(16))
    for i in range(16, 22):   # six slow runs, each missing a shard
        write_run(history, "cpu-a-00000001", i, 2e-3, complete=False)
    (trend,) = analyse_history(history)
    assert len(trend.points) == 16 and trend.change_points == ()
    code, out, _ = watch(history, capsys=capsys)
    assert code == 0 and "16 complete runs (6 incomplete, not read)" in out


def test_noisy_records_give_no_verdict(tmp_path, capsys):
    history = history_of(tmp_path, flat(14))
    for i in range(14, 22):   # a +50 % "step" measured on a loaded host
        write_run(history, "cpu-a-00000001", i, 1.5e-3, interference="other processes took 60% of 2 CPU(s)")
    (trend,) = analyse_history(history)
    assert len(trend.points) == 22 and sum(p.noisy for p in trend.points) == 8
    assert trend.change_points == () and not trend.regressed
    code, out, _ = watch(history, capsys=capsys)
    assert code == 0 and "noisy" in out and "no verdict on the newest 8 run(s)" in out


def test_a_case_noisy_throughout_has_no_band(tmp_path):
    values = series(12, seed=9)
    values[6:] *= 2
    history = history_of(tmp_path, values, interference="steal 5% > 2%")
    (trend,) = analyse_history(history)
    assert trend.band_rel is None and trend.change_points == ()


def test_the_metric_is_chosen(tmp_path):
    values = series(20, seed=10)
    values[10:] *= 1.3
    (trend,) = analyse_history(history_of(tmp_path, values), metric="p99")
    fastest_third = np.sort(values[10:] * 1.3)[:4]   # the p99s after the step (p99 = 1.3 x p50 here)
    assert trend.change_points[0].after_s == pytest.approx(float(np.exp(np.log(fastest_third).mean())), rel=1e-9)
    with pytest.raises(InputError, match="metric 'p95' is not one of p50, p90, p99"):
        analyse_history(tmp_path / "history", metric="p95")


def test_bad_input_exits_2_and_says_why(tmp_path, capsys):
    code, _, err = watch(tmp_path / "none", capsys=capsys)
    assert code == 2 and "no such history folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = watch(tmp_path / "empty", capsys=capsys)
    assert code == 2 and "no hardware kind" in err
    history = history_of(tmp_path, series(5))
    code, _, err = watch(history, capsys=capsys)
    assert code == 2 and "has 5 complete run(s)" in err and "needs at least 10" in err
    code, _, err = watch(history, "--kind", "gpu-z-00000009", capsys=capsys)
    assert code == 2 and "its kinds: cpu-a-00000001" in err
    with pytest.raises(SystemExit) as exc:
        main(["watch", str(history), "--min-change", "abc"])
    assert exc.value.code == 2


def test_the_markdown_file_is_the_printed_table(tmp_path, capsys):
    history = history_of(tmp_path, series(10, seed=11))
    code, out, _ = watch(history, "--markdown", str(tmp_path / "gate.md"), capsys=capsys)
    assert code == 0 and (tmp_path / "gate.md").read_text() in out
    assert f"| {CASE.id} | steady |" in out


def test_watch_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["watch", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and all(f in out for f in ("--kind", "--metric", "--min-change", "--alpha"))


def test_steps_keep_their_minimum_runs_on_noisy_series():
    # slow outliers (a fifth of the runs 30-60 % slower) and steps in random places: every step
    # found has at least min_segment runs on each side, is at least min_change and beyond its band
    rng = np.random.default_rng(12)
    for _ in range(30):
        n = int(rng.integers(10, 60))
        values = np.exp(rng.normal(0, 0.02, n)) * np.where(rng.random(n) < 0.2, rng.uniform(1.3, 1.6, n), 1.0)
        for at in rng.integers(1, n, size=int(rng.integers(0, 3))):
            values[at:] *= rng.choice([0.7, 1.1, 1.4])
        found = detect(range(n), list(values), min_segment=5)
        edges = [0, *(s.index for s in found.steps), n]
        assert min(np.diff(edges)) >= 5
        assert all(abs(s.change_rel) >= 0.02 and abs(s.change_rel) > s.band_rel >= 0 for s in found.steps)


def test_detect_needs_enough_values_and_positive_ones():
    assert detect(range(5), [1.0] * 5, min_points=8).steps == ()
    with pytest.raises(ValueError, match="positive and finite"):
        detect(range(8), [1.0] * 7 + [0.0])
    with pytest.raises(ValueError, match="cost 'l3' is not one of rank, l1, l2"):
        detect(range(8), [1.0] * 8, cost="l3")
