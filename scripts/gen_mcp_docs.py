"""Write docs/mcp.md from the registered MCP tools' schemas (run after adding or changing a tool).

.venv/bin/python scripts/gen_mcp_docs.py          # rewrite docs/mcp.md
.venv/bin/python scripts/gen_mcp_docs.py --check  # exit 1 if docs/mcp.md is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.mcp_tools.docs import render_markdown  # noqa: E402

TARGET = REPO / "docs" / "mcp.md"


def main(argv: list[str]) -> int:
    text = render_markdown()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date; run scripts/gen_mcp_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
