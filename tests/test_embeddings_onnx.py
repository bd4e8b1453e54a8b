"""The ONNX Runtime embedder: same vectors as sentence-transformers/torch on real corpus text,
exported once and reused, safe when two processes start at once, and a cold `qwb search` that
never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import QWB, REPO, SHARED, cli_env, make_config, requires_shared

CORPUS = SHARED / "corpus" / "qubinode-docs"
SLOW_MODULES = ("torch", "transformers", "sentence_transformers", "litellm")


def corpus_texts() -> tuple[list[str], list[str]]:
    """(chunks as qwb embeds them, whole documents) from the real corpus."""
    from core.chunking import chunk_text

    docs = [p.read_text(encoding="utf-8") for p in sorted(CORPUS.rglob("*.md"))[:40]]
    chunks = [c.embedding_text() for d in docs[:12] for c in chunk_text(d, name="doc.md")]
    return chunks[::3], docs[::2]


@requires_shared
async def test_onnx_and_torch_give_the_same_vectors_on_real_text() -> None:
    from core.embeddings import LocalEmbedder
    from core.tokens import count_tokens

    chunks, docs = corpus_texts()
    texts = chunks + docs
    assert sum(count_tokens(d) > 256 for d in docs) >= 5  # truncation is exercised
    onnx = LocalEmbedder(backend="onnx", batch_size=16)
    torch = LocalEmbedder(backend="torch", batch_size=16)
    a = await onnx.embed_documents(texts)
    b = await torch.embed_documents(texts)
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosines.min() >= 0.9999, (cosines.min(), texts[int(cosines.argmin())][:80])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # One text at a time (the query path: no padding) agrees with the padded batches.
    single = np.stack([await onnx.embed_query(t) for t in texts[:5] + docs[:3]])
    batched = np.concatenate([a[:5], a[len(chunks) : len(chunks) + 3]])
    assert ((single * batched).sum(axis=1)).min() >= 0.99999
    assert onnx.model_name == torch.model_name  # one model id: stores need no reindex


async def test_questions_have_a_session_of_their_own_that_never_waits_for_a_batch() -> None:
    import asyncio

    from core.embeddings import LocalEmbedder

    embedder = LocalEmbedder(backend="onnx", cache_size=0)
    assert not embedder.loaded
    await embedder.warm_up()  # what a search needs: the question session only
    assert embedder.loaded and embedder._encoder is None
    question = "which playbook configures the kvm host bridge?"
    asked = await embedder.embed_query(question)
    stored = (await embedder.embed_documents([question]))[0]
    assert embedder._encoder is not embedder._query_encoder
    assert float(asked @ stored) >= 0.99999  # the same model, the same vector
    # Its threads do not spin between ops (they would take the CPU the database side needs);
    # the documents' session keeps ONNX Runtime's default.
    spin = "session.intra_op.allow_spinning"
    assert (
        embedder._query_encoder.session.get_session_options().get_session_config_entry(spin) == "0"
    )
    with pytest.raises(RuntimeError, match="does not have configuration"):  # the default
        embedder._encoder.session.get_session_options().get_session_config_entry(spin)
    # A question while a batch holds the documents' session: answered, not queued behind it.
    with embedder._encode_lock:
        again = await asyncio.wait_for(embedder.embed_query(question + " now"), 120)
    assert again.shape == (384,)


def _run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


EXPORT_AND_EMBED = """
import json, sys
from pathlib import Path
from core.embeddings import LocalEmbedder
embedder = LocalEmbedder(onnx_dir=Path(sys.argv[1]))
vector = embedder.encode_sync(["how do I rotate the FreeIPA certificates?"])[0]
print(json.dumps({
    "exported": embedder.onnx_model.exported,
    "path": str(embedder.onnx_model.path),
    "vector": [round(float(x), 6) for x in vector[:8]],
    "slow_modules": sorted(m for m in SLOW if m in sys.modules),
}))
""".replace("SLOW", repr(SLOW_MODULES))


def test_concurrent_first_use_exports_once_and_later_starts_reuse_it(tmp_path: Path) -> None:
    """Two processes start on an empty cache (with a half-written leftover in the way): one
    exports, the other waits for it; a third finds the model and never imports torch."""
    from core.onnx_export import model_dir_name

    root = tmp_path / "models"
    leftover = root / model_dir_name()
    leftover.mkdir(parents=True)
    (leftover / "model.onnx").write_bytes(b"half a file")  # no manifest: not a model
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", EXPORT_AND_EMBED, str(root)]
    procs = [
        subprocess.Popen(
            command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )  # fmt: skip
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["exported"] for r in results) == [False, True]
    assert results[0]["path"] == results[1]["path"] == str(leftover)
    assert results[0]["vector"] == pytest.approx(results[1]["vector"], abs=1e-5)
    manifest = json.loads((leftover / "manifest.json").read_text())
    assert manifest["self_check_min_cosine"] >= 0.9999
    assert not [p for p in root.iterdir() if p.name.startswith(f".{model_dir_name()}.")
                and p.is_dir()]  # fmt: skip  # no temporary or stale directories left
    stamp = {p.name: p.stat().st_mtime_ns for p in leftover.iterdir()}

    third = _run(command, env)
    assert third["exported"] is False
    assert third["slow_modules"] == []  # loading an exported model needs no torch
    assert third["vector"] == pytest.approx(results[0]["vector"], abs=1e-5)
    assert {p.name: p.stat().st_mtime_ns for p in leftover.iterdir()} == stamp


def test_an_unwritable_model_dir_fails_with_one_line_naming_the_fixes(tmp_path: Path) -> None:
    from core.embeddings import LocalEmbedder
    from core.onnx_export import OnnxExportError

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    embedder = LocalEmbedder(onnx_dir=blocker / "models")
    with pytest.raises(OnnxExportError) as info:
        embedder.encode_sync(["x"])
    message = str(info.value)
    assert "\n" not in message
    assert "embedding.onnx_dir" in message and "embedding.backend = 'torch'" in message


def test_backend_setting_is_validated_and_listed() -> None:
    from core.embeddings import get_embedder
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="embedding.backend must be one of onnx, torch"):
        get_embedder(make_config(embedding__backend="tensorflow"))
    keys = {key for key, _, _ in make_config().items()}
    assert {"embedding.backend", "embedding.threads", "embedding.onnx_dir"} <= keys


@pytest.fixture(scope="module")
def small_store(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    note = tmp_path_factory.mktemp("notes") / "ipa-certs.md"
    note.write_text(
        "# FreeIPA certificates\n\nRotate the FreeIPA certificates with ipa-cert-fix, "
        "then restart httpd on the bastion.\n"
    )
    done = subprocess.run(
        [*QWB, "ingest", "--no-progress", str(note)],
        cwd=REPO, env=cli_env(db_url), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return db_url


COLD_SEARCH = """
import json, sys
from app.cli import main
try:
    main(["search", "how do I fix FreeIPA certificates", "--json"])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "slow_modules": sorted(m for m in SLOW if m in sys.modules)}))
""".replace("SLOW", repr(SLOW_MODULES))


def test_a_cold_qwb_search_never_imports_torch(small_store: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", COLD_SEARCH], cwd=REPO, env=cli_env(small_store),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["code"] in (0, None), done.stderr
    assert result["slow_modules"] == []
    assert "ipa-certs.md" in "\n".join(lines[:-1])  # the search really ran and found it
