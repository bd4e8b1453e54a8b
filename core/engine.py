"""The Workbench: the one façade every front end (TUI, MCP, CLI, HTTP) talks to."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.agents.service import AgentService
from core.config import Config, load_config
from core.db import Database
from core.decisions import DecisionLog
from core.embeddings import Embedder, get_embedder
from core.lineage.service import LineageService
from core.providers import ProviderRegistry
from core.rag import RagStore
from core.search import search_settings
from core.text_cache import TextCache
from core.troubleshooting import TroubleshootingStore

log = logging.getLogger(__name__)


def text_cache(config: Config, db: Database, *, background: bool) -> TextCache | None:
    """The text cache the configuration asks for (`rag.text_cache*`), or None when it is off."""
    if not config.get("rag.text_cache"):
        return None
    root = config.get("rag.text_cache_dir")
    return TextCache(
        db,
        Path(root).expanduser() if root else None,
        depth=config.get("rag.text_cache_depth"),
        min_filtered=config.get("rag.text_cache_min_filtered"),
        background=background,
    )


class Workbench:
    """Owns the database pool and the embedder; each capability is a service attribute."""

    config: Config
    db: Database
    embedder: Embedder
    rag: RagStore

    def __init__(
        self, config: Config, db: Database, embedder: Embedder, *, long_running: bool = False
    ) -> None:
        self.config = config
        self.db = db
        self.embedder = embedder
        self.text_cache = text_cache(config, db, background=long_running)
        self.rag = RagStore(
            db,
            embedder,
            max_file_bytes=config.get("rag.max_file_bytes"),
            chunk_tokens=config.get("rag.chunk_tokens"),
            overlap_tokens=config.get("rag.chunk_overlap_tokens"),
            search_settings=search_settings(config),
            text_cache=self.text_cache,
        )

    @classmethod
    async def open(
        cls, config: Config | None = None, *, restart_database: bool = False
    ) -> Workbench:
        """Open the store. `restart_database`: a long-running front end (MCP, TUI, serve) that
        restarts the embedded database itself when it stops (see core/db.py)."""
        config = config or load_config()
        embedder = get_embedder(config)
        db = await Database.connect(config, restart_embedded=restart_database)
        try:
            # A front end that restarts the database runs long: it keeps the text cache current.
            wb = cls(config, db, embedder, long_running=restart_database)
            await wb.rag.apply_text_params()
            await wb._attach_services()
        except BaseException:
            await db.close()
            raise
        return wb

    async def _attach_services(self) -> None:
        """Each capability adds itself here (one line each)."""
        self.lineage = LineageService(self.db, self.config)
        self.troubleshooting = TroubleshootingStore(self.db, self.embedder)
        self.decisions = DecisionLog(self.db)
        self.providers = await ProviderRegistry.open(self.db)
        self.agents = AgentService(self)

    async def close(self) -> None:
        if self.text_cache is not None:
            await self.text_cache.close()
        await self.db.close()

    async def __aenter__(self) -> Workbench:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
