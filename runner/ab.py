"""``infermatrix ab``: BASE and NEW benchmarked in one job, alternating, then gated.

Two CI jobs on a shared runner differ by more than a real regression (measured here: separate
processes flagged 8 of 20 A/A pairs). So both sides run in this one job: one pytest worker
per side (the plugin reports/ab_worker.py), each in its side's checkout (a git ref of the user's
repository, via ``git worktree``) and Python environment (another venv's interpreter, e.g. a
library upgrade), with its side's extra environment variables. The controller lets the two
workers run their latency blocks in turn (A B, B A, A B ... so order effects cancel too), then
merges each side's blocks into one run file per side and applies the statistical gate of
``infermatrix compare`` to the paired samples.

Nothing here imports an engine: the workers do; this reads their JSON.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from infermatrix.core.folders import new_out_dir
from infermatrix.reports.history import InputError
from infermatrix.core.percentiles import latency_summary
from infermatrix.core.records import LatencyRecord
from infermatrix.core.schema import Record, SchemaError, read_record
from infermatrix.core.source_shim import pythonpath, write_shim
from .ab_checkout import checkout, new_temp_folder, prune_dead_checkouts, remove_checkout

WORKER_PLUGIN = "infermatrix_ab_worker"   # reports/ab_worker.py, copied beside each side
WORKER_SOURCE = Path(__file__).with_name("ab_worker.py")
#: pytest options that would break the one-block-at-a-time protocol
REFUSED_ARGS = ("-n", "--numprocesses", "--dist", "--benchmark-disable", "--benchmark-json")


@dataclass(frozen=True)
class Side:
    """One side of the comparison: where its code comes from, which Python runs it, extra env."""

    label: str
    ref: str | None = None                  # a git ref of --repo (None: the working tree as it is)
    python: str = sys.executable
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not (Path(self.python).is_file() and os.access(self.python, os.X_OK)):
            raise InputError(f"--{self.label}-python {self.python}: not an executable file")
        for key, _ in self.env:
            if not key or "=" in key:
                raise InputError(f"--{self.label}-env: {key!r} is not a variable name (expected KEY=VALUE)")

    def describe(self) -> str:
        parts = [f"ref {self.ref}" if self.ref else "working tree", f"python {self.python}"]
        parts += [f"{k}={v}" for k, v in self.env]
        return ", ".join(parts)


def parse_env(items: list[str] | None, label: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--{label}-env {item!r}: expected KEY=VALUE")
        out.append((key, value))
    return tuple(out)


@dataclass(frozen=True)
class AbRun:
    base: Path | None            # BASE's merged run (None: every BASE case failed)
    new: Path | None             # NEW's merged run (None: every NEW case failed)
    folder: Path                 # both runs and both workers' logs
    failures: dict[str, str]     # side -> why its worker did not pass every case


@dataclass
class _Worker:
    side: Side
    proc: subprocess.Popen
    to_worker: int
    from_worker: int
    json_path: Path
    log_path: Path
    buffer: bytes = b""

    def read_line(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise InputError(f"{self.side.label} worker sent nothing for {timeout_s:.0f} s; see {self.log_path}")
            ready, _, _ = select.select([self.from_worker], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.from_worker, 4096)
                if not chunk:
                    self.proc.wait(timeout=60)
                    raise InputError(f"{self.side.label} worker exited (code {self.proc.returncode}) before "
                                     f"finishing; last lines of {self.log_path}:\n{_tail(self.log_path)}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def go(self) -> None:
        try:
            os.write(self.to_worker, b"go\n")
        except BrokenPipeError:
            self.proc.wait(timeout=60)
            raise InputError(f"{self.side.label} worker exited (code {self.proc.returncode}); last lines of "
                             f"{self.log_path}:\n{_tail(self.log_path)}") from None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(side: Side, cwd: Path, args: list[str], blocks: int, out: Path, plugin_dir: Path) -> _Worker:
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    json_path, log_path = out / f"{side.label}-worker.json", out / f"{side.label}-worker.log"
    # a worker is a pytest run of its own, even when `ab` is started from inside an xdist worker
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env = dict(inherited, **dict(side.env), INFERMATRIX_AB_BLOCKS=str(blocks), INFERMATRIX_AB_READ_FD=str(to_r),
               INFERMATRIX_AB_WRITE_FD=str(from_w), HF_HUB_OFFLINE="1",
               PYTHONPATH=pythonpath(plugin_dir, write_shim(cwd, plugin_dir.parent / f"shim-{side.label}"), cwd))
    cmd = [side.python, "-m", "pytest", *args, "-p", WORKER_PLUGIN, "-p", "no:cacheprovider", "-q",
           "--benchmark-json", str(json_path)]
    with open(log_path, "w") as log:
        log.write(f"# {side.describe()}\n# cwd {cwd}\n# {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=(to_r, from_w))
    os.close(to_r)
    os.close(from_w)
    return _Worker(side, proc, to_w, from_r, json_path, log_path)


def run_alternating(workers: tuple[_Worker, _Worker], timeout_s: float, settle_s: float = 0.0) -> int:
    """Step both workers through the same items in turn; returns the number of items run.

    ``settle_s`` is a pause before each turn: a runtime's worker threads keep spin-waiting for a
    while after their last call, and must not steal the cores from the other side's block.
    """
    steps = 0
    while True:
        msgs = [w.read_line(timeout_s) for w in workers]
        kinds = [m.split(" ", 1)[0] for m in msgs]
        if kinds == ["end", "end"]:
            for w in workers:
                w.go()
            return steps
        if kinds != ["ready", "ready"] or msgs[0] != msgs[1]:
            raise InputError(f"BASE and NEW collected different benchmarks: base says {msgs[0]!r}, new says "
                             f"{msgs[1]!r}; the selection must name the same cases on both sides")
        for w in (workers if steps % 2 == 0 else workers[::-1]):  # A B, then B A: order effects cancel
            time.sleep(settle_s)
            w.go()
            done = w.read_line(timeout_s)
            if done != "done":
                raise InputError(f"{w.side.label} worker: expected 'done', got {done!r}")
        steps += 1


def merge_blocks(worker_json: Path, label: str) -> dict:
    """A worker's run (one benchmark per case and block) as a run with one benchmark per case."""
    try:
        data = json.loads(worker_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{label} worker wrote no readable run at {worker_json}: {exc}") from None
    # grouped by the schema's full key (int8 scheme included: two schemes are two cases), read
    # through core/schema.py so a BASE ref saved before the schema is upgraded, not misread
    by_case: dict[tuple, list[tuple[Record, dict]]] = {}
    for bench in data.get("benchmarks", []):
        if "ab_block" not in (bench.get("extra_info") or {}):
            continue
        try:
            rec = read_record(bench["extra_info"], str(bench.get("name", "")))
        except SchemaError as exc:
            raise InputError(f"{label} worker's run {worker_json}: benchmark {bench.get('name')!r}: {exc}") from None
        by_case.setdefault(rec.key(), []).append((rec, bench))
    merged = []
    for pairs in by_case.values():
        pairs.sort(key=lambda p: p[1]["extra_info"]["ab_block"])
        blocks = [b for _, b in pairs]
        rec = pairs[0][0]
        samples = [x for b in blocks for x in (b["stats"].get("data") or [])]
        if not samples:
            raise InputError(f"{label} worker saved no raw samples for {rec.label()}")
        info = LatencyRecord.of(rec.case, rec.reference, **latency_summary(samples, rec.case.batch_size),
                                blocks=len(blocks), ab_side=label).to_extra_info()
        name = blocks[0]["name"].rsplit("-ab", 1)[0] + "]"
        stats = {"min": min(samples), "max": max(samples), "mean": statistics.fmean(samples),
                 "median": statistics.median(samples), "rounds": len(samples), "data": samples,
                 "stddev": statistics.pstdev(samples)}
        merged.append({"name": name, "fullname": blocks[0]["fullname"].rsplit("-ab", 1)[0] + "]",
                       "group": blocks[0].get("group"), "params": None, "stats": stats, "extra_info": info})
    if not merged:
        raise InputError(f"{label} worker ran no latency case (is the selection empty, or all skipped?); "
                         f"see {worker_json.with_suffix('.log')}")
    return {**data, "benchmarks": merged}


def run_ab(base: Side, new: Side, pytest_args: list[str], blocks: int, out_root: Path, repo: Path,
           timeout_s: float = 3600.0, settle_s: float = 0.3) -> "AbRun":
    """Run both sides alternating, then merge each side's blocks. Never overwrites a run."""
    if blocks < 2:
        raise InputError(f"--blocks {blocks}: expected >= 2 (alternation needs several blocks per side)")
    refused = [a for a in pytest_args if a.split("=", 1)[0] in REFUSED_ARGS or (a.startswith("-n") and a[2:].isdigit())]
    if refused:
        raise InputError(f"the selection passes {refused}: `infermatrix ab` runs one block at a time and writes "
                         f"the runs itself; drop {', '.join(REFUSED_ARGS)}")
    out = new_out_dir(out_root)
    prune_dead_checkouts(repo)
    tmp = new_temp_folder()
    plugin_dir = tmp / "plugin"
    plugin_dir.mkdir()
    shutil.copyfile(WORKER_SOURCE, plugin_dir / f"{WORKER_PLUGIN}.py")
    checkouts = []
    workers: list[_Worker] = []
    try:
        dirs = []
        for side in (base, new):
            if side.ref:
                dirs.append(checkout(repo, side.ref, tmp / side.label))
                checkouts.append(dirs[-1])
            else:
                dirs.append(repo)
        for side, cwd in zip((base, new), dirs):
            workers.append(_start(side, cwd, pytest_args, blocks, out, plugin_dir))
        steps = run_alternating((workers[0], workers[1]), timeout_s, settle_s)
        failed: dict[str, str] = {}
        for w in workers:
            try:
                w.proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                raise InputError(f"{w.side.label} worker did not exit after its last block; see {w.log_path}") from None
            if w.proc.returncode != 0:  # a case failed (equivalence, an error) or pytest itself did
                failed[w.side.label] = (f"{w.side.label} worker exited with code {w.proc.returncode} (a case failed "
                                        f"or errored):\n{_tail(w.log_path, 15)}")
        if steps == 0:
            raise InputError(f"the selection collected no benchmark; see {workers[0].log_path}")
        paths: list[Path | None] = []
        for w in workers:
            try:
                run = merge_blocks(w.json_path, w.side.label)
            except InputError:
                if w.side.label not in failed:
                    raise
                paths.append(None)   # every case of this side failed: nothing to merge, the failure says why
                continue
            run["infermatrix_ab"] = {"side": w.side.label, "describe": w.side.describe(), "blocks": blocks,
                                     "items": steps, "pytest_args": pytest_args, "exit_code": w.proc.returncode}
            path = out / f"{w.side.label}.json"
            path.write_text(json.dumps(run, indent=1))
            paths.append(path)
        return AbRun(paths[0], paths[1], out, failed)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            for fd in (w.to_worker, w.from_worker):
                try:
                    os.close(fd)
                except OSError:
                    pass
        for path in checkouts:
            remove_checkout(repo, path)
        shutil.rmtree(tmp, ignore_errors=True)
