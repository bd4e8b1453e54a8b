"""Lineage pane over the OpenLineage fixture events (Airflow 3.3 / provider 2.20), imported
through the real lineage service into a fresh embedded database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.conftest import SHARED, requires_shared
from tests.test_tui_support import notifications, settle, tui_app

pytestmark = requires_shared
FIXTURES = SHARED / "fixtures" / "openlineage"


def fixture_events() -> list[bytes]:
    return [p.read_bytes() for p in sorted(Path(FIXTURES).glob("*.json"))]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(workbench: Any) -> Any:
    for body in fixture_events():
        result = await workbench.lineage.ingest_event(body, source="test")
        assert result.status == "stored"
    return workbench


async def open_pane(pilot: Any) -> Any:
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)
    return pilot.app.screen


async def pick(pilot: Any, text: str) -> Any:
    pane = pilot.app.screen
    pane.query_one("#pick").focus()
    pane.query_one("#pick").value = ""
    await pilot.press(*text, "enter")
    await settle(pilot)
    return pane


def tree_labels(pane: Any) -> list[str]:
    from screens.lineage_graph import iter_labels

    return list(iter_labels(pane.query_one("#tree")))


async def test_catalog_lists_the_fixture_graph_with_fuzzy_filter(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        keys = {e.key for e in pane.catalog}
        assert {
            "dag:wb_demo",
            "job:workbench:wb_demo.load",
            "job:workbench:wb_demo.transform",
            "dataset:file:/srv/pipeline/data/clean.csv",
            "dataset:file:/srv/pipeline/data/raw.csv",
        } <= keys
        assert pane.catalog[0].key == "job:workbench:wb_demo.load" and pane.catalog[0].failing
        assert "failing" in str(pane.query_one("#lineage-info").render())

        pane.query_one("#pick").focus()
        await pilot.press(*"clean")
        await pilot.pause()
        assert pane.shown[0].key == "dataset:file:/srv/pipeline/data/clean.csv"
        assert pane.query_one("#catalog").option_count == len(pane.shown) < len(pane.catalog)


async def test_job_view_shows_graph_states_error_and_git(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        pane = await open_pane(pilot)
        await pick(pilot, "wb_demo.load")
        assert pane.current.key == "job:workbench:wb_demo.load"
        assert pane.query_one("#views").current == "tree"  # 80 columns: the tree fallback
        labels = tree_labels(pane)
        # The fixtures' latest DAG run is a later, unfinished one (only transform's START came):
        # load has no state there yet; its own latest run (the run before) failed.
        assert "wb_demo.load: load" in labels
        assert "in the latest DAG run: **not run yet**" in pane.detail_markdown
        assert "◆ clean.csv +1" in labels and "notify +1" in labels
        detail = pane.detail_markdown
        assert "7873fd00534d" in detail and "feature/lineage" in detail
        assert "simulated load failure" in detail and "latest run **FAIL**" in detail

        pane.query_one("#catalog").focus()
        await pilot.press("d")
        await settle(pilot)
        labels = tree_labels(pane)
        assert "notify +1" in labels and "◆ clean.csv +1" not in labels
        assert pane.direction == "down"

        await pilot.press("a", "minus")
        await settle(pilot)
        assert pane.depth == 4 and "depth 4" in str(pane.query_one("#view-title").render())


async def test_dag_view_and_blast_radius_with_hop_counts(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(120, 36), notifications=True) as pilot:
        pane = await open_pane(pilot)
        await pick(pilot, "DAG wb_demo")
        from screens.text import md_inline

        assert pane.current.key == "dag:wb_demo"
        older = md_inline("(older run) simulated load failure")  # Markdown-escaped cell
        assert f"| load | — | {older} |" in pane.detail_markdown
        assert "| transform | START |" in pane.detail_markdown  # the latest DAG run is going
        assert pane.query_one("#views").current == "graph"  # wide enough for the drawn graph
        nodes = set(pane.model.nodes)
        assert {"job:workbench:wb_demo.load", "dataset:file:/srv/pipeline/data/clean.csv"} <= nodes

        pane.query_one("#catalog").focus()
        await pilot.press("b")
        await settle(pilot)
        assert pane.blast
        radius = await seeded.lineage.get_failure_blast_radius("wb_demo")
        if radius.seeds_failed:
            assert f"severity **{radius.severity}**" in pane.detail_markdown
        else:  # the latest DAG run is still going: nothing to judge yet (issue 14 friction)
            assert "**nothing has failed**" in pane.detail_markdown
            assert f"if it failed: severity {radius.severity}" in pane.detail_markdown
        for node in (*radius.jobs, *radius.datasets):
            label = node.task_id or Path(node.name).name
            assert f"| {node.hops} | {node.type} {label} | {node.impact} |" in pane.detail_markdown
        assert "simulated load failure" in pane.detail_markdown
        # no task failed in the latest (unfinished) DAG run: measured from all its tasks
        assert not radius.seeds_failed and pane.model.center == "job:workbench:wb_demo.extract"
        impacted = [n for n in pane.model.nodes.values() if n.impact]
        assert impacted and all(n.hops and n.hops >= 1 for n in impacted)
        graph = pane.query_one("#graph")
        assert set(graph._console_graph.node_buffers) == set(pane.model.nodes)

        await pilot.press("g")
        await pilot.pause()
        assert pane.query_one("#views").current == "tree"
        assert any("+1" in label for label in tree_labels(pane))
        await pilot.press("c")
        assert app.clipboard == pane.detail_markdown


async def test_blast_radius_needs_a_dag_or_task(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        await pick(pilot, "raw.csv")
        assert pane.current.kind == "dataset"
        assert "status" in pane.detail_markdown
        pane.query_one("#catalog").focus()
        await pilot.press("b")
        await pilot.pause()
        assert not pane.blast
        assert any("Pick a DAG or a task" in m for m in notifications(app))


async def test_pick_a_task_known_only_from_a_run_facet(db_url: str, seeded: Any) -> None:
    # notify sent no event: load's airflow run facet names it as a downstream task
    app = tui_app(db_url)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        pane = await open_pane(pilot)
        keys = [e.key for e in pane.catalog]
        assert "job:workbench:wb_demo.notify" in keys and "job:workbench:wb_demo.extract" in keys
        await pick(pilot, "notify")
        assert pane.current.key == "job:workbench:wb_demo.notify"
        assert "job wb_demo.notify" in str(pane.query_one("#view-title").render())
        labels = tree_labels(pane)
        assert any(label.startswith("wb_demo.notify") for label in labels)
        assert "load +1" in labels  # its upstream task, through the task dependency
        assert "### job wb_demo.notify" in pane.detail_markdown
        assert "task `notify`" in pane.detail_markdown and "no runs yet" in pane.detail_markdown


async def test_typing_searches_the_backend_when_the_catalog_is_cut_short(
    db_url: str, seeded: Any
) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        pane.catalog_limit = 2  # only the two failing jobs get listed
        pane.action_refresh()
        await settle(pilot)
        assert not pane.catalog_complete
        assert "type to search all" in str(pane.query_one("#lineage-info").render())
        assert "job:workbench:wb_demo.notify" not in {e.key for e in pane.catalog}
        await pick(pilot, "job notify")  # Enter may come before the search answers
        assert pane.current.key == "job:workbench:wb_demo.notify"
        assert "job:workbench:wb_demo.notify" in {e.key for e in pane.catalog}
        assert "load +1" in tree_labels(pane)
