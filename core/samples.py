"""Sample documents shipped with the package, for `qwb demo` and first-run tries."""

from __future__ import annotations

from pathlib import Path


def sample_docs_dir() -> Path:
    return Path(__file__).resolve().parent / "data" / "samples"
