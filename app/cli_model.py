"""CLI: `qwb model status|export`: the local embedding model and its ONNX export."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from app.cli_common import console, emit, fail, get_config, json_option
from core.config import Config
from core.errors import QwbError


def _onnx_root(config: Config) -> Path | None:
    configured = config.get("embedding.onnx_dir")
    return Path(configured).expanduser() if configured else None


def _status(config: Config) -> dict[str, Any]:
    from core.embeddings import LOCAL_MODEL_NAME
    from core.onnx_export import default_cache_root, find_onnx_model, model_dir_name

    root = _onnx_root(config) or default_cache_root()
    found = find_onnx_model(root)
    manifest = found.manifest if found else {}
    return {
        "provider": config.get("embedding.provider"),
        "backend": config.get("embedding.backend"),
        "model": LOCAL_MODEL_NAME,
        "onnx_dir": str(root / model_dir_name()),
        "onnx_exported": found is not None,
        "exported_at": manifest.get("exported_at"),
        "self_check_min_cosine": manifest.get("self_check_min_cosine"),
        "fused": manifest.get("fused"),
    }


@click.group("model")
def model_group() -> None:
    """The local embedding model (all-MiniLM-L6-v2) and its ONNX export."""


@model_group.command("status")
@json_option
def model_status(as_json: bool) -> None:
    """Which runtime embeds, and whether the ONNX model has been exported."""
    status = _status(get_config())

    def render(s: dict[str, Any]) -> None:
        out = console()
        out.print(f"[bold]{s['model']}[/] provider {s['provider']}, backend {s['backend']}")
        if s["onnx_exported"]:
            out.print(
                f"  ONNX model: {s['onnx_dir']} (exported {s['exported_at']}, "
                f"min cosine vs torch {s['self_check_min_cosine']:.7f})"
            )
        else:
            out.print(f"  ONNX model: not exported yet ({s['onnx_dir']}); run 'qwb model export'")

    emit(status, as_json, render)


@model_group.command("export")
@json_option
def model_export(as_json: bool) -> None:
    """Export the packaged weights to ONNX (once; later runs find it and return at once).

    ./setup.sh runs this. It needs torch (installed by setup.sh) but no network.
    """
    from core.onnx_export import ensure_onnx_model

    config = get_config()
    started = time.perf_counter()
    try:
        model = ensure_onnx_model(_onnx_root(config))
    except QwbError as exc:
        fail(str(exc))
        raise  # unreachable
    result = {
        "path": str(model.path),
        "exported": model.exported,
        "seconds": round(time.perf_counter() - started, 2),
        "self_check_min_cosine": model.manifest.get("self_check_min_cosine"),
    }

    def render(r: dict[str, Any]) -> None:
        verb = "exported" if r["exported"] else "already exported"
        click.echo(f"{verb}: {r['path']} (min cosine vs torch {r['self_check_min_cosine']:.7f})")

    emit(result, as_json, render)
