"""The MCP server's tools, one module per capability. See app/mcp_server.py for how to add one.

A module listed in TOOL_MODULES registers its tools with `app.mcp_tools.registry.tool` when it
is imported. A module whose engine service does not exist yet may be listed: if importing it
fails with ImportError, its tools are left out and the reason is logged.
"""

from __future__ import annotations

import importlib
import logging

from app.mcp_tools.registry import TOOLS, ToolSpec

log = logging.getLogger(__name__)

TOOL_MODULES: tuple[str, ...] = (
    "app.mcp_tools.rag",
    "app.mcp_tools.memory",
    "app.mcp_tools.lineage",
    "app.mcp_tools.agents",
)

_skipped: dict[str, str] = {}


def load_tools() -> dict[str, ToolSpec]:
    """Import every tool module (once) and return the registry, name -> spec."""
    for module in TOOL_MODULES:
        if module in _skipped:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (module.startswith(exc.name) or exc.name.startswith("core.")):
                _skipped[module] = str(exc)  # the module or its engine service is not there yet
                log.info("MCP tools of %s left out: %s", module, exc)
                continue
            raise
    return TOOLS


def skipped_modules() -> dict[str, str]:
    return dict(_skipped)
