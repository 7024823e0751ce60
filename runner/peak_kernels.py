"""The GEMMs that measure a machine's peak per precision (runner/peak.py caches what they give).

A large square matrix product is compute bound: 2 n^3 operations on 3 n^2 values, so past a few
hundred rows the cores, not memory, set its pace, and its rate is the most a device gives that
precision through a runtime's own kernel. Each kernel starts at ``MIN_N`` (1024 on a CPU: 2 GFLOP
a call, far past its caches) and doubles while the fastest of three calls is under ``CALL_S`` (a
big machine finishes 1024 in a millisecond), up to ``MAX_N``; then it is timed for ``SAMPLE_S``
seconds. The peak is the best call (a shared host only ever slows a call down), the median is
kept beside it.

- CPU fp32 and bf16: ``torch.matmul`` (oneDNN/MKL). bf16 is native only with AVX512-BF16 or
  AMX-BF16 in the CPU flags; elsewhere torch emulates it, and the figure is then the peak this
  machine gives bf16, said so in the note (read from the flags, never assumed).
- CPU fp16: measured only with AVX512-FP16 or AMX-FP16; without them torch's CPU fp16 matmul is a
  scalar fallback (1 GFLOP/s at n=1024 on an AVX512-BF16 EPYC, 80x below fp32), no runtime's
  kernel, so it is not measured and the reason says why.
- CPU int8: ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32, MLAS's VNNI kernel: what the
  MatMulInteger/DynamicQuantizeMatMul nodes of ORT's quantized graphs run), with the run's
  threads; ``torch._int_mm`` where ONNX Runtime is not installed.
- CUDA: ``torch.matmul`` fp32 (TF32 off, or on for "fp32-tf32"), fp16, bf16 and ``torch._int_mm``
  (cuBLASLt int8), timed with CUDA events. Never run: no GPU was available where this was written.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

MIN_N = {"cpu": 1024, "cuda": 4096}
MAX_N = {"cpu": 2048, "cuda": 8192}
CALL_S = 0.01      # one call this long: a thread pool's start and join are a small part of it
SAMPLE_S = 0.5     # seconds of timed calls per kernel
MIN_SAMPLES = 5
PRECISIONS = ("fp32", "fp32-tf32", "fp16", "bf16", "int8")

#: CPU flags (as /proc/cpuinfo spells them) giving native arithmetic; fixtures/hardware.py reads
#: the same flags to choose the default precisions, but a runner module cannot import fixtures
NATIVE_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("avx512_fp16", "amx_fp16")}


class NotMeasured(Exception):
    """This precision has no kernel to measure on this device; the message says why."""


def native_note(precision: str, flags: frozenset[str]) -> str | None:
    """Whether the CPU computes ``precision`` natively, from its flags (None: fp32/int8, always)."""
    wanted = NATIVE_FLAGS.get(precision)
    if wanted is None:
        return None
    have = [f for f in wanted if f in flags]
    if have:
        return f"{precision} native ({', '.join(have)})"
    return (f"{precision} emulated: the CPU flags have neither {' nor '.join(wanted)}, so this is the peak "
            f"this machine gives {precision}, not a native unit's")


Timer = Callable[[], float]   # runs the kernel once, returns its seconds


def _cpu_timer(call: Callable[[], Any]) -> Timer:
    def once() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start
    return once


def _torch_cpu(precision: str) -> Callable[[int], Timer]:
    import torch
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def make(n: int) -> Timer:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        return _cpu_timer(lambda: torch.matmul(a, b))
    return make


def _torch_int_mm_cpu(n: int) -> Timer:
    import torch
    a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
    return _cpu_timer(lambda: torch._int_mm(a, b))


def _ort_matmul_integer(threads: int | None) -> Callable[[int], Timer]:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def make(n: int) -> Timer:
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "peak",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]),
             helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8  # what every ONNX Runtime since 1.10 reads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's own default, as the engines do
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {"A": rng.integers(0, 256, (n, n), dtype=np.uint8), "B": rng.integers(-128, 128, (n, n), dtype=np.int8)}
        return _cpu_timer(lambda: session.run(None, feed))
    return make


def _cuda(precision: str) -> Callable[[int], Timer]:  # never run: no GPU where this was written
    import torch

    def make(n: int) -> Timer:
        if precision == "int8":
            a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device="cuda")
            b = torch.randint(-128, 128, (n, n), dtype=torch.int8, device="cuda")
            call = lambda: torch._int_mm(a, b)  # noqa: E731
        else:
            dtype = {"fp32": torch.float32, "fp32-tf32": torch.float32, "fp16": torch.float16,
                     "bf16": torch.bfloat16}[precision]
            a = torch.randn(n, n, device="cuda", dtype=dtype)
            b = torch.randn(n, n, device="cuda", dtype=dtype)
            call = lambda: torch.matmul(a, b)  # noqa: E731
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def once() -> float:
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = precision == "fp32-tf32"
            try:
                start.record()
                call()
                end.record()
                end.synchronize()
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before
            return start.elapsed_time(end) / 1e3
        return once
    return make


def kernel(device: str, precision: str, threads: int | None,
           flags: frozenset[str]) -> tuple[Callable[[int], Timer], str, str | None]:
    """(a timer factory by size, the kernel's name, the note) or NotMeasured with the reason."""
    if precision not in PRECISIONS:
        raise ValueError(f"peak precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if device == "cuda":
        name = "torch._int_mm (cuBLASLt)" if precision == "int8" else f"torch.matmul {precision} (cuBLAS)"
        return _cuda(precision), name, None
    if device != "cpu":
        raise ValueError(f"peak device {device!r}; expected cpu or cuda")
    if precision == "fp32-tf32":
        raise NotMeasured("TF32 is a CUDA mode; a CPU computes fp32")
    if precision == "int8":
        try:
            import onnxruntime  # noqa: F401
            return _ort_matmul_integer(threads), "ONNX Runtime MatMulInteger u8 x s8 (MLAS)", None
        except ImportError:
            import torch
            if not hasattr(torch, "_int_mm"):
                raise NotMeasured("no int8 GEMM: ONNX Runtime is not installed and this torch has no _int_mm") from None
            return _torch_int_mm_cpu, "torch._int_mm (ONNX Runtime not installed)", None
    note = native_note(precision, flags)
    if precision == "fp16" and note and "emulated" in note:
        raise NotMeasured("fp16 on this CPU has no runtime kernel (no avx512_fp16/amx_fp16 in the CPU flags: "
                          "torch's CPU fp16 matmul is a scalar fallback), so its peak is not measured")
    return _torch_cpu(precision), f"torch.matmul {precision}", note


def time_gemm(make: Callable[[int], Timer], min_n: int, max_n: int,
              seconds: float = SAMPLE_S) -> tuple[int, list[float]]:
    """(the size used, the seconds of each timed call): sized up until a call takes CALL_S."""
    n = min_n
    while True:
        once = make(n)
        once()  # the first call allocates and creates the kernel's primitives
        # the fastest of three: one call preempted by another process says nothing about the size
        if min(once() for _ in range(3)) >= CALL_S or n * 2 > max_n:
            break
        n *= 2
    samples: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(samples) < MIN_SAMPLES:
        samples.append(once())
    return n, samples
