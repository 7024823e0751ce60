"""Token generation: greedy decoding with a KV cache, per engine and precision.

Time to first token (prefill), per-output-token latency (p50/p90/p99) and tokens/s for each
prompt length, at a fixed output length. Before any timing, the engine's greedy tokens are
checked against eager fp32's on the same prompt (infermatrix.scenarios.generation.compare_generations);
that first generation is also the warm-up, so torch.compile's graphs for every shape the
timed runs use are compiled outside the timed region.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from infermatrix.core.records import GenerationRecord

from infermatrix.scenarios.generation import compare_generations, generate, generation_figures
from infermatrix.models.registry import get_model
from infermatrix.models.registry import EVAL_SEED

pytestmark = pytest.mark.scenario


@pytest.fixture(scope="session")
def reference_generations() -> dict:
    """Eager fp32 generations by (model, prompt length, new tokens, device)."""
    return {}


def test_generation(generation_case, prompt_length, new_tokens, generation_options, run_session,
                    reference_generations, benchmark):
    case = generation_case
    spec = get_model(case.model)
    prompt = spec.make_prompt(case.batch_size, prompt_length, EVAL_SEED)
    key = (case.model, prompt_length, new_tokens, case.device)
    if key not in reference_generations:
        base = run_session.engine(run_session.baseline_case(case)).engine
        reference_generations[key] = generate(base, spec, prompt, new_tokens)
    engine = run_session.engine(case).engine
    ref = reference_generations[key]
    report = compare_generations(f"{case.id}-prompt{prompt_length}", ref, generate(engine, spec, prompt, new_tokens),
                                 case.precision, spec.trained,
                                 forced=generate(engine, spec, prompt, new_tokens, forced=ref.tokens))
    if not report.passed:
        pytest.fail(f"not timed: generated tokens differ from the baseline\n{report.render()}", pytrace=False)

    runs = []
    benchmark.pedantic(lambda: runs.append(generate(engine, spec, prompt, new_tokens)),
                       rounds=generation_options.rounds, iterations=1, warmup_rounds=0)
    figures = generation_figures(runs)
    benchmark.group = f"generation-{case.model}-prompt{prompt_length}-new{new_tokens}"
    at = replace(run_session.resolved(case), batch_size=figures.pop("batch_size"))
    figures["new_tokens"] = new_tokens
    benchmark.extra_info.update(GenerationRecord.of(at, run_session.reference(at), prompt_length=prompt_length, **figures,
                                                    equivalence=report.as_dict(), **engine.details()).to_extra_info())
    assert figures["decode_tokens_per_s"] > 0 and len(runs) == generation_options.rounds
