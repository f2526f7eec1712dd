"""The ONNX model cache (consumers/fast_embed.py): where it lives, and that exporters running at
once neither corrupt it nor repeat each other's work.

The three export stages are faked here (each writes its file slowly, in two halves); the real
export, ~20 s, runs once per session in tests/integration/test_fast_embed.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from consumers import fast_embed
from paperwire.settings import Settings, default_model_cache_dir

HALF = 4096


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 12, "hidden_size": 384}))
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    runs: Counter[str] = Counter()

    def stage(name: str):  # noqa: ANN202
        def write(_src: object, out: Path, *_: object) -> None:
            runs[name] += 1
            with Path(out).open("wb") as fh:
                fh.write(name.encode()[:1] * HALF)
                fh.flush()
                time.sleep(0.15)  # a reader looking now would see half a file, were it in place
                fh.write(name.encode()[:1] * HALF)

        return write

    monkeypatch.setattr(fast_embed, "_export_fp32", stage("fp32"))
    monkeypatch.setattr(fast_embed, "_optimize", stage("fused"))
    monkeypatch.setattr(fast_embed, "_quantize", stage("int8"))
    return runs


def test_exporters_at_once_export_once_and_readers_never_see_half_a_file(
    model: Path, stages: Counter[str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    results: list[Path] = []
    torn: list[int] = []
    done = threading.Event()

    def export() -> None:
        results.append(fast_embed.onnx_model_file(model, cache))

    def watch() -> None:  # what a process starting up meanwhile would load
        while not done.is_set():
            for f in cache.rglob("model*.onnx"):
                size = f.stat().st_size
                if size != 2 * HALF:
                    torn.append(size)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    exporters = [threading.Thread(target=export) for _ in range(3)]
    for t in exporters:
        t.start()
    for t in exporters:
        t.join(timeout=30)
    done.set()
    watcher.join(timeout=30)

    assert len(results) == 3 and len(set(results)) == 1
    target = results[0]
    assert target.name == f"model.int8{fast_embed._GRAPH}.onnx" and target.read_bytes() == b"i" * (2 * HALF)
    assert stages == {"fp32": 1, "fused": 1, "int8": 1}  # the others waited, then found the files
    assert not torn
    assert not list(cache.rglob("*.tmp"))


def test_a_killed_exporters_leftovers_are_cleared(model: Path, stages: Counter[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = fast_embed.onnx_model_file(model, cache, quantize=False)  # fp32 and fused only
    assert stages == {"fp32": 1, "fused": 1}
    leftover = first.parent / "tmpk1lled.tmp"  # what a SIGKILL mid-write leaves behind
    leftover.write_bytes(b"half")
    target = fast_embed.onnx_model_file(model, cache)
    assert stages == {"fp32": 1, "fused": 1, "int8": 1}  # only the missing stage ran
    assert target.parent == first.parent
    assert not leftover.exists()


def test_a_finished_cache_is_only_read(model: Path, stages: Counter[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    target = fast_embed.onnx_model_file(model, cache)
    (target.parent / ".lock").unlink()
    stamp = target.stat().st_mtime_ns
    assert fast_embed.onnx_model_file(model, cache) == target
    assert stages == {"fp32": 1, "fused": 1, "int8": 1}
    assert target.stat().st_mtime_ns == stamp
    assert not (target.parent / ".lock").exists()  # no lock taken: a read-only cache works too


def test_a_changed_model_gets_its_own_export(model: Path, stages: Counter[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = fast_embed.onnx_model_file(model, cache)
    (model / "config.json").write_text(json.dumps({"num_attention_heads": 12, "hidden_size": 384, "x": 1}))
    after = fast_embed.onnx_model_file(model, cache)
    assert after.parent != before.parent and after.parent.parent == cache
    assert stages["int8"] == 2


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PAPERWIRE_MODEL_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_model_cache_dir() == tmp_path / "xdg" / "paperwire" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: ignored
    assert default_model_cache_dir() == tmp_path / "home" / ".cache" / "paperwire" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert Settings(_env_file=None).model_cache_dir == tmp_path / "home" / ".cache" / "paperwire" / "models"
    monkeypatch.setenv("PAPERWIRE_MODEL_CACHE_DIR", str(tmp_path / "shared"))
    assert Settings(_env_file=None).model_cache_dir == tmp_path / "shared"
