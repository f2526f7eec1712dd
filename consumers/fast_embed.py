"""The fast embedding paths: all-MiniLM-L6-v2 in bfloat16 (``Bf16Embedder``) or on ONNX Runtime
with int8 weights (``OnnxEmbedder``). Same interface as ``consumers.embed.Embedder`` (``name``,
``encode(texts) -> float32 unit vectors``), the same tokenisation, length-sorted batches run
data-parallel, and mean pooling in float32 (``_Batched``).

``PAPERWIRE_EMBED_BACKEND=auto`` (the default) picks by CPU (``paperwire.cpu.native_bf16``):
  * bf16 where the CPU has bfloat16 matrix units (Intel AMX): on a 2-core Sapphire
    Rapids-class Xeon, 2.7-3.3x the papers/s of plain fp32 (``make bench``), vectors at cosine
    0.9999 to it, eval nDCG@10 the same to the third decimal. There, int8 gave only 1.4-1.6x.
  * onnx elsewhere: on a 2-core AMD EPYC (AVX2, no VNNI) 1.65-2.3x, cosine 0.995; bfloat16
    would be emulated there. The notes below are from that machine. On a 2-core Xeon VM with
    AVX-512 BF16 and VNNI but no AMX, int8 did 1.63x and bfloat16 0.69x. On a 2-core AMD EPYC
    Zen 4 (AVX-512 VNNI and BF16, no AMX) int8 does 2.4x (2.15x with SkipLayerNormalization,
    ``_SLOW_FUSIONS``) and the fused bfloat16 layers 2.0x. Profiled there on one core (8 x 256
    tokens, 247 ms): QAttention 50 % (its int8 QKV product ~30 ms, the rest the float32
    attention itself), the other int8 products 37 %, BiasGelu 8 %, LayerNorm and Add 3 %.
``torch`` (plain fp32) and each path by name stay selectable.

Why int8 is faster (profiled on the 91 seed papers, which all fill the 256-token window): in plain
sentence-transformers ~75 % of the time is fp32 ``torch.nn.functional.linear``; tokenisation and
pooling are noise. So the work is in the matrix products, and the fix is int8 weights. This CPU
(AVX2, no VNNI) multiplies u8 x s8 with ``vpmaddubsw``, at most twice the fp32 FMA rate: measured
on one core the int8 model does ~1.75x the work per CPU second of the torch model, and the rest
of the gain comes from using the cores better than torch's intra-op threads do (below).

1. export the packaged model's transformer (nothing downloaded) with ``torch.onnx.export``,
2. fuse it with ONNX Runtime's BERT optimizer (attention, LayerNorm, GELU become single ops),
3. quantize the weights to int8 with dynamic quantization (activations stay float, scaled per
   batch; weights per output channel, per-tensor scales cost cosine 0.93), and cache the result
   in ``settings.model_cache_dir`` (default ``~/.cache/paperwire/models``, one per user, shared
   by every state dir) keyed by the model files' digest (~20 s, once per machine and model);
4. at run time: tokenise with the model's own ``tokenizer.json`` (same truncation at 256 tokens),
   batch texts of similar length together so little padding is computed, and run the batches
   data-parallel: one single-threaded ``session.run`` per core at a time (ONNX Runtime releases
   the GIL). Unlike intra-op threads, which meet at a barrier after every operator, a core that
   another process takes only slows its own batch, so a shared machine costs this path far less.
   Then mean-pool over the mask and L2-normalise, exactly as the model's Pooling and Normalize
   modules do.

What did not help here (per-CPU-second, within 3 %): batch size 1 to 32, ORT's
MultiHeadAttention instead of the fused Attention, the tanh GELU approximation, denormals as
zero, u8 weights (slower), ``reduce_range`` (slower, same cosine).

Measured (91 seed papers, interleaved with plain sentence-transformers fp32 on a shared 2-core
EPYC, load 4-6): 1.9x median paired, 2.3x best; two intra-op threads gave 1.7x / 2.2x in the
same run. ``paperwire eval`` nDCG@10 of the matcher's ranking is unchanged (0.938 arXiv cs.CL,
0.884 seed).

The vectors are close to, not equal to, the fp32 ones (mean cosine ~0.99 on real abstracts), so
this path has its own ``name`` and therefore its own embedding cache in Redis. They are not
bit-reproducible either: dynamic quantization scales activations by each batch's range, so a
text's vector moves slightly (cosine > 0.98) with the texts batched beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from consumers.embed import DIM, MODEL_NAME, Embedder, default_model_path, quiet_offline_env
from paperwire.cpu import native_bf16, usable_cores
from paperwire.settings import default_model_cache_dir

if TYPE_CHECKING:
    from paperwire.settings import Settings

log = logging.getLogger(__name__)

ONNX_NAME = f"{MODEL_NAME}-onnx-int8"
BF16_NAME = f"{MODEL_NAME}-bf16"
BACKENDS = ("auto", "torch", "bf16", "onnx")
_OPSET = 17
# ONNX Runtime's SkipLayerNormalization (the residual add and LayerNorm as one op) took 16 % of
# the int8 model's time on one core of an AMD EPYC (Zen 4), ~5 ns per element; the plain Add and
# LayerNormalization it replaces took 3 %. Without it a batch of 8 x 256 tokens ran in 247 ms
# instead of 290. Neither the exporter's optimizer nor the session makes it (``_SLOW_FUSIONS``).
_SLOW_FUSIONS = ["SkipLayerNormFusion"]
# Names the optimized graphs' layout in their file names, so caches made with another layout
# (SkipLayerNormalization, before 30 November) are not picked up.
_GRAPH = "-ln"


def _fingerprint(model_path: Path) -> str:
    """Digest of the files that decide the model's output, so a changed model gets a new export."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"):
        f = model_path / name
        if f.is_file():
            h.update(name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _atomic_write(target: Path, write: callable) -> None:  # type: ignore[valid-type]
    # Several processes (matcher replicas, tests) may export at once: each writes its own temp
    # file and renames it into place, so a reader never sees half a model.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; other users (a container's) read the cache too
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _export_lock(folder: Path) -> Iterator[bool]:
    """One exporter per model folder at a time, across processes (matcher replicas starting
    together, a test run beside a demo): the others wait, then find the files made. Two exports at
    once would each take as long as both, for nothing. The kernel drops the lock when its holder
    dies, so a killed exporter never blocks the next one. Yields whether the lock is held."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the atomic renames alone keep the files whole
        yield False
        return
    with (folder / ".lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process's ONNX export in %s", folder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _export_fp32(model_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    # Eager attention exports as the plain MatMul/Softmax pattern the optimizer fuses into one
    # Attention op; the SDPA path exports with NaN guards that block the fusion.
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    dummy = torch.ones((2, 16), dtype=torch.long)
    dyn = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(
            _Hidden(model),
            (dummy, dummy, torch.zeros_like(dummy)),
            str(out),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn, "last_hidden_state": dyn},
            opset_version=_OPSET,
            dynamo=False,  # the TorchScript exporter gives a plain graph the BERT optimizer recognises
        )


def _optimize(src: Path, out: Path, config: dict) -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False  # see _SLOW_FUSIONS
    opt = optimize_model(
        str(src),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
        opt_level=1,  # the fusions only; level 2+ would bake in hardware-specific layouts
        optimization_options=options,
    )
    opt.save_model_to_file(str(out))


class _QuietRoot(logging.Filter):
    # onnxruntime.quantization logs dozens of INFO lines per export with ``logging.info`` (the
    # root logger, not a named one). Filtering on the root logger drops only records logged on
    # it directly; every named logger's records still pass.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO


def _quantize(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuietRoot()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(
            str(src),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # Only the big products: the embedding table stays fp32 (a lookup costs nothing, and
            # its rounding would shift every token).
            op_types_to_quantize=["MatMul", "Attention"],
            # The fused graph has ONNX Runtime's own ops (Attention, BiasGelu), which ONNX shape
            # inference does not know; their outputs are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().removeFilter(quiet)


def onnx_model_file(model_path: str | Path | None, cache_dir: Path, *, quantize: bool = True) -> Path:
    """The ONNX model for ``model_path``, exported (and quantized) on first use into ``cache_dir``."""
    src = Path(model_path or default_model_path())
    folder = Path(cache_dir) / f"{MODEL_NAME}-{_fingerprint(src)}"
    fp32, fused, int8 = folder / "model.onnx", folder / f"model.fused{_GRAPH}.onnx", folder / f"model.int8{_GRAPH}.onnx"
    target = int8 if quantize else fused
    if target.is_file():  # the usual case: no lock, no writes (the cache may be read-only)
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with _export_lock(folder) as locked:
        if target.is_file():  # made by the process we waited for
            return target
        if locked:
            # Every writer holds this lock, so a temp file here now is a killed exporter's (90 MB).
            for stale in folder.glob("*.tmp"):
                stale.unlink(missing_ok=True)
        _export(src, fp32, fused, int8 if quantize else None)
    return target


def _export(src: Path, fp32: Path, fused: Path, int8: Path | None) -> None:
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    folder = fp32.parent
    # Tracing a third-party model warns about its Python control flow and about the TorchScript
    # exporter being legacy (chosen on purpose, above); none of it concerns the exported graph,
    # which the faithfulness test checks against the fp32 model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not fp32.is_file():
            log.info("exporting %s to ONNX in %s (once)", src, folder)
            _atomic_write(fp32, lambda p: _export_fp32(src, p))
        if not fused.is_file():
            _atomic_write(fused, lambda p: _optimize(fp32, p, config))
        if int8 is not None and not int8.is_file():
            log.info("quantizing %s to int8", fused)
            _atomic_write(int8, lambda p: _quantize(fused, p))


class _Batched:
    """Tokenise once, batch texts of similar length, run the batches data-parallel, mean-pool.

    Subclasses say how a batch becomes hidden states (``_hidden``); everything around the model is
    the same for every fast path, and is what sentence-transformers' Pooling and Normalize do."""

    name: str

    def __init__(self, model_path: str | None, batch_size: int, threads: int | None) -> None:
        from tokenizers import Tokenizer

        self.path = model_path or default_model_path()
        self.batch_size = batch_size  # the most per run; small batches keep every core busy to the end
        st_config = json.loads((Path(self.path) / "sentence_bert_config.json").read_text(encoding="utf-8"))
        self.max_length = int(st_config.get("max_seq_length", 256))
        self.tokenizer = Tokenizer.from_file(str(Path(self.path) / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()  # padding is per batch, to that batch's longest text
        self.workers = max(1, threads or usable_cores())
        self._pool: ThreadPoolExecutor | None = None

    def _hidden(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _start_worker(self) -> None:
        """Runs once in each worker thread before its first batch."""

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        # Longest first, so batches hold texts of similar length and little padding is computed,
        # and the longest runs start first and the short ones fill in at the end.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        # A few texts are still split across the cores rather than run as one batch on one.
        size = max(1, min(self.batch_size, -(-len(texts) // self.workers)))
        batches = [order[start : start + size] for start in range(0, len(order), size)]
        out = np.zeros((len(texts), DIM), dtype=np.float32)

        def run(idx: list[int]) -> None:
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                e = encodings[i]
                n = len(e.ids)
                ids[row, :n] = e.ids
                mask[row, :n] = 1
                types[row, :n] = e.type_ids
            out[idx] = _mean_pool_normalise(self._hidden(ids, mask, types), mask)  # each batch owns its rows

        if self.workers == 1 or len(batches) == 1:
            for idx in batches:
                run(idx)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.workers, thread_name_prefix="embed", initializer=self._start_worker
                )
            list(self._pool.map(run, batches))  # list(): wait for all, re-raise the first error
        return out


class OnnxEmbedder(_Batched):
    """Text -> unit-length float32 vectors, on ONNX Runtime. Drop-in for ``Embedder``."""

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 8,
        *,
        cache_dir: Path | None = None,
        quantize: bool = True,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        super().__init__(model_path, batch_size, threads)
        self.name = ONNX_NAME if quantize else f"{MODEL_NAME}-onnx"
        self.file = onnx_model_file(self.path, Path(cache_dir or default_model_cache_dir()), quantize=quantize)
        options = ort.SessionOptions()
        # One thread per run, several runs at once (``encode``): data parallelism, no barriers.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.file), options, providers=["CPUExecutionProvider"], disabled_optimizers=_SLOW_FUSIONS
        )
        self._inputs = {i.name for i in self.session.get_inputs()}
        log.info("onnx embedder %s from %s, %d parallel runs", self.name, self.file, self.workers)

    def _hidden(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]


class Bf16Embedder(_Batched):
    """Text -> unit-length float32 vectors: the packaged model in torch, weights and activations
    in bfloat16, for CPUs with bfloat16 matrix units (Intel AMX; ``native_bf16``).

    Only the transformer runs in bfloat16; its hidden states are pooled and normalised in float32,
    so the vectors sit at cosine ~0.9999 to the fp32 ones. Batches run data-parallel like the ONNX
    path: each worker thread keeps torch to one intra-op thread (its own OpenMP setting, so the
    caller's threads are untouched)."""

    def __init__(self, model_path: str | None = None, batch_size: int = 8, *, threads: int | None = None) -> None:
        quiet_offline_env()
        import torch
        from transformers import AutoModel

        super().__init__(model_path, batch_size, threads)
        self.name = BF16_NAME
        self.model = AutoModel.from_pretrained(self.path, dtype=torch.bfloat16).eval()
        self.fused = _FusedBert.of(self.model)
        log.info(
            "bf16 embedder %s from %s, %d parallel runs, %s",
            self.name, self.path, self.workers, "fused oneDNN layers" if self.fused else "transformers' layers",
        )  # fmt: skip

    def _start_worker(self) -> None:
        import torch

        torch.set_num_threads(1)

    def _hidden(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensors = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types)
            if self.fused is not None:
                out = self.fused(*tensors)
            else:
                out = self.model(input_ids=tensors[0], attention_mask=tensors[1], token_type_ids=tensors[2])
                out = out.last_hidden_state
        return out.float().numpy()


# A BERT layer's other weights, in the order ``_FusedBert.__call__`` takes them.
_LAYER_PARTS = (
    "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm",
)  # fmt: skip


class _FusedBert:
    """The packaged model's BERT encoder, for inference in bfloat16, in fewer and fused steps than
    transformers' own layers (which stay the reference: ``tests/integration/test_fast_embed.py``
    compares the two): each layer's query, key and value projections as one matrix product;
    every projection a oneDNN inner product with its bias added in the same call, the feed-forward
    one with GELU too. Profiled on an AMX Xeon (8 texts x 256 tokens, one thread), transformers'
    layers spent 18 % of their time in GELU and 10 % copying biases into outputs; this does ~1.2x
    the papers/s, vectors at cosine 0.99998 to theirs.

    ``of`` returns None where this does not apply (another architecture or activation, or oneDNN
    without bfloat16 kernels on this CPU): the model's own forward is used then."""

    def __init__(self, model) -> None:  # noqa: ANN001
        import torch

        config = model.config
        w = {name: t.detach() for name, t in model.state_dict().items()}
        self.heads, self.eps = config.num_attention_heads, config.layer_norm_eps
        self.words = w["embeddings.word_embeddings.weight"]
        self.positions = w["embeddings.position_embeddings.weight"]
        self.types = w["embeddings.token_type_embeddings.weight"]
        self.norm = w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]
        self.layers = []
        for k in range(config.num_hidden_layers):
            layer = {name.split(".", 3)[3]: t for name, t in w.items() if name.startswith(f"encoder.layer.{k}.")}
            qkv = [f"attention.self.{p}" for p in ("query", "key", "value")]
            self.layers.append(
                (
                    torch.cat([layer[f"{p}.weight"] for p in qkv]),  # one product for all three
                    torch.cat([layer[f"{p}.bias"] for p in qkv]),
                    *(layer[f"{part}.{t}"] for part in _LAYER_PARTS for t in ("weight", "bias")),
                )
            )

    @classmethod
    def of(cls, model) -> _FusedBert | None:  # noqa: ANN001
        import torch

        c = model.config
        if not (
            c.model_type == "bert"
            and c.hidden_act == "gelu"  # the exact (erf) GELU, which oneDNN's "gelu" with algorithm "none" is
            and getattr(c, "position_embedding_type", "absolute") == "absolute"
            and c.hidden_size % c.num_attention_heads == 0
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ):
            return None
        return cls(model)

    def __call__(self, ids, mask, types):  # noqa: ANN001, ANN204
        """``last_hidden_state`` of the model for this batch (token ids, attention mask, token types)."""
        import torch
        from torch.nn.functional import layer_norm, scaled_dot_product_attention

        linear = torch.ops.mkldnn._linear_pointwise
        batch, length = ids.shape
        x = self.words[ids] + self.types[types]  # in transformers' order: the sums round alike
        x += self.positions[:length]
        width = x.shape[-1]
        x = layer_norm(x, (width,), *self.norm, self.eps)
        # Padding is masked as keys only, as transformers does; none at all in most length-sorted batches.
        keys = None if bool(mask.all()) else mask.bool()[:, None, None, :]
        split = (batch, length, 3, self.heads, width // self.heads)
        for qkv_w, qkv_b, o_w, o_b, n1_w, n1_b, up_w, up_b, down_w, down_b, n2_w, n2_b in self.layers:
            q, k, v = linear(x, qkv_w, qkv_b, "none", [], "").view(split).permute(2, 0, 3, 1, 4)
            context = scaled_dot_product_attention(q, k, v, attn_mask=keys).transpose(1, 2).reshape(x.shape)
            x = layer_norm(linear(context, o_w, o_b, "none", [], "") + x, (width,), n1_w, n1_b, self.eps)
            inner = linear(x, up_w, up_b, "gelu", [], "none")
            x = layer_norm(linear(inner, down_w, down_b, "none", [], "") + x, (width,), n2_w, n2_b, self.eps)
        return x


def _mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' Pooling(mean) then Normalize, in numpy."""
    m = mask[:, :, None].astype(np.float32)
    pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def resolve_backend(backend: str) -> str:
    """``auto`` -> the fastest faithful path on this CPU: ``bf16`` where it is native, else ``onnx``."""
    if backend == "auto":
        return "bf16" if native_bf16() else "onnx"
    return backend


def make_embedder(settings: Settings, *, progress: bool = False) -> Embedder | OnnxEmbedder | Bf16Embedder:
    """The embedder ``settings.embed_backend`` names: every command that embeds takes it from here,
    so profile topics and papers always come from the same model (``progress``: torch's bar)."""
    backend = resolve_backend(settings.embed_backend)
    if backend == "onnx":
        return OnnxEmbedder(settings.model_path, cache_dir=settings.model_cache_dir)
    if backend == "bf16":
        return Bf16Embedder(settings.model_path)
    return Embedder(settings.model_path, settings.embed_batch_size, progress=progress)
