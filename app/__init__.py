"""Entry points: CLI, Textual app, MCP server, HTTP receiver."""
