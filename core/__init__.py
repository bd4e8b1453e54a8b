"""Qubinode Workbench engine: everything front ends share. Never imports textual, rich or mcp."""
