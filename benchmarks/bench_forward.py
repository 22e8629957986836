"""Benchmark (goal P5): one ``apply`` of a default cube vs a bare numpy GEMM of the same shape.

The baseline is the matrix product the operator reduces to, ``(H·W, E) @ (E, C)`` with
both operands already contiguous, so the ratio measures what the harness adds (reshape,
dtype promotion, cached M(θ) lookup). Also times the adjoint and building M(θ) for a new θ.

Target: apply throughput ≥ 0.7 × GEMM throughput.

    .venv/bin/python benchmarks/bench_forward.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from harness.forward import ForwardModel, Spec

TARGET = 0.7


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: BLAS threads, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model = ForwardModel("default")
    spec = Spec(1.0, 0.05, 0.3, -0.05)
    rng = np.random.default_rng(0)
    x = rng.random((6, 128, 128))
    m = model.matrix(spec)
    a = np.ascontiguousarray(x.reshape(6, -1).T)
    y = model.apply(x, spec)

    t_gemm = _median_time(lambda: a @ m, args.repeats)
    t_apply = _median_time(lambda: model.apply(x, spec), args.repeats)
    t_adjoint = _median_time(lambda: model.adjoint(y, spec), args.repeats)
    specs = iter(Spec(float(v), 0.0, 0.0, 0.0) for v in np.linspace(-3, 6, 10 * args.repeats + 10))
    t_matrix = _median_time(lambda: model.matrix(next(specs)), args.repeats)
    ratio = t_gemm / t_apply
    print("| measurement (default cube 128×128×1000, E = 6) | median s |")
    print("|---|---|")
    print(f"| bare GEMM (16384×6)·(6×1000) (baseline) | {t_gemm:.4f} |")
    print(f"| `ForwardModel.apply` | {t_apply:.4f} |")
    print(f"| `ForwardModel.adjoint` | {t_adjoint:.4f} |")
    print(f"| `ForwardModel.matrix` for a new θ | {t_matrix:.4f} |")
    print(
        f"\nP5: apply throughput / GEMM throughput = {ratio:.2f} (target ≥ {TARGET}) -> {'PASS' if ratio >= TARGET else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
