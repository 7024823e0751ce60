"""The built-in scenarios, one registration each (scenarios/registry.py): what each test runs over.

The matrix itself (perf_tests/test_latency.py, test_equivalence.py) is the plugin's; everything else
is a scenario and is found here by the plugin, which parametrizes whichever test asks for a
scenario's first argname.
"""
from __future__ import annotations

from dataclasses import replace

from infermatrix.core.records import (AccuracyRecord, ColdStartRecord, ConcurrencyRecord, GenerationRecord,
                                      LoadRecord, OverheadRecord, PipelineRecord)
from infermatrix.core.schema import Case
from infermatrix.engines import ENGINES
from infermatrix.models import digits
from infermatrix.models.registry import MODELS

from .pipeline import MODES
from .registry import Plan, Point, Scenario, Setting, register

#: decoders the generation scenario runs when --models names none
DEFAULT_DECODERS = ("distilgpt2",)
#: its default precisions: greedy decoding of a trained LM flips near-tied tokens in fp16/bf16
#: (measured: tiny-gpt2 in CPU bf16, teacher-forced agreement 0.938 < 0.95), so those run when named
GENERATION_PRECISIONS = ("fp32", "int8")
_registered = False


def _point(case: Case, skip: str | None, *extra, id: str | None = None) -> Point:
    return Point((case, *extra), id or case.id, case, skip)


def accuracy_points(plan: Plan) -> list[Point]:
    """The trained digits variants, at one evaluation batch size."""
    opts = plan.matrix
    variants = tuple(m for m in digits.RECIPES if "models" not in opts.explicit or m in opts.models)
    return [_point(c, skip) for c, skip in plan.cases(models=variants, batch_sizes=(64,))] if variants else []


def generation_points(plan: Plan) -> list[Point]:
    """Decoders x engines x prompt lengths x output lengths, batch 1."""
    opts, gen = plan.matrix, plan.run.generation
    decoders = (tuple(m for m in opts.models if MODELS[m].task == "generation")
                if "models" in opts.explicit else DEFAULT_DECODERS)
    precisions = None if "precisions" in opts.explicit else GENERATION_PRECISIONS
    planned = plan.cases(models=decoders, batch_sizes=(1,), precisions=precisions) if decoders else []
    return [Point((c, length, new), f"{c.id}-prompt{length}-new{new}", c, skip)
            for c, skip in planned for length in gen.prompt_lengths for new in gen.new_tokens]


def pipeline_points(plan: Plan) -> list[Point]:
    """Every pipeline in every run mode on every device."""
    return [Point(((name, mode, device),), f"{name}-{mode}" + ("" if device == "cpu" else f"-{device}"),
                  Case(name, mode, "fp32", 1, device), plan.device_skip(device))
            for device in plan.matrix.devices for name in plan.run.pipeline.names for mode in MODES]


def load_points(plan: Plan) -> list[Point]:
    """One case per model, load variant (and int8 scheme) and device, through the matrix's own
    rules; a variant they drop is a skip with the reason."""
    matrix, points = plan.matrix, []
    for device in matrix.devices:
        for model in matrix.models:
            for engine, precision in plan.run.load.variants:
                one = replace(matrix, engines=(engine,), precisions=(precision,), devices=(device,),
                              explicit=matrix.explicit | {"engines", "precisions", "devices"})
                planned = plan.cases(matrix=one, models=(model,), batch_sizes=(1,))
                if not planned:  # the model's own int8 scheme is not one this engine builds
                    why = ENGINES[engine].scheme_problem(MODELS[model].int8_scheme) or "not in the matrix"
                    planned = [(Case(model, engine, precision, 1, device), why)]
                points += [_point(c, skip or plan.device_skip(device), id=c.id.replace("-bs1", "")) for c, skip in planned]
    return points


def overhead_points(plan: Plan) -> list[Point]:
    """The harness-overhead benchmark's model, fp32, batch 1."""
    return [_point(c, skip) for c, skip in plan.cases(models=(plan.matrix.overhead_model,), precisions=("fp32",),
                                                      batch_sizes=(1,))]


def cold_start_points(plan: Plan) -> list[Point]:
    """Every model and engine of the matrix at fp32, batch 1: one cold start series each."""
    return [_point(c, skip) for c, skip in plan.cases(precisions=("fp32",), batch_sizes=(1,))]


def register_builtin_scenarios() -> None:
    """Register the built-in scenarios; a second call does nothing."""
    global _registered
    if _registered:
        return
    register(Scenario("accuracy", "accuracy on held-out data (trained digits models) beside eager fp32's",
                      ("accuracy_case",), accuracy_points, (AccuracyRecord,)))
    register(Scenario("generation", "greedy token generation with a KV cache: TTFT, per-token latency, tokens/s",
                      ("generation_case", "prompt_length", "new_tokens"), generation_points, (GenerationRecord,)))
    register(Scenario("pipeline", "the image -> caption pipeline, whole and split into deployed stages",
                      ("pipeline_mode",), pipeline_points, (PipelineRecord,)))
    register(Scenario("load", "MLPerf LoadGen SingleStream / MultiStream / Offline / Server and a concurrency sweep",
                      ("load_case",), load_points, (LoadRecord, ConcurrencyRecord)))
    register(Scenario("overhead", "the harness's own cost: the bare runtime call against Engine.run",
                      ("overhead_case",), overhead_points, (OverheadRecord,)))
    register(Scenario("cold_start", "a fresh process to its first answer, per engine (serverless, autoscaling)",
                      ("cold_start_case",), cold_start_points, (ColdStartRecord,),
                      settings=(Setting("cold_start_runs", "fresh processes per cold start case (default 3)", 3, int, 1),)))
    _registered = True
