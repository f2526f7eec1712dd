"""What this CPU can do, for the paths that pick their arithmetic by it (embedding, matching)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import lru_cache

# The scorer's bfloat16 first stage (``consumers.score``) also recomputes ~8 % of its candidate
# pairs exactly; it pays where bfloat16 products run at least this much faster than float32.
BF16_MIN_SPEEDUP = 1.5


def usable_cores() -> int:
    """Cores this process may run on (containers and taskset narrow it), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is not there)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:  # not Linux: no way to tell here
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the bfloat16 embedder beats the int8 one here: where the CPU has Intel AMX
    (``amx_bf16``: Sapphire Rapids and later, when the OS exposes it). AVX-512 BF16 alone is not
    enough: on a Xeon whose VM shows ``avx512_bf16`` but not AMX the bfloat16 embedder ran at
    0.69x plain fp32, and on an AMD EPYC (Zen 4) at 1.9x, below int8's 2.1x."""
    return "amx_bf16" in (cpu_flags() if flags is None else flags)


def bf16_products_faster(flags: frozenset[str] | None = None, speedup: Callable[[], float] | None = None) -> bool:
    """Whether large bfloat16 matrix products beat float32 ones here (the scorer's first stage).

    Yes with AMX; no without AVX-512 BF16 (bfloat16 would be emulated). With AVX-512 BF16 alone
    the flags do not tell: the same flags gave 0.6x float32's rate on a Xeon VM without AMX and
    2.4x on an AMD EPYC (Zen 4). There it is measured, once per process (``bf16_speedup``)."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return True
    if "avx512_bf16" not in flags:
        return False
    return (speedup or bf16_speedup)() >= BF16_MIN_SPEEDUP


@lru_cache(maxsize=1)
def bf16_speedup() -> float:
    """float32 seconds / bfloat16 seconds for one block of the scorer (256 papers x 384 against
    32,768 topics): numpy's float32, as the scorer's float32 stage takes it, against torch's
    bfloat16, as its bfloat16 stage does. Best of three after a warm-up, ~0.5 s. A quarter of
    the block measured 1.1-1.5x on a Zen 4 where whole blocks gave 2.3x, run after run.

    On one thread each, as the scorer's workers run them (a product per core), in a thread of its
    own so the settings stay there. With both libraries on every core the same Zen 4 measured
    1.4x in some processes and 2.5x in others (OpenBLAS's threads still spinning after the
    float32 product took cores from torch's), and one index took float32 for it; on one thread
    each it measured 2.2-2.4x."""
    import threading

    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    papers = rng.standard_normal((256, 384), dtype=np.float32)
    topics = rng.standard_normal((32768, 384), dtype=np.float32)
    p16, t16 = torch.from_numpy(papers).bfloat16(), torch.from_numpy(topics).bfloat16()
    ratio: list[float] = []

    def measure() -> None:
        torch.set_num_threads(1)  # this thread's OpenMP setting
        with threadpool_limits(limits=1, user_api="blas"):
            ratio.append(_best(lambda: papers @ topics.T) / _best(lambda: torch.mm(p16, t16.T)))

    worker = threading.Thread(target=measure, name="bf16-speedup")
    worker.start()
    worker.join()
    return ratio[0]


def _best(run: Callable[[], object], repeat: int = 3) -> float:
    run()  # the first call loads and tunes kernels
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best
