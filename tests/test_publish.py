"""`infermatrix publish`: the data the page gets (speedups from one run, kinds apart, incomplete runs
marked and never drawn, change points from the history gate) and how it is written (escaped in the
page, the run files copied, an --out folder never clobbered). Runs are constructed (tests/runs.py);
the browser test (test_publish_browser.py) drives the page itself."""
from __future__ import annotations

import json
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from infermatrix.commands.main import main
from infermatrix.reports.history_gate import analyse_history
from infermatrix.reports.site import render
from infermatrix.reports.site.page_data import kind_data
from tests.publish_history import CPU_KIND, GPU_KIND, START, commit_of, series, store
from tests.runs import bench

HOSTILE = "evil</script><script>alert(1)</script>\"q'<!--\u2028"


def run(*benchmarks: dict, checks: list[dict] | None = None) -> dict:
    return {"machine_info": {}, "commit_info": {}, "benchmarks": list(benchmarks), "datetime": "", "version": "5.3.1",
            "infermatrix_equivalence": checks or []}


def check(model: str, engine: str, precision: str, verdict: str, scheme: str | None = None) -> dict:
    label = f"{precision}-{scheme}" if scheme else precision
    return {"id": f"{model}-{engine}-{label}-bs1-cpu", "model": model, "engine": engine, "precision": precision,
            "int8_scheme": scheme, "batch_size": 1, "device": "cpu", "equivalence": verdict, "reference": "torch fp32 on cpu",
            "cosine_min": 0.99 if verdict == "pass" else 0.62, "sqnr_db_min": 30.0 if verdict == "pass" else 3.1,
            "top1_min": None, "int8_recipe": "ONNX Runtime quantizer"}


def cells(data: dict) -> dict[str, dict]:
    return {c["case"]: c for c in data["heatmap"]["cells"]}


def test_speedup_divides_by_the_reference_of_the_same_run_never_another(tmp_path):
    both = run(bench(engine="torch", median=4e-3), bench(engine="onnxruntime", median=1e-3))
    store(tmp_path, CPU_KIND, both, START, commit_of(0))
    # the newer run timed onnxruntime only: its speedup has no reference in that run
    store(tmp_path, CPU_KIND, run(bench(engine="onnxruntime", median=2e-3)), START + timedelta(days=1), commit_of(1))
    data = kind_data(tmp_path, CPU_KIND.id)
    got = cells(data)
    ort, torch = got["tiny-cnn-onnxruntime-fp32-bs1-cpu"], got["tiny-cnn-torch-fp32-bs1-cpu"]
    assert ort["run"] == 1 and ort["p50_s"] == pytest.approx(2e-3, rel=0.05)
    assert ort["speedup"] is None and ort["baseline_p50_s"] is None     # not 4 ms / 2 ms from the older run
    assert torch["run"] == 0 and torch["speedup"] == pytest.approx(1.0)
    store(tmp_path, CPU_KIND, both, START + timedelta(days=2), commit_of(2))
    ort = cells(kind_data(tmp_path, CPU_KIND.id))["tiny-cnn-onnxruntime-fp32-bs1-cpu"]
    assert ort["run"] == 2 and ort["speedup"] == pytest.approx(ort["baseline_p50_s"] / ort["p50_s"])
    assert ort["speedup"] == pytest.approx(4.0, rel=0.1) and ort["baseline"] == "torch fp32 cpu"


def test_kinds_are_never_mixed(tmp_path):
    series(tmp_path, CPU_KIND, run(bench(engine="torch", median=1e-3), bench(engine="onnxruntime", median=5e-4)), 3)
    series(tmp_path, GPU_KIND, run(bench(engine="torch", median=1e-4), bench(engine="onnxruntime", median=2e-4)), 5)
    cpu, gpu = kind_data(tmp_path, CPU_KIND.id), kind_data(tmp_path, GPU_KIND.id)
    assert [len(t["points"]) for t in cpu["trends"]] == [3, 3] and [len(t["points"]) for t in gpu["trends"]] == [5, 5]
    assert all(r["file"].startswith(f"runs/{CPU_KIND.id}/") for r in cpu["runs"])
    assert all(r["file"].startswith(f"runs/{GPU_KIND.id}/") for r in gpu["runs"])
    assert cells(cpu)["tiny-cnn-onnxruntime-fp32-bs1-cpu"]["speedup"] == pytest.approx(2.0, rel=0.1)
    assert cells(gpu)["tiny-cnn-onnxruntime-fp32-bs1-cpu"]["speedup"] == pytest.approx(0.5, rel=0.1)
    assert cpu["label"] == CPU_KIND.label and gpu["label"] == GPU_KIND.label


