"""The image -> caption pipeline, whole and split into separately deployed stages.

Each run mode (infermatrix.scenarios.pipeline.MODES) captions the same generated image. Before timing, a
mode's vision stage passes the equivalence policy against its eager fp32 and its caption is
checked against the ``original`` mode's: fp32 modes must write the same tokens; the int8
mode's first-step logits must keep cosine >= 0.99 (its token agreement is recorded: the LM
has random weights, whose near-tied top-1 choices int8 noise flips). Stage breakdown
(preprocess, vision, prefill, decode), end-to-end percentiles, peak RSS and artifact sizes
go to ``extra_info``.
"""
from __future__ import annotations

import gc

import pytest

from infermatrix.core.records import PipelineRecord
from infermatrix.core.schema import Case, Reference
from infermatrix.scenarios.generation import compare_generations
from infermatrix.scenarios.measure import PeakRss
from infermatrix.models.registry import get_model
from infermatrix.scenarios.pipeline import (MODES, artifact_bytes, make_test_image, original_runner, pipeline_figures,
                               split_runner, stage_cases)
from infermatrix.models.vlm import PIPELINES

pytestmark = pytest.mark.scenario


@pytest.fixture(scope="session")
def test_image(tmp_path_factory):
    return make_test_image(tmp_path_factory.mktemp("pipeline") / "image.png")


@pytest.fixture(scope="session")
def original_captions() -> dict:
    return {}


def test_pipeline(pipeline_mode, test_image, run_session, caption_rounds, original_captions, benchmark):
    name, mode, device = pipeline_mode
    pipeline = PIPELINES[name]
    if (name, device) not in original_captions:
        original_captions[name, device] = original_runner(pipeline, test_image, run_session.cache.root, device)()
    info: dict = {}  # the record's figures; its case: the pipeline as model, the mode as engine
    precision = "fp32"  # the vision stage's, in a split mode
    vision_dir = None
    if MODES[mode] is None:
        runner = original_runner(pipeline, test_image, run_session.cache.root, device)
    else:
        vision_case, lm_case = stage_cases(name, mode, device)
        stage = run_session.equivalence(vision_case)
        if not stage.passed:
            pytest.fail(f"not timed: the vision stage differs from its baseline\n{stage.render()}", pytrace=False)
        # the vision runtime shares the cores with the PyTorch LM that runs right after it: its
        # idle threads must not spin (measured on vl: prefill 265 ms after a spinning ONNX
        # Runtime vision run, 159 ms in the other modes)
        vision, lm = run_session.engine(vision_case, spin=False), run_session.engine(lm_case)
        runner = split_runner(pipeline, test_image, vision.engine, lm.engine, get_model(lm_case.model))
        vision_dir = vision.entry.path
        precision = vision_case.precision
        info.update(vision_engine=vision_case.engine,
                    vision_cosine_min=min(o.cosine for o in stage.outputs), vision_equivalence_row=stage.row)
    report = compare_generations(f"{name}-{mode}", original_captions[name, device].as_generation(), runner().as_generation(),
                                 precision, trained=False)
    if not report.passed:
        pytest.fail(f"not timed: the caption differs from the original mode's\n{report.render()}", pytrace=False)
    rss = PeakRss()
    gc.collect()
    with rss.measure():
        runner()
    runs = []
    benchmark.group = f"pipeline-{name}"
    benchmark.pedantic(lambda: runs.append(runner()), rounds=caption_rounds, iterations=1, warmup_rounds=0)
    sizes = artifact_bytes(pipeline, mode, vision_dir, run_session.cache.root)
    # peak RSS is the whole process's (other modes' models stay loaded); the delta is what one
    # caption adds on top of what was resident
    added = rss.bytes - rss.start_bytes if rss.start_bytes is not None else None
    info.update(pipeline_figures(runs), peak_rss_bytes=rss.bytes, peak_rss_scope=rss.scope,
                peak_rss_added_bytes=added, artifact_bytes=sizes,
                artifact_total_bytes=sum(sizes.values()), equivalence=report.as_dict(),
                caption=runs[-1].tokens[0].tolist())
    # the reference every mode is compared with is the original mode (its captions, its latency)
    case = Case(name, mode, precision, 1, device)
    benchmark.extra_info.update(PipelineRecord.of(case, Reference("original", "fp32", device), mode=mode,
                                                  **info).to_extra_info())
    assert runs[-1].tokens.tolist() == runs[0].tokens.tolist(), "captions changed between timed runs"
