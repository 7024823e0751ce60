"""The record type of each scenario (core/schema.py defines what they share and how they are read).

A field is typed and carries its unit in its name; None means "not measured here", with the reason
beside it (``percentile_notes``, ``*_reason``). Adding a scenario adds its record here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .schema import ChartSpec, Record, record_type

F = float | None   # a figure that may be missing
N = int | None     # a count that may be missing


@dataclass(frozen=True, kw_only=True)
class Timed(Record):
    """Percentiles and throughput of timed rounds (core/percentiles.py ``latency_summary``)."""

    p50_s: F = None
    p90_s: F = None
    p99_s: F = None
    mean_s: F = None
    min_s: F = None
    sample_count: N = None
    throughput_items_per_s: F = None


@record_type
@dataclass(frozen=True, kw_only=True)
class LatencyRecord(Timed):
    """One matrix case timed after its equivalence check (perf_tests/test_latency.py)."""

    kind = "latency"

    rounds: N = None
    warmup_rounds: N = None   # every untimed call before the timed rounds (the plan's and pytest-benchmark's)
    # how the rounds were planned (runner/rounds.py) and the precision they reached: half the width
    # of the median's 95 % CI over the median (method in median_ci_method), the target asked
    # (None: --latency-rounds fixed the count), whether the warm-up settled (None: not checked)
    rounds_reason: str | None = None
    median_ci_rel: F = None
    median_ci_method: str | None = None
    latency_precision_target: F = None
    warmup_settled: bool | None = None
    warmup_s: F = None
    artifact_bytes: N = None
    artifact_sha256: str | None = None   # equal in two cases: byte-identical artifacts (one result)
    build_seconds: F = None
    built_this_run: bool | None = None
    equivalence: str | None = None
    equivalence_row: str | None = None
    cosine_min: F = None
    sqnr_db_min: F = None
    # what the case was judged by (runner/equivalence.py): the row's numbers and reason, the
    # override's reason when it is not the policy's own row, degenerate outputs and their rule
    tolerance: dict = field(default_factory=dict)
    tolerance_override: str | None = None
    degenerate_outputs: dict = field(default_factory=dict)
    flops: N = None
    gflops_per_s: F = None
    # how far from the limit (runner/peak.py): this machine's GEMM peak for the case's precision on
    # its device (int8: GOP/s), how it was measured, and gflops_per_s over it (null: the reason)
    peak_gflops_per_s: F = None
    peak_method: str | None = None
    share_of_peak: F = None
    share_of_peak_reason: str | None = None
    # this engine's own memory, measured alone in a subprocess (runner/memory.py)
    load_rss_bytes: N = None
    run_peak_rss_bytes: N = None
    gpu_peak_bytes: N = None
    memory_method: str | None = None
    # CUDA: GPU compute time apart from host latency, NVML energy (scenarios/gpu_timing.py)
    gpu_compute_p50_s: F = None
    gpu_compute_p90_s: F = None
    gpu_compute_p99_s: F = None
    gpu_compute_sample_count: N = None
    host_overhead_ratio: F = None
    energy_j_per_inference: F = None
    avg_power_w: F = None
    throttled: bool | None = None
    # the host during the timed rounds (runner/interference.py): other processes' CPU seconds and
    # steal on the CPUs this process may use, the 1-minute load average, the rounds' IQR/median;
    # ``interference`` is why the case cannot be compared (None: clean), and reports say "noisy"
    host_other_cpu_s: F = None
    host_steal_s: F = None
    host_load_avg: F = None
    host_cpus: N = None
    host_wall_s: F = None
    dispersion_iqr_ratio: F = None
    host_interference_note: str | None = None
    interference: str | None = None
    engine_settings: dict = field(default_factory=dict)
    input_shapes: dict = field(default_factory=dict)
    engine_notice: str | None = None
    #: the tool and settings that built an int8 case (NNCF, torchao, ONNX Runtime's quantizer ...)
    int8_recipe: str | None = None
    model_note: str | None = None


@record_type
@dataclass(frozen=True, kw_only=True)
class LoadRecord(Record):
    """One MLPerf LoadGen scenario run (perf_tests/test_load.py); the figures are LoadGen's."""

    kind = "load"
    axes = ("loadgen_scenario",)

    loadgen_scenario: str
    valid: bool | None = None
    loadgen_result: str | None = None
    p50_s: F = None
    p90_s: F = None
    p99_s: F = None
    mean_s: F = None
    samples_per_s: F = None
    query_count: N = None
    latency_bound_s: F = None
    max_valid_qps: F = None
    failures: list = field(default_factory=list)


@record_type
@dataclass(frozen=True, kw_only=True)
class ConcurrencyRecord(Record):
    """Closed-loop throughput at fixed concurrency levels (scenarios/concurrency.py)."""

    kind = "concurrency"

    levels: list = field(default_factory=list)
    unstable_levels: list = field(default_factory=list)
    failures: list = field(default_factory=list)


@record_type
@dataclass(frozen=True, kw_only=True)
class GenerationRecord(Record):
    """Greedy token generation with a KV cache (perf_tests/test_generation.py)."""

    kind = "generation"
    axes = ("prompt_length", "new_tokens")

    prompt_length: int
    new_tokens: int
    ttft_p50_s: F = None
    ttft_p99_s: F = None
    tpot_p50_s: F = None
    tpot_p90_s: F = None
    tpot_p99_s: F = None
    decode_tokens_per_s: F = None
    e2e_tokens_per_s: F = None
    timed_runs: N = None
    equivalence: dict | None = None


@record_type
@dataclass(frozen=True, kw_only=True)
class PipelineRecord(Record):
    """The image -> caption pipeline in one run mode (perf_tests/test_pipeline.py)."""

    kind = "pipeline"
    axes = ("mode",)

    mode: str
    e2e_p50_s: F = None
    e2e_p99_s: F = None
    peak_rss_bytes: N = None
    artifact_total_bytes: N = None
    equivalence: dict | None = None


@record_type
@dataclass(frozen=True, kw_only=True)
class AccuracyRecord(Timed):
    """A trained model's accuracy on held-out data beside eager fp32's (perf_tests/test_accuracy.py)."""

    kind = "accuracy"

    accuracy: float
    baseline_accuracy: F = None
    accuracy_ratio: F = None


@record_type
@dataclass(frozen=True, kw_only=True)
class OverheadRecord(Timed):
    """The bare runtime call against the harness's ``run`` (perf_tests/test_overhead.py)."""

    kind = "overhead"
    axes = ("mode",)

    mode: str
    overhead_pct_interleaved: F = None


@record_type
@dataclass(frozen=True, kw_only=True)
class ColdStartRecord(Record):
    """Time from a fresh process to its first inference (scenarios/cold_start.py)."""

    kind = "cold_start"
    chart = ChartSpec("Cold start: a fresh process to its first answer (median of the starts; lower is better)",
                      "cold_start_p50_s")

    cold_start_p50_s: F = None
    cold_start_max_s: F = None
    #: medians over the starts: the interpreter's own start-up, then what the child timed itself (the
    #: runtime's imports; this harness's own, taken out of the figures; load; first and second answer)
    startup_s: F = None
    import_s: F = None
    harness_import_s: F = None
    load_s: F = None
    first_inference_s: F = None
    second_inference_s: F = None
    starts: N = None
    cold_start_walls_s: list = field(default_factory=list)