def test_an_incomplete_run_is_listed_and_marked_but_never_drawn(tmp_path):
    series(tmp_path, CPU_KIND, run(bench(engine="torch", median=1e-3), bench(engine="onnxruntime", median=5e-4)), 3)
    missing = "perf_tests/test_latency.py::test_latency[tiny-cnn-onnxruntime-fp32-bs1-cpu]"
    store(tmp_path, CPU_KIND, run(bench(engine="torch", median=9e-3)), START + timedelta(days=5), commit_of(5),
          complete=False, cases_missing=(missing,))
    data = kind_data(tmp_path, CPU_KIND.id)
    assert [r["complete"] for r in data["runs"]] == [True, True, True, False]
    assert data["runs"][-1]["cases_missing"] == [missing] and data["runs"][-1]["shards_missing"] == [2]
    assert all(len(t["points"]) == 3 for t in data["trends"])
    assert all(c["run"] < 3 for c in data["heatmap"]["cells"])
    assert cells(data)["tiny-cnn-torch-fp32-bs1-cpu"]["p50_s"] == pytest.approx(1e-3, rel=0.1)   # not the 9 ms


def test_trends_and_change_points_are_the_history_gates(tmp_path):
    base = run(bench(engine="torch", median=1e-3), bench(engine="onnxruntime", median=5e-4))
    series(tmp_path, CPU_KIND, base, 16, step_at=10, step_cases=("onnxruntime",), step=1.3)
    data = kind_data(tmp_path, CPU_KIND.id)
    gate = {t.case: t for t in analyse_history(tmp_path, CPU_KIND.id)}
    assert {t["case"] for t in data["trends"]} == set(gate)
    for t in data["trends"]:
        assert [p["run"] for p in t["points"]] == list(range(16))
        assert [(c["index"], c["regression"]) for c in t["change_points"]] == \
            [(c.index, c.regression) for c in gate[t["case"]].change_points]
    ort = next(t for t in data["trends"] if "onnxruntime" in t["case"])
    assert [c["index"] for c in ort["change_points"]] == [10] and ort["change_points"][0]["regression"]
    assert ort["points"][10]["p50_s"] > ort["points"][9]["p50_s"] * 1.2


def test_failed_equivalence_is_a_cell_and_int8_schemes_sit_side_by_side(tmp_path):
    timed = [bench(engine="torch", median=1e-3), bench(engine="onnxruntime", precision="int8", median=4e-4)]
    timed[1]["extra_info"]["int8_scheme"] = "static_per_channel"
    checks = [check("tiny-cnn", "onnxruntime", "int8", "pass", "static_per_channel"),
              check("tiny-cnn", "onnxruntime", "int8", "fail", "dynamic")]
    store(tmp_path, CPU_KIND, run(*timed, checks=checks), START, commit_of(0))
    data = kind_data(tmp_path, CPU_KIND.id)
    failed = cells(data)["tiny-cnn-onnxruntime-int8-dynamic-bs1-cpu"]
    assert failed["equivalence"] == "fail" and failed["speedup"] is None and failed["precision"] == "int8-dynamic"
    [group] = data["int8"]
    rows = {r["scheme"]: r for r in group["rows"]}
    assert set(rows) == {"static_per_channel", "dynamic"}
    assert rows["static_per_channel"]["speedup"] == pytest.approx(2.5, rel=0.1) and rows["dynamic"]["p50_s"] is None
    assert rows["dynamic"]["equivalence"] == "fail" and rows["dynamic"]["sqnr_db_min"] == 3.1


