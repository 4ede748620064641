"""This machine's fp32 matrix-multiply rate with torch's current thread count: the ceiling an encoder can reach.

Usage: python bench/matmul.py [--n 1024] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import machine_info, reproduce_command  # noqa: E402


@dataclass(frozen=True)
class MatmulRate:
    shape: str
    threads: int
    gflops_best: float
    gflops_median: float
    repeats: int


def measure_matmul(m: int, k: int, n: int, seconds: float = 2.0) -> MatmulRate:
    """GFLOP/s of (m x k) @ (k x n) fp32, best and median over repeats filling `seconds`."""
    import torch

    a = torch.randn(m, k, dtype=torch.float32)
    b = torch.randn(k, n, dtype=torch.float32)
    out = torch.empty(m, n, dtype=torch.float32)
    flops = 2.0 * m * k * n
    with torch.inference_mode():
        for _ in range(2):  # warm-up: thread pool start, page faults
            torch.matmul(a, b, out=out)
        rates: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(rates) < 3:
            t0 = time.perf_counter()
            torch.matmul(a, b, out=out)
            rates.append(flops / (time.perf_counter() - t0) / 1e9)
    rates.sort()
    return MatmulRate(f"{m}x{k}x{n}", torch.get_num_threads(), rates[-1], rates[len(rates) // 2], len(rates))


def measure_machine(seconds: float = 2.0, n: int = 1024) -> list[MatmulRate]:
    """A square matmul, and one shaped like MiniLM's feed-forward layer (64 chunks x 200 tokens, 384 -> 1536)."""
    return [measure_matmul(n, n, n, seconds), measure_matmul(64 * 200, 384, 1536, seconds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="side of the square matmul")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per shape")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before measuring")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rates = measure_machine(args.seconds, args.n)
    machine = machine_info()
    if args.json:
        print(json.dumps({"matmul": [asdict(r) for r in rates], "machine": machine}))
        return
    for r in rates:
        print(
            f"fp32 matmul {r.shape:>16}: best {r.gflops_best:7.1f} GFLOP/s, median {r.gflops_median:7.1f} "
            f"({r.repeats} repeats, {r.threads} threads)"
        )
    print("machine:", ", ".join(f"{k}={v}" for k, v in machine.items()))
    argv = ["--n", str(args.n), "--seconds", str(args.seconds)]
    argv += ["--threads", str(args.threads)] if args.threads else []
    print("reproduce:", reproduce_command("bench/matmul.py", argv))


if __name__ == "__main__":
    main()
