"""Accuracy on real labelled data (scikit-learn's digits), per engine and precision.

MLPerf's rule: an optimized or quantized model keeps >= 99 % of the fp32 accuracy. The two
variants (trained on a 10 % subset vs then fine-tuned on the whole training split) stand side
by side with their latency, as one compares a pre-trained model with its fine-tuned version.
"""
from __future__ import annotations

import numpy as np
import pytest

from infermatrix.core.records import AccuracyRecord
from infermatrix.models import digits
from infermatrix.scenarios.measure import latency_summary
from infermatrix.runner.session import RunSession

pytestmark = pytest.mark.scenario
EVAL_BATCH = 64
MIN_RATIO = 0.99


def evaluate(engine) -> np.ndarray:
    """Predicted class of every held-out image, in EVAL_BATCH chunks (the last one padded)."""
    import torch
    x_test = digits.split()[2]
    preds = []
    for start in range(0, len(x_test), EVAL_BATCH):
        chunk = x_test[start:start + EVAL_BATCH]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], EVAL_BATCH - len(chunk), axis=0)])
        out = engine.to_host(engine.run(engine.prepare({"pixel_values": torch.from_numpy(padded)})))
        preds.append(out["logits"][: len(chunk)].argmax(-1))
    return np.concatenate(preds)


def scores(preds: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    y_test = digits.split()[3]
    return {"accuracy": float(accuracy_score(y_test, preds)),
            "macro_f1": float(f1_score(y_test, preds, average="macro")),
            "confusion": confusion_matrix(y_test, preds, labels=list(range(10))).tolist()}


@pytest.fixture(scope="session")
def baseline_accuracy(run_session: RunSession):
    memo: dict[str, float] = {}

    def get(case) -> float:
        if case.model not in memo:
            memo[case.model] = scores(evaluate(run_session.engine(run_session.baseline_case(case)).engine))["accuracy"]
        return memo[case.model]
    return get


def test_accuracy(accuracy_case, run_session, baseline_accuracy, benchmark):
    case = accuracy_case
    report = run_session.equivalence(case)
    if not report.passed:
        pytest.fail(report.render(), pytrace=False)
    engine = run_session.engine(case).engine
    result = scores(evaluate(engine))
    base = baseline_accuracy(case)
    prepared = engine.prepare(run_session.inputs(case))
    benchmark.group = f"accuracy-{case.model}"
    benchmark.pedantic(engine.run, args=(prepared,), rounds=50, warmup_rounds=5, iterations=1)
    info = {**result, "baseline_accuracy": base, "accuracy_ratio": result["accuracy"] / base}
    if not benchmark.disabled:
        info.update(latency_summary(list(benchmark.stats.stats.data), case.batch_size))
    benchmark.extra_info.update(AccuracyRecord.of(run_session.resolved(case), run_session.reference(case),
                                                  **info).to_extra_info())
    assert result["accuracy"] >= MIN_RATIO * base, (
        f"{case.id}: accuracy {result['accuracy']:.4f} < {MIN_RATIO:.0%} of eager fp32's {base:.4f}")