def test_memory_fields_only_where_recorded(tmp_path):
    b = bench(engine="onnxruntime", median=5e-4)
    b["extra_info"]["energy_j_per_inference"] = 0.012
    store(tmp_path, CPU_KIND, run(bench(engine="torch", median=1e-3, memory_measured=False), b), START, commit_of(0))
    data = kind_data(tmp_path, CPU_KIND.id)
    assert data["memory_fields"] == ["load_rss_bytes", "run_peak_rss_bytes", "energy_j_per_inference"]
    assert [r["case"] for r in data["memory"]] == ["tiny-cnn-onnxruntime-fp32-bs1-cpu"]
    assert data["memory"][0]["energy_j_per_inference"] == 0.012


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data):
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._open = None


def test_embedded_data_cannot_break_out_of_its_script_element():
    data = {"case": HOSTILE, "nested": [HOSTILE, {"k&<>": "&amp;"}]}
    text = render.embedded_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == data
    parser = _Scripts()
    parser.feed(render.page_html(data, title=HOSTILE))
    assert [a.get("type") or a.get("src") for a, _ in parser.scripts] == \
        ["application/json", "assets/chart.js", "assets/tables.js", "assets/app.js"]
    assert json.loads(parser.scripts[0][1]) == data


def test_publish_writes_the_page_and_copies_every_run(tmp_path, capsys):
    history, site = tmp_path / "history", tmp_path / "site"
    series(history, CPU_KIND, run(bench(engine="torch", median=1e-3), bench(model=HOSTILE, median=2e-3)), 2)
    store(history, CPU_KIND, run(bench(median=1e-3)), START + timedelta(days=3), commit_of(3), complete=False,
          cases_missing=("x",))
    assert main(["publish", str(history), "--out", str(site)]) == 0
    assert "3 run(s), 1 incomplete" in capsys.readouterr().out
    parser = _Scripts()
    parser.feed((site / "index.html").read_text())
    data = json.loads(parser.scripts[0][1])
    [kind] = data["kinds"]
    assert any(HOSTILE in c["case"] for c in kind["heatmap"]["cells"])
    for r in kind["runs"]:
        assert (site / r["file"]).read_bytes() == (history / CPU_KIND.id / "runs" / r["name"]).read_bytes()
    assert {p.name for p in (site / "assets").iterdir()} == set(render.ASSETS)
    # published again: the site is replaced whole, the history untouched
    assert main(["publish", str(history), "--out", str(site)]) == 0
    assert len(list((site / "runs" / CPU_KIND.id).iterdir())) == 3


def test_publish_refuses_bad_input_with_exit_2(tmp_path, capsys):
    history = tmp_path / "history"
    assert main(["publish", str(history), "--out", str(tmp_path / "s")]) == 2
    assert "no such history folder" in capsys.readouterr().err
    history.mkdir()
    assert main(["publish", str(history), "--out", str(tmp_path / "s")]) == 2
    assert "no hardware kind" in capsys.readouterr().err
    series(history, CPU_KIND, run(bench(median=1e-3)), 1)
    assert main(["publish", str(history), "--out", str(tmp_path / "s"), "--kind", "no-such-kind"]) == 2
    assert CPU_KIND.id in capsys.readouterr().err
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    assert main(["publish", str(history), "--out", str(theirs)]) == 2
    assert "publish did not write" in capsys.readouterr().err
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]


def test_a_failed_write_keeps_the_previous_site(tmp_path, monkeypatch):
    history, site = tmp_path / "history", tmp_path / "site"
    series(history, CPU_KIND, run(bench(median=1e-3)), 1)
    assert main(["publish", str(history), "--out", str(site)]) == 0
    before = (site / "index.html").read_text()

    def broken(*_a, **_k):
        raise OSError("disk full")
    monkeypatch.setattr(render, "page_html", broken)
    with pytest.raises(OSError, match="disk full"):
        render.write_site(site, {}, "t", [])
    assert (site / "index.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history", "site"]   # no temporary folder left


def test_kind_option_publishes_only_that_kind(tmp_path):
    history, site = tmp_path / "history", tmp_path / "site"
    series(history, CPU_KIND, run(bench(median=1e-3)), 1)
    series(history, GPU_KIND, run(bench(median=1e-4)), 1)
    assert main(["publish", str(history), "--out", str(site), "--kind", GPU_KIND.id]) == 0
    assert [p.name for p in (site / "runs").iterdir()] == [GPU_KIND.id]
    assert Path(site / "index.html").read_text().count(CPU_KIND.id) == 0
