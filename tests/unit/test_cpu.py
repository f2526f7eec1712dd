from paperwire.cpu import cpu_flags, native_bf16


def test_bfloat16_is_native_only_with_amx():
    assert native_bf16(frozenset({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}))
    # AVX-512 BF16 without AMX (a VM that hides it, or AMD Zen 4): bfloat16 ran slower than fp32.
    assert not native_bf16(frozenset({"avx512f", "avx512_bf16", "avx512_vnni"}))
    assert not native_bf16(frozenset({"avx2", "fma"}))
    assert not native_bf16(frozenset())


def test_this_machines_flags_are_read():
    assert "sse2" in cpu_flags()  # every x86-64 CPU has it; the tests run on Linux x86-64
