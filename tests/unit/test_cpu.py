import math

from paperwire.cpu import BF16_MIN_SPEEDUP, bf16_products_faster, bf16_speedup, cpu_flags, native_bf16

AMX = frozenset({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"})
AVX512_BF16 = frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


def test_the_bfloat16_embedder_is_chosen_only_with_amx():
    assert native_bf16(AMX)
    # AVX-512 BF16 without AMX (a VM that hides it, or AMD Zen 4): int8 embeds faster there.
    assert not native_bf16(AVX512_BF16)
    assert not native_bf16(AVX2)
    assert not native_bf16(frozenset())


def _never() -> float:
    raise AssertionError("measured where the flags decide")


def test_bfloat16_products_are_measured_only_where_the_flags_do_not_decide():
    assert bf16_products_faster(AMX, _never)
    assert not bf16_products_faster(AVX2, _never)
    assert not bf16_products_faster(frozenset(), _never)
    # AVX-512 BF16 alone: as fast as the measurement says.
    assert bf16_products_faster(AVX512_BF16, lambda: 2.4)  # AMD Zen 4
    assert not bf16_products_faster(AVX512_BF16, lambda: 0.6)  # a Xeon VM without AMX
    assert bf16_products_faster(AVX512_BF16, lambda: BF16_MIN_SPEEDUP)
    assert not bf16_products_faster(AVX512_BF16, lambda: BF16_MIN_SPEEDUP - 0.01)


def test_the_bfloat16_speedup_is_a_measured_ratio():
    ratio = bf16_speedup()
    assert math.isfinite(ratio) and ratio > 0
    assert bf16_speedup() == ratio  # measured once per process


def test_this_machines_flags_are_read():
    assert "sse2" in cpu_flags()  # every x86-64 CPU has it; the tests run on Linux x86-64
