"""What this CPU can do, for the paths that pick their arithmetic by it (embedding, matching)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX or AVX-512 BF16: Sapphire Rapids,
    AMD Zen 4 and later). Elsewhere bfloat16 is emulated, slower than float32 or int8."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & {"amx_bf16", "avx512_bf16"})
    except OSError:  # not Linux: no way to tell here, so assume not
        pass
    return False
