"""What this CPU can do, for the paths that pick their arithmetic by it (embedding, matching)."""

from __future__ import annotations

from functools import lru_cache


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
    """Whether bfloat16 products are faster than float32 here: where the CPU has Intel AMX
    (``amx_bf16``: Sapphire Rapids and later, when the OS exposes it). AVX-512 BF16 alone is not
    enough: on a Xeon whose VM shows ``avx512_bf16`` but not AMX, torch multiplied bfloat16 at
    0.6x its float32 rate and the bfloat16 embedder ran at 0.69x plain fp32."""
    return "amx_bf16" in (cpu_flags() if flags is None else flags)
