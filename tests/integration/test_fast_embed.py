"""The fast embedding paths (ONNX int8, torch bfloat16; ``auto`` picks one by CPU) stay faithful
to plain sentence-transformers fp32, and the setting selects each.

Faithfulness only: no timing is asserted here (speed is ``make bench``'s business).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def onnx_cache(model_cache_dir: Path) -> Path:
    return model_cache_dir  # the session's one export (tests/conftest.py)


@pytest.fixture(scope="session")
def onnx_embedder(onnx_cache: Path):  # noqa: ANN201
    from consumers.fast_embed import OnnxEmbedder

    return OnnxEmbedder(cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def abstracts(shared_dir: Path) -> list[str]:
    from consumers.evaluate import read_hf_page

    pairs = read_hf_page((shared_dir / "seed" / "hf_trending_papers_page.txt").read_text(encoding="utf-8"))
    # Mixed lengths on purpose, so the length-sorted batches reorder them.
    return [f"{t}. {a}" for t, a in pairs[:10]] + [pairs[10][0], "KV cache quantization"]


def test_vectors_close_to_fp32_on_real_abstracts(torch_embedder, onnx_embedder, abstracts) -> None:  # noqa: ANN001
    ref = torch_embedder.encode(abstracts)
    fast = onnx_embedder.encode(abstracts)
    assert fast.shape == ref.shape == (len(abstracts), 384)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-4)
    cos = (ref * fast).sum(axis=1)
    assert cos.min() >= 0.98, cos


def test_batch_order_is_input_order(onnx_embedder, abstracts) -> None:  # noqa: ANN001
    one_by_one = np.vstack([onnx_embedder.encode([t]) for t in abstracts])
    batched = onnx_embedder.encode(abstracts)
    # Same rows in the same order. Not bit-equal: dynamic quantization scales each batch's
    # activations by that batch's range, so a text's vector moves a little with its batch-mates.
    sims = one_by_one @ batched.T
    assert (sims.argmax(axis=1) == np.arange(len(abstracts))).all()
    assert np.diag(sims).min() >= 0.98


def test_parallel_runs_give_the_sequential_result(onnx_embedder, onnx_cache: Path, abstracts) -> None:  # noqa: ANN001
    from consumers.fast_embed import OnnxEmbedder

    # Same batches (batch_size 4 either way), run one after another or two at a time: every row
    # must land in its own place, and a single-threaded run does not depend on its neighbours.
    one = OnnxEmbedder(cache_dir=onnx_cache, batch_size=4, threads=1)
    two = OnnxEmbedder(cache_dir=onnx_cache, batch_size=4, threads=2)
    np.testing.assert_array_equal(two.encode(abstracts), one.encode(abstracts))


def test_empty_input_and_own_cache_name(onnx_embedder, torch_embedder) -> None:  # noqa: ANN001
    assert onnx_embedder.encode([]).shape == (0, 384)
    assert onnx_embedder.name != torch_embedder.name  # its vectors differ, so its Redis cache must too


def test_export_is_cached_and_reused(onnx_embedder, onnx_cache: Path) -> None:  # noqa: ANN001
    from consumers.fast_embed import OnnxEmbedder

    stamp = onnx_embedder.file.stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=onnx_cache)
    assert again.file == onnx_embedder.file
    assert again.file.stat().st_mtime_ns == stamp
    assert not list(onnx_cache.rglob("*.tmp"))


def test_int8_graph_keeps_layer_norm_apart_from_the_residual_add(onnx_cache: Path, tmp_path: Path) -> None:
    # ONNX Runtime's fused SkipLayerNormalization was the slow part (see consumers/fast_embed.py):
    # neither the exported file nor the graph the session runs may have it.
    import onnx
    import onnxruntime as ort

    from consumers.fast_embed import _SLOW_FUSIONS, onnx_model_file

    file = onnx_model_file(None, onnx_cache)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "as_run.onnx")
    ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"], disabled_optimizers=_SLOW_FUSIONS)
    for graph in (onnx.load(str(file)).graph, onnx.load(str(tmp_path / "as_run.onnx")).graph):
        ops = {n.op_type for n in graph.node}
        assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops, sorted(ops)
        assert ops & {"QAttention", "DynamicQuantizeMatMul", "MatMulInteger"}  # still int8


@pytest.fixture(scope="session")
def bf16_embedder():  # noqa: ANN201
    from consumers.fast_embed import Bf16Embedder

    return Bf16Embedder()


def test_bf16_vectors_close_to_fp32_in_input_order(torch_embedder, bf16_embedder, abstracts) -> None:  # noqa: ANN001
    # Correct on any CPU (where bfloat16 is not native it is emulated: slow, same numbers).
    ref = torch_embedder.encode(abstracts)
    fast = bf16_embedder.encode(abstracts)
    assert fast.shape == ref.shape and fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)  # pooled in float32
    cos = (ref * fast).sum(axis=1)
    assert cos.min() >= 0.999, cos
    assert bf16_embedder.name not in (torch_embedder.name, "")  # its own Redis cache
    assert bf16_embedder.encode([]).shape == (0, 384)


def _padded(embedder, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """One batch of ``texts`` as the embedder pads it: token ids, attention mask, token types."""
    encodings = embedder.tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    ids, mask, types = (np.zeros((len(texts), width), np.int64) for _ in range(3))
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)], mask[row, : len(e.ids)], types[row, : len(e.ids)] = e.ids, 1, e.type_ids
    return ids, mask, types


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_bf16_fused_layers_give_transformers_hidden_states(bf16_embedder, abstracts) -> None:  # noqa: ANN001
    import torch

    if bf16_embedder.fused is None:  # the model's own layers are used; nothing else to compare
        assert not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        pytest.skip("oneDNN has no bfloat16 kernels on this CPU")
    # A padded batch (mixed lengths: masked keys) and a full one (the longest abstracts: no mask).
    full = [t for t in abstracts if len(bf16_embedder.tokenizer.encode(t).ids) == bf16_embedder.max_length][:3]
    assert len(full) >= 2
    for texts in (abstracts, full):
        ids, mask, types = _padded(bf16_embedder, texts)
        with torch.inference_mode():
            tensors = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)
            ours = bf16_embedder.fused(*tensors).float().numpy()
            model = bf16_embedder.model(input_ids=tensors[0], attention_mask=tensors[1], token_type_ids=tensors[2])
            theirs = model.last_hidden_state.float().numpy()
        assert ours.shape == theirs.shape
        keep = mask.astype(bool)
        # Token by token, as close as two bfloat16 computations of one thing: not exactly equal
        # (the fused products round once where transformers rounds between steps).
        cos = (ours * theirs).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(theirs, axis=-1)
        assert cos[keep].min() >= 0.999, cos[keep].min()
        pooled = [(h * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True) for h in (ours, theirs)]
        pooled_cos = (
            (pooled[0] * pooled[1]).sum(1) / np.linalg.norm(pooled[0], axis=1) / np.linalg.norm(pooled[1], axis=1)
        )
        assert pooled_cos.min() >= 0.9999, pooled_cos


def test_bf16_parallel_runs_leave_the_callers_threads(abstracts) -> None:  # noqa: ANN001
    import torch

    from consumers.fast_embed import Bf16Embedder

    before = torch.get_num_threads()
    one = Bf16Embedder(batch_size=4, threads=1)
    two = Bf16Embedder(batch_size=4, threads=2)
    # Same batches, sequential or two at a time: every row lands in its own place, unchanged.
    np.testing.assert_allclose(two.encode(abstracts), one.encode(abstracts), atol=1e-6)
    assert torch.get_num_threads() == before  # workers set one thread for themselves only


def test_auto_picks_by_cpu(monkeypatch: pytest.MonkeyPatch, settings) -> None:  # noqa: ANN001
    from consumers import fast_embed
    from paperwire.settings import Settings

    monkeypatch.delenv("PAPERWIRE_EMBED_BACKEND", raising=False)
    assert Settings(_env_file=None).embed_backend == "auto"  # the default itself, not a .env's choice
    monkeypatch.setattr(fast_embed, "native_bf16", lambda: True)
    assert fast_embed.resolve_backend("auto") == "bf16"
    monkeypatch.setattr(fast_embed, "native_bf16", lambda: False)
    assert fast_embed.resolve_backend("auto") == "onnx"
    assert fast_embed.resolve_backend("torch") == "torch"
    monkeypatch.setenv("PAPERWIRE_EMBED_BACKEND", "bf16")
    assert isinstance(fast_embed.make_embedder(Settings(_env_file=None)), fast_embed.Bf16Embedder)


def test_onnx_backend_uses_the_shared_export(settings, onnx_cache: Path) -> None:  # noqa: ANN001
    from consumers.fast_embed import ONNX_NAME, OnnxEmbedder, make_embedder

    fast = make_embedder(settings.model_copy(update={"embed_backend": "onnx"}))
    assert isinstance(fast, OnnxEmbedder)
    assert fast.name == ONNX_NAME
    # From the shared model cache, not from this test's own (fresh, empty) state dir.
    assert fast.file.is_relative_to(onnx_cache)
    assert not (settings.state_dir / "models").exists()


def test_torch_backend_is_still_selectable(monkeypatch: pytest.MonkeyPatch, settings, onnx_embedder, abstracts) -> None:  # noqa: ANN001
    from consumers.embed import MODEL_NAME, Embedder
    from consumers.fast_embed import make_embedder
    from paperwire.settings import Settings

    monkeypatch.setenv("PAPERWIRE_EMBED_BACKEND", "torch")
    assert Settings(_env_file=None).embed_backend == "torch"
    plain = make_embedder(settings.model_copy(update={"embed_backend": "torch"}))
    assert isinstance(plain, Embedder)
    assert plain.name == MODEL_NAME
    vectors = plain.encode(abstracts[:3])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert ((vectors * onnx_embedder.encode(abstracts[:3])).sum(axis=1) >= 0.98).all()  # the same model
