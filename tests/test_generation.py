"""Token generation: the decoder step, the KV-cache loop, engine support and the token checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infermatrix.engines import ENGINES, EngineError
from infermatrix.models.decoder import DecoderConfig, decoder_model, step_inputs
from infermatrix.scenarios.generation import Generation, GenerationOptions, compare_generations, generate, generation_figures
from infermatrix.fixtures.matrix import plan_cases
from infermatrix.fixtures.options import MatrixOptions

CONFIG = DecoderConfig(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=64, initializer_range=0.2)
SPEC = decoder_model("test-gpt2", CONFIG)


def loaded(engine_name: str, precision: str, workdir) -> object:
    cls = ENGINES[engine_name]
    if not cls.is_installed():
        pytest.skip(f"{engine_name} needs {cls.missing_requirements()}, which are not installed")
    torch.manual_seed(0)
    spec = SPEC.build_spec(SPEC.build_module(), 2)
    engine = cls(precision, "cpu")
    engine.build(spec, workdir)
    engine.load(workdir, spec)
    return engine


@pytest.fixture(scope="module")
def eager(tmp_path_factory):
    return loaded("torch", "fp32", tmp_path_factory.mktemp("eager"))


def test_cached_decoding_equals_recomputing_the_whole_sequence(eager):
    """The KV-cache loop must give the tokens a cache-free greedy decode gives."""
    prompt = SPEC.make_prompt(1, 7, 3)
    got = generate(eager, SPEC, prompt, 12)
    lm = eager._module.lm
    seq = prompt.clone()
    with torch.inference_mode():
        for _ in range(12):
            seq = torch.cat([seq, lm(input_ids=seq, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    assert got.tokens.tolist() == seq[:, 7:].tolist()
    assert len(set(got.tokens[0].tolist())) > 1, "a decoder stuck on one token makes the check vacuous"
    assert len(got.step_s) == 11 and got.ttft_s > 0


def test_the_fused_training_kernels_compute_the_exported_models_function():
    """A trained decoder learns with fused GELU, SDPA attention and fused AdamW (models/decoder.py
    TrainRecipe.fused_kernels); its weights must give the same logits and gradients in the unfused
    model every engine exports."""
    torch.manual_seed(0)
    fused = CONFIG.build(dropout=0.0, fused=True)
    plain = CONFIG.build(dropout=0.0)
    plain.load_state_dict(fused.state_dict())
    assert fused.config.activation_function != plain.config.activation_function
    x = torch.randint(0, CONFIG.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))
    losses = [lm(input_ids=x, labels=x).loss for lm in (fused.train(), plain.train())]
    for loss in losses:
        loss.backward()
    assert torch.allclose(losses[0], losses[1], rtol=1e-5)
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("engine_name", [n for n, c in sorted(ENGINES.items()) if c.dynamic_shapes and n != "torch"])
def test_dynamic_shape_engines_generate_eager_tokens(engine_name, eager, tmp_path):
    from torch._dynamo.utils import counters
    engine = loaded(engine_name, "fp32", tmp_path)
    for batch, length in ((1, 5), (2, 9)):
        prompt = SPEC.make_prompt(batch, length, 4)
        ref = generate(eager, SPEC, prompt, 6)
        graphs = counters["stats"]["unique_graphs"]
        got = generate(engine, SPEC, prompt, 6)
        report = compare_generations("t", ref, got, "fp32", trained=False)
        assert report.passed, report.render()
        # torch.compile: a graph for the prefill and one for the decode steps (batch 1 is specialised,
        # so batch 2 has its own two); more means the loop's inputs change what dynamo guards on
        # (strides, inference-tensor dispatch keys) and each change recompiles, up to dynamo's
        # recompile limit, past which it runs the step eagerly
        assert counters["stats"]["unique_graphs"] - graphs <= 2, f"batch {batch}: recompiled during the decode loop"
    engine.close()


def test_torch_compile_makes_only_the_specs_dynamic_axes_symbolic(tmp_path):
    """Token and KV-cache lengths are symbolic in the compiled step; the batch is pinned, as in
    the build of every other model (dynamic=True made every size symbolic: slower to trace, to
    compile and to load)."""
    engine = loaded("torch_compile", "fp32", tmp_path)   # built at batch 2, 2 tokens on a past of 3
    # a recompile raises instead of compiling (torch's public stance): nothing here compiles
    with torch.compiler.set_stance("fail_on_recompile"):
        for tokens, past in ((3, 5), (4, 9)):
            engine.step(step_inputs(CONFIG, tokens, past)(2, 0))   # would raise: another length recompiled
        # the batch is pinned: batch 3 fails the guard on dim 0
        with pytest.raises(RuntimeError, match=r"(?s)fail_on_recompile.*size mismatch at index 0\. expected 2, actual 3"):
            engine.step(step_inputs(CONFIG, 3, 5)(3, 0))
    engine.close()


def test_weight_only_int8_decoder_builds_and_stays_close(eager, tmp_path):
    engine = loaded("onnxruntime", "int8", tmp_path)
    import json
    record = json.loads((tmp_path / "build.json").read_text())
    assert record["int8_scheme"] == "weight_only" and record["weight_only_matmuls"] >= 9  # 4 per layer + head
    prompt = SPEC.make_prompt(1, 8, 5)
    report = compare_generations("t", generate(eager, SPEC, prompt, 8), generate(engine, SPEC, prompt, 8),
                                 "int8", trained=False)
    assert report.first_logits_cosine > 0.99, report.render()


@pytest.mark.parametrize("engine_name", [n for n, c in sorted(ENGINES.items()) if not c.dynamic_shapes])
def test_fixed_shape_engines_refuse_a_decoder(engine_name, tmp_path):
    cls = ENGINES[engine_name]
    if not cls.is_installed():
        pytest.skip(f"{engine_name} is not installed")
    spec = SPEC.build_spec(SPEC.build_module(), 2)
    device = sorted(cls.capabilities)[0]  # a CUDA-only engine is refused for its shapes all the same
    engine = cls("fp32", device)
    if engine.availability_problem():
        pytest.skip(engine.availability_problem())
    with pytest.raises(EngineError, match="fixed non-batch shapes only"):
        engine.load(tmp_path, spec)


def test_step_checks_fixed_dims_and_accepts_any_cache_length(eager):
    inputs = SPEC.inputs(1, seed=0)
    assert eager.to_host(eager.step(inputs), ["logits"])["logits"].shape == (1, 97)
    for name in SPEC.input_names[1:]:  # another cache length: fine
        inputs[name] = torch.zeros(1, 2, 11, 16)
    assert eager.to_host(eager.step(inputs))["present_key_1"].shape == (1, 2, 13, 16)
    inputs["past_key_0"] = torch.zeros(1, 3, 11, 16)  # a wrong head count is not
    with pytest.raises(EngineError, match=r"input 'past_key_0' is float32\[B,3,11,16\]; expected float32\[B,2,\*,16\]"):
        eager.step(inputs)
    with pytest.raises(EngineError, match=r"outputs \['nope'\] requested"):
        eager.to_host({}, ["nope"])


def run(tokens, logits, ttft=0.01, steps=(0.005,)) -> Generation:
    return Generation(np.array([tokens]), np.array([logits], dtype=np.float32), ttft, list(steps))


def test_fp32_needs_identical_tokens_and_names_the_first_difference():
    ref = run([1, 2, 3, 4], [0.1, 0.9, 0.0])
    report = compare_generations("c", ref, run([1, 2, 7, 4], [0.1, 0.9, 0.0]), "fp32", trained=False)
    assert not report.passed and "tokens differ from position 2: expected [3, 4], got [7, 4]" in report.render()
    assert compare_generations("c", ref, run([1, 2, 3, 4], [0.1, 0.9, 0.0]), "fp32", trained=False).passed


def test_int8_gates_agreement_for_trained_models_and_cosine_always():
    ref = run([1] * 20, [1.0, 2.0, 3.0])
    close = run([1] * 19 + [2], [1.0, 2.0, 3.01])          # 95 % agreement, cosine ~1
    drift = run([1] * 18 + [2, 2], [1.0, 2.0, 3.01])       # 90 %
    assert compare_generations("c", ref, close, "int8", trained=True).passed
    failed = compare_generations("c", ref, drift, "int8", trained=True)
    assert not failed.passed and "token agreement 0.900 < 0.95" in failed.render()
    reported = compare_generations("c", ref, drift, "int8", trained=False)
    assert reported.passed and reported.token_agreement == pytest.approx(0.9) and "reported only" in reported.rule
    bent = compare_generations("c", ref, run([1] * 20, [3.0, 2.0, 1.0]), "int8", trained=False)
    assert not bent.passed and "cosine" in bent.render()


def test_teacher_forced_agreement_is_not_cascaded_by_one_flip():
    ref = run([1] * 20, [1.0, 2.0, 3.0])
    free = run([1] * 10 + [2] * 10, [1.0, 2.0, 3.01])     # one flip at 10, then its own context: 50 %
    forced = run([1] * 19 + [2], [1.0, 2.0, 3.01])        # under the reference's context: 95 %
    report = compare_generations("c", ref, free, "int8", trained=True, forced=forced)
    assert report.passed and report.token_agreement == pytest.approx(0.95) and "teacher-forced" in report.rule
    assert not compare_generations("c", ref, free, "int8", trained=True).passed


def test_generate_teacher_forced_on_its_own_tokens_repeats_them(eager):
    prompt = SPEC.make_prompt(1, 8, 1)
    free = generate(eager, SPEC, prompt, 6)
    assert np.array_equal(generate(eager, SPEC, prompt, 6, forced=free.tokens).tokens, free.tokens)
    other = free.tokens.copy()
    other[0, 0] = (other[0, 0] + 1) % CONFIG.vocab_size     # a different context from step 1 on
    assert generate(eager, SPEC, prompt, 6, forced=other).tokens[0, 0] == free.tokens[0, 0]   # the prefill is not forced


def test_figures_are_percentiles_and_rates():
    runs = [run([1, 2, 3], [0.0], ttft=0.1, steps=(0.01, 0.03)), run([1, 2, 3], [0.0], ttft=0.3, steps=(0.02, 0.02))]
    fig = generation_figures(runs)
    assert fig["ttft_p50_s"] == pytest.approx(0.2) and fig["tpot_p50_s"] == pytest.approx(0.02)
    assert fig["decode_tokens_per_s"] == pytest.approx(50.0) and fig["new_tokens"] == 3
    assert fig["e2e_tokens_per_s"] == pytest.approx(np.median([3 / 0.14, 3 / 0.34]))
    # 2 runs, 4 steps: no p99 and no p90 from so few samples, each null with its reason
    assert fig["ttft_p99_s"] is None and fig["tpot_p90_s"] is None and fig["tpot_p99_s"] is None
    assert fig["percentile_notes"] == {"ttft_p99_s": "p99 needs >= 100 samples; 2 were taken",
                                       "tpot_p90_s": "p90 needs >= 10 samples; 4 were taken",
                                       "tpot_p99_s": "p99 needs >= 100 samples; 4 were taken"}


def test_decoders_are_planned_only_on_dynamic_shape_engines():
    base = dict(models=("tiny-gpt2",), engines=tuple(sorted(ENGINES)), precisions=("fp32",), batch_sizes=(1,),
                devices=("cpu",), overhead_model="tiny-cnn", latency_time=1.0, latency_rounds=None)
    planned = plan_cases(MatrixOptions(**base, explicit=frozenset()))
    assert {p.case.engine for p in planned} == {n for n, c in ENGINES.items() if c.dynamic_shapes and c.is_installed()}
    named = plan_cases(MatrixOptions(**base, explicit=frozenset({"engines"})))
    skipped = {p.case.engine: p.skip_reason for p in named if p.skip_reason}
    assert "takes fixed shapes only" in skipped["torchscript"]


def test_generation_options_are_validated():
    with pytest.raises(pytest.UsageError, match=r"new-tokens=\(1,\)"):
        GenerationOptions((32,), (1,), 3)
    with pytest.raises(pytest.UsageError, match="prompt-lengths"):
        GenerationOptions((), (8,), 3)
    with pytest.raises(ValueError, match=r"prompt length 70; expected 1\.\.62"):
        SPEC.make_prompt(1, 70, 0)
