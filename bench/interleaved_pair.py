"""BASE and NEW timed in one process, in alternating blocks (Bencher's "relative" mode).

Collected only when named: ``pytest bench/interleaved_pair.py -p bench.slowdown_engine``.
Block k of BASE runs right before block k of NEW, so drift in time and the per-process
"personality" (measured here: a median moves 10-35 % between processes) hit both sides alike.
BASE is eager PyTorch, NEW the injected-slowdown engine; both call the same module object.
"""
from __future__ import annotations

import os

import pytest

from fixtures.matrix import Case

BLOCKS = int(os.environ.get("INFERMATRIX_PAIR_BLOCKS", "10"))
ROUNDS = int(os.environ.get("INFERMATRIX_PAIR_ROUNDS", "40"))
MODEL = os.environ.get("INFERMATRIX_PAIR_MODEL", "tiny-cnn")


@pytest.mark.parametrize("block, side", [(k, side) for k in range(BLOCKS) for side in ("base", "new")])
def test_pair_block(block, side, run_session, benchmark):
    engine = run_session.engine(Case(MODEL, "torch" if side == "base" else "torch_slowdown", "fp32", 1, "cpu")).engine
    prepared = engine.prepare(run_session.inputs(Case(MODEL, "torch", "fp32", 1, "cpu")))
    benchmark.group = f"pair-{side}"
    benchmark.extra_info.update({"side": side, "block": block, "model": MODEL})
    benchmark.pedantic(engine.run, args=(prepared,), rounds=ROUNDS, warmup_rounds=3, iterations=1)
