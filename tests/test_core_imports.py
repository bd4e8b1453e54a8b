"""core/ never imports a front end (DESIGN §1), and `qwb --help` imports nothing heavy."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import core
from tests.conftest import REPO

FORBIDDEN = ("textual", "mcp", "rich", "app", "screens")
HEAVY = ("torch", "sentence_transformers", "litellm", "textual", "mcp", "transformers")


def core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(core.__path__, "core.")]


def test_core_modules_import_no_front_end() -> None:
    modules = core_modules()
    assert "core.rag" in modules and "core.db" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == ""


def test_cli_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from app.cli import main\n"
        "try:\n"
        "    main(['--help'], prog_name='qwb')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('LOADED=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert "Usage: qwb" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "LOADED="
