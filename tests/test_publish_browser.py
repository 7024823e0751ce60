"""The published page in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
playwright) opens SITE/index.html from file:// with the network unused.

The history is a real tiny run (tiny-cnn, torch and ONNX Runtime, fp32 and two int8 schemes, batch 1
and 2) stored as a series of commits with a step injected (tests/publish_history.py), beside a second
hardware kind and an incomplete run; the page must load with no console error and no failed request,
draw a named case's trend with one point per complete run, narrow the heat map as the filter is
typed, link each point to a run file that exists, and show a hostile case name as text.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import pytest
from playwright.sync_api import sync_playwright

from infermatrix.commands.main import main
from tests.publish_history import CPU_KIND, GPU_KIND, START, commit_of, series, store
from tests.runs import bench

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (Debian's package: "
                                "apt-get install -y chromium; .ci/run installs it)")
# headless, and none of Chromium's own connections: the page must need no network at all
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
MATRIX = ["--models", "tiny-cnn", "--engines", "torch,onnxruntime", "--batch-sizes", "1,2", "--precisions", "fp32,int8",
          "--int8-schemes", "static_per_channel,dynamic", "--latency-rounds", "5", "--no-engine-memory",
          "-k", "latency or equivalence"]
RUNS, STEP_AT = 14, 8   # a rank test needs 6 runs after the step to call it
STEPPED = "tiny-cnn-onnxruntime-int8-static_per_channel-bs1-cpu"
HOSTILE = "evil</script><script>window.pwned=1</script>\"q'<!--"


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, repo_root) -> dict:
    """One real benchmark run of the tiny matrix (warm engine cache: seconds)."""
    path = tmp_path_factory.mktemp("publish-run") / "run.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}   # a plain pytest run
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, "-m", "pytest", "perf_tests", *MATRIX, "--benchmark-json", str(path),
                           "-p", "no:cacheprovider", "-q"], cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def site(real_run, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("publish-site")
    history = folder / "history"
    real_run = copy.deepcopy(real_run)
    for b in real_run["benchmarks"]:
        # the stepped case as if measured on a quiet host: a point under host interference is no
        # evidence to the history gate, and this test wants its step found and drawn
        if b["name"] == f"test_latency[{STEPPED}]":
            b["extra_info"]["interference"] = None
    series(history, CPU_KIND, real_run, RUNS, step_at=STEP_AT, step_cases=(STEPPED,), step=1.4, wobble=0.01)
    store(history, CPU_KIND, real_run, START + timedelta(days=RUNS), commit_of(RUNS), complete=False,
          cases_missing=(f"perf_tests/test_latency.py::test_latency[{STEPPED}]",))
    series(history, GPU_KIND, real_run, 3)
    assert main(["publish", str(history), "--out", str(folder / "site")]) == 0
    return folder / "site"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    """The page at ``url`` and the list its problems are collected in (console errors, uncaught
    exceptions, failed requests, any request that is not a file)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("request", lambda r: r.url.startswith(("file:", "data:")) or problems.append(f"network: {r.url}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(url)
    page.wait_for_selector("#trend-chart svg")
    return page, problems


def visible_rows(page) -> list[str]:
    return page.eval_on_selector_all("#heatmap tbody tr:not([hidden])", "rs => rs.map(r => r.dataset.row)")


def test_the_page_draws_the_history_offline_without_errors(browser, site):
    url = (site / "index.html").as_uri()
    page, problems = open_page(browser, f"{url}#kind={CPU_KIND.id}&case={quote(STEPPED)}")
    assert page.text_content("#trend-title") == STEPPED
    # one point per complete run (the incomplete one is listed, never drawn), each linking to its run
    links = page.eval_on_selector_all("#trend-chart a.point-link",   # an SVG link's href is not a string
                                      "as => as.map(a => new URL(a.getAttribute('href'), document.baseURI).href)")
    assert len(links) == RUNS
    for link in links:
        target = Path(unquote(urlparse(link).path))
        assert target.is_file() and target.parent == site / "runs" / CPU_KIND.id, link
        assert json.loads(target.read_text())["infermatrix_run"]["complete"] is True
    assert page.locator("#trend-chart .change.regression").count() == 1
    assert page.locator("#run-table tr.incomplete").count() == 1

    # the filter narrows the heat map to the rows (and columns) that match
    assert visible_rows(page) == ["tiny-cnn · bs1 · cpu", "tiny-cnn · bs2 · cpu"]
    page.fill("#filter", "bs2")
    assert visible_rows(page) == ["tiny-cnn · bs2 · cpu"]
    page.fill("#filter", "onnxruntime int8")
    shown = page.eval_on_selector_all("#heatmap td.cell:not(.dim):not([hidden])", "ts => ts.map(t => t.dataset.case)")
    assert shown and all("onnxruntime-int8" in c for c in shown)
    page.fill("#filter", "no-such-engine")
    assert visible_rows(page) == [] and page.text_content("#filter-count").startswith("0 of")
    page.fill("#filter", "")

    # a cell names its case's trend
    page.click('#heatmap td[data-case="tiny-cnn-torch-fp32-bs2-cpu"]')
    assert page.text_content("#trend-title") == "tiny-cnn-torch-fp32-bs2-cpu"
    assert "case=tiny-cnn-torch-fp32-bs2-cpu" in page.url

    # the other kind: its own runs only
    page.click(f'button[data-kind="{GPU_KIND.id}"]')
    assert page.locator("#trend-chart a.point-link").count() == 3
    hrefs = page.eval_on_selector_all("a.run-link", "as => as.map(a => a.getAttribute('href'))")
    assert hrefs and all(h.startswith(f"runs/{GPU_KIND.id}/") for h in hrefs)
    assert problems == []


def test_a_hostile_case_name_is_shown_as_text(browser, tmp_path):
    history = tmp_path / "history"
    benchmarks = [bench(engine="torch", median=1e-3), bench(model=HOSTILE, median=2e-3)]
    series(history, CPU_KIND, {"machine_info": {}, "commit_info": {}, "benchmarks": benchmarks, "datetime": "",
                               "version": "5.3.1"}, 2)
    assert main(["publish", str(history), "--out", str(tmp_path / "site"), "--title", HOSTILE]) == 0
    page, problems = open_page(browser, (tmp_path / "site" / "index.html").as_uri())
    assert problems == []
    assert page.evaluate("window.pwned") is None
    assert page.locator("script").count() == 4   # the data and the three scripts, none injected
    assert f"{HOSTILE} · bs1 · cpu" in visible_rows(page)
    assert page.title() == HOSTILE
