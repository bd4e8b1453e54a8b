"""Search pane, driven with Pilot on the real app over a fresh embedded database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.conftest import SHARED, requires_shared
from tests.test_tui_support import notifications, settle, tui_app, wait_until

DNS_NOTE = """# FreeIPA install fails on DNS

## Symptom
ipa-server-install stops with "DNS check failed: the host name does not resolve".

## Fix
Add the host to /etc/hosts and point resolv.conf at the IdM server, then rerun the install.
"""
ADR = """# ADR-0049: Multi-agent memory

## Decision
Agents share one PostgreSQL memory with pgvector; the Manager delegates to the Developer.
"""
GUIDE = """# VyOS router guide

## Interfaces
Configure eth0 with a static address and commit; DNS forwarding serves the lab network.
"""
DAG = """from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG("freeipa_deploy") as dag:
    BashOperator(task_id="install_dns", bash_command="ipa-server-install --setup-dns")
"""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(workbench: Any) -> Any:
    rag = workbench.rag
    await rag.ingest_text(DNS_NOTE, source_key="notes/lab/dns.md", doc_type="troubleshooting",
                          metadata={"site": "lab"})  # fmt: skip
    await rag.ingest_text(ADR, source_key="adrs/adr-0049.md", doc_type="adr",
                          metadata={"site": "hq"})  # fmt: skip
    await rag.ingest_text(GUIDE, source_key="guides/vyos.md", doc_type="guide")
    await rag.ingest_text(DAG, source_key="dags/freeipa_deploy.py", doc_type="dag",
                          source_path="dags/freeipa_deploy.py")  # fmt: skip
    return workbench


async def search(pilot: Any, query: str, **filters: str) -> Any:
    screen = pilot.app.screen
    for field, value in filters.items():
        screen.query_one(f"#{field}").value = value
    screen.query_one("#query").focus()
    screen.query_one("#query").value = ""
    await pilot.press(*query, "enter")
    await settle(pilot)
    return screen


async def test_search_shows_seeded_results_and_filters_them(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        await settle(pilot)
        screen = await search(pilot, "DNS check failed during install")
        assert app.current_mode == "search"
        table = screen.query_one("#results")
        assert table.row_count >= 3
        assert screen.hits[0].source_key == "notes/lab/dns.md"
        title = str(screen.query_one("#preview-title").render())
        assert "FreeIPA install fails on DNS" in title
        assert "similarity" in str(screen.query_one("#preview-meta").render())

        screen = await search(pilot, "DNS", **{"doc-types": "adr, guide"})
        assert screen.hits and {h.doc_type for h in screen.hits} <= {"adr", "guide"}

        screen = await search(pilot, "DNS", **{"doc-types": "", "source": "dags/"})
        assert {h.source_key for h in screen.hits} == {"dags/freeipa_deploy.py"}

        screen = await search(pilot, "memory", **{"source": "", "meta": "site=hq"})
        assert {h.source_key for h in screen.hits} == {"adrs/adr-0049.md"}

        screen = await search(pilot, "memory", **{"meta": "site=nowhere"})
        assert screen.hits == [] and table.row_count == 0
        assert "No results" in str(screen.query_one("#preview-meta").render())
        assert app.is_running


async def test_preview_as_code_open_document_and_copy(db_url: str, seeded: Any) -> None:
    from screens.documents import DocumentScreen

    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        await settle(pilot)
        screen = await search(pilot, "BashOperator install_dns", **{"doc-types": "dag"})
        assert screen.hits[0].doc_type == "dag"
        assert screen.query_one("#doc-code").display and not screen.query_one("#doc-md").display
        assert app.focused is screen.query_one("#query")  # results never take the focus

        await pilot.press("escape", "c")  # Esc leaves the box for the results
        assert app.clipboard == screen.hits[0].content
        assert any("Copied" in m for m in notifications(app))

        await pilot.press("o")
        await settle(pilot)
        assert isinstance(app.screen, DocumentScreen)
        assert "freeipa_deploy" in str(app.screen.query_one("#doc-meta").render())
        await pilot.press("c")
        assert app.clipboard == DAG
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_document_list_and_delete(db_url: str, seeded: Any) -> None:
    from screens.documents import DocumentsScreen

    extra = await seeded.rag.ingest_text("# Scratch\n\nthrowaway text\n", source_key="zz/tmp.md")
    before = len(await seeded.rag.list_documents())
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        await settle(pilot)
        app.screen.query_one("#results").focus()
        await pilot.press("d")
        await settle(pilot)
        docs = app.screen
        assert isinstance(docs, DocumentsScreen)
        table = docs.query_one("#docs-table")
        assert table.row_count == before
        table.move_cursor(row=[d.source_key for d in docs.documents].index("zz/tmp.md"))
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert table.row_count == before - 1
        assert any("Deleted Scratch" in m for m in notifications(app))
        await pilot.press("escape")
    keys = {d.source_key for d in await seeded.rag.list_documents()}
    assert "zz/tmp.md" not in keys and extra.document_id


async def test_ingest_a_path_with_progress(db_url: str, seeded: Any) -> None:
    from core.samples import sample_docs_dir

    samples = sample_docs_dir()
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        await settle(pilot)
        app.screen.query_one("#results").focus()
        await pilot.press("i")
        await pilot.pause()
        form = app.screen
        form.query_one("#field-path").value = str(samples)
        form.query_one("#field-metadata").value = "origin=tui"
        await pilot.press("ctrl+s")
        await pilot.pause()
        pane = app.screen
        assert pane.ingest_worker is not None
        await settle(pilot)
        assert not pane.query_one("#ingest-row").has_class("-running")
        assert pane.ingest_seen == (4, 4)
        assert any("4 added" in m for m in notifications(app))
    docs = await seeded.rag.list_documents(source_prefix=str(samples))
    assert len(docs) == 4 and all(d.metadata == {"origin": "tui"} for d in docs)


def corpus_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@requires_shared
async def test_ingest_can_be_cancelled_with_escape(db_url: str, seeded: Any) -> None:
    from textual.worker import WorkerState

    corpus = SHARED / "corpus" / "qubinode-docs"
    files = corpus_files(corpus)
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        await settle(pilot)
        pane = app.screen
        worker = pane.start_ingest(str(corpus))
        assert pane.query_one("#ingest-row").has_class("-running")
        await wait_until(pilot, lambda: pane.ingest_seen[0] >= 1)
        bar = pane.query_one("#ingest-bar")
        assert bar.total == len(files) and bar.progress >= 1
        assert "Esc cancel" in str(pane.query_one("#ingest-label").render())
        pane.query_one("#results").focus()
        await pilot.press("escape")
        await settle(pilot)
        assert worker.state == WorkerState.CANCELLED
        assert not pane.query_one("#ingest-row").has_class("-running")
        assert any("Ingest cancelled" in m for m in notifications(app))
        assert app.is_running
    written = await seeded.rag.list_documents(source_prefix=str(corpus), limit=1000)
    assert len(written) < len(files)
    for doc in written:  # whatever was written is whole: every chunk of it is there
        detail = await seeded.rag.get_document(doc.id)
        assert len(detail.chunks) == doc.chunk_count > 0


async def test_invalid_filter_shows_error_modal_and_app_stays_up(db_url: str, seeded: Any) -> None:
    from screens.widgets import ErrorModal

    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        await settle(pilot)
        await search(pilot, "dns", **{"doc-types": "nonsense"})
        assert isinstance(app.screen, ErrorModal)
        body = app.screen.query_one("#error-text").text
        assert "unknown doc type 'nonsense'" in body
        await pilot.press("c")
        assert "InputError" in app.clipboard and "nonsense" in app.clipboard
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running and app.current_mode == "search"
        screen = await search(pilot, "dns", **{"doc-types": ""})
        assert screen.hits
