"""Lineage pane: pick a DAG, job or dataset (fuzzy), see its graph up/downstream to a depth,
the blast radius of a failed task with hop counts, latest run states, errors and git SHA/branch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.fuzzy import Matcher
from textual.markup import escape
from textual.message import Message
from textual.widgets import ContentSwitcher, Input, Label, Markdown, OptionList, Tree
from textual.widgets.option_list import Option

from screens.base import PaneScreen
from screens.lineage_graph import (
    GraphModel,
    centre_on,
    fill_tree,
    focus_node,
    graph_widget,
    model_from_dag,
    model_from_graph,
    netext_data,
    short_name,
)
from screens.text import fenced, md_inline
from screens.widgets import BoxInput, copy_text, theme_style

DEFAULT_DEPTH = 5
MAX_DEPTH = 20
CATALOG_NODES = 1000  # the picker's list; past this, typing also searches the lineage backend
SEARCH_NODES = 200
GRAPH_MIN_WIDTH = 60  # narrower than this, the tree shows instead of the drawn graph
KIND_TAG = {"dag": "DAG ", "job": "job ", "dataset": "data"}


@dataclass(frozen=True)
class CatalogEntry:
    key: str  # dag:<dag_id> | job:<ns>:<name> | dataset:<ns>:<name>
    kind: str
    name: str
    failing: bool = False

    def prompt(self) -> str:
        mark = " ✗" if self.failing else ""
        name = short_name(self.name) if self.kind == "dataset" else self.name
        return f"{KIND_TAG[self.kind]} {name}{mark}"


def sort_catalog(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """Failing jobs first, then DAGs, jobs and datasets, each by name."""
    order = {"dag": 0, "job": 1, "dataset": 2}
    return sorted(entries, key=lambda e: (not e.failing, order[e.kind], e.name))


def catalog_from_nodes(nodes: Iterable[Any]) -> list[CatalogEntry]:
    """DAGs, jobs and datasets from `wb.lineage.list_nodes` (NodeSummary items).

    A job that is a DAG (job type DAG, or a DAG id without a task id) becomes a DAG entry; a task
    adds its DAG's entry too."""
    entries: dict[str, CatalogEntry] = {}
    for n in nodes:
        if n.kind == "dataset":
            entries.setdefault(n.node_id, CatalogEntry(n.node_id, "dataset", n.name))
            continue
        is_dag = n.job_type == "DAG" or bool(n.dag_id and not n.task_id)
        dag_id = n.dag_id or (n.name if is_dag else None)
        if dag_id:
            entries.setdefault(f"dag:{dag_id}", CatalogEntry(f"dag:{dag_id}", "dag", dag_id))
        if not is_dag:
            entries.setdefault(n.node_id, CatalogEntry(n.node_id, "job", n.name, n.failing))
    return sort_catalog(entries.values())


def search_terms(text: str) -> tuple[str | None, str]:
    """(kind, query) for `list_nodes` from what was typed: a leading "dag"/"job" keeps jobs,
    "data"/"dataset" datasets (the picker's prompts start with those words)."""
    first, _sep, rest = text.strip().partition(" ")
    kind = {"dag": "job", "job": "job", "data": "dataset", "dataset": "dataset"}.get(first.lower())
    return (kind, rest.strip()) if kind else (None, text.strip())


def fuzzy_filter(entries: list[CatalogEntry], text: str) -> list[CatalogEntry]:
    text = text.strip()
    if not text:
        return entries
    matcher = Matcher(text)
    scored = [(matcher.match(f"{e.kind} {e.name}"), e) for e in entries]
    return [e for score, e in sorted(scored, key=lambda p: -p[0]) if score > 0]


# ---------------------------------------------------------------------------- markdown
def _run(run: Any) -> str:
    if run is None:
        return "no runs yet"
    when = run.ended_at or run.started_at
    text = f"**{run.state}**" + (f" at {when:%Y-%m-%d %H:%M}" if when else "")
    return text


def _git(source: Any, sha: str | None = None, branch: str | None = None) -> str:
    sha = sha or (source.version if source else None)
    branch = branch or (source.branch if source else None)
    if not sha and not branch:
        return "git: unknown (no sourceCodeLocation facet)"
    where = (source.repo_url or source.url) if source else None
    repo = f" in {where}" if where else ""
    return f"git `{(sha or '?')[:12]}` on `{branch or '?'}`{repo}"


def _error_block(message: str | None) -> list[str]:
    """An error message verbatim (first 40 lines): paths and tracebacks keep every character."""
    if not message:
        return []
    lines = message.strip().splitlines()
    more = [f"_… {len(lines) - 40} more line(s); `c` copies everything_"] if len(lines) > 40 else []
    return ["", fenced("\n".join(lines[:40])), *more]


def job_markdown(job: Any) -> str:
    lines = [f"### job {job.name}", ""]
    where = f"DAG `{job.dag_id}`" + (f" task `{job.task_id}`" if job.task_id else "")
    lines.append(f"{where if job.dag_id else job.namespace} · latest run {_run(job.latest_run)}")
    if job.dag_run is not None:
        lines += ["", f"in the latest DAG run: **{job.current_state or 'not run yet'}**"]
    if job.note:
        lines += ["", f"_{job.note}_"]
    lines.append("")
    lines.append(_git(job.source, job.git_sha, job.git_branch))
    if job.latest_run and job.latest_run.error_message:
        lines += _error_block(job.latest_run.error_message)
    lines.append("")
    if job.inputs:
        lines.append("reads: " + ", ".join(f"`{short_name(i)}`" for i in job.inputs))
    if job.outputs:
        lines.append("writes: " + ", ".join(f"`{short_name(o)}`" for o in job.outputs))
    return "\n".join(lines)


EMPTY_LINEAGE = """### No lineage yet

Lineage comes from the OpenLineage events Airflow sends. Any one of:

- `qwb serve`, with Airflow's OpenLineage transport pointed at it
  (`qwb lineage facets` prints the settings)
- `qwb lineage import events.jsonl`, to import a file-transport log
- `lineage.marquez_url` in the config, to read a Marquez server

Then press `r` here."""


def merge_outside(model: GraphModel, part: GraphModel) -> None:
    """Add `part`'s nodes and edges to a DAG's model (its own tasks keep their data)."""
    for node in part.nodes.values():
        if node.node_id not in model.nodes:
            model.add(node)
        elif node.hops and model.nodes[node.node_id].hops not in (None, 0):
            model.add(node)
    for origin, destination, kind in part.edges:
        model.connect(origin, destination, kind)


def dag_markdown(dag: Any, direction: str = "both") -> str:
    lines = [f"### DAG {dag.dag_id}", "", f"last DAG run {_run(dag.dag_run)} · {_git(dag.source)}"]
    if dag.dag_run and dag.dag_run.error_message:
        lines += _error_block(dag.dag_run.error_message)
    lines += ["", "| task | state | error |", "|---|---|---|"]
    for t in dag.tasks:  # states judged against the latest DAG run
        run = t.latest_run
        error = " ".join((run.error_message or "").split())[:80] if run else ""
        error = f"(older run) {error}" if error and t.older_run else error
        name = md_inline(t.task_id or t.name)
        lines.append(f"| {name} | {t.current_state or '—'} | {md_inline(error)} |")
    ways = {"up": ("upstream",), "down": ("downstream",)}.get(direction, ("upstream", "downstream"))
    for title, links in (("upstream", dag.upstream_dags), ("downstream", dag.downstream_dags)):
        if title not in ways:
            continue
        names = ", ".join(f"{md_inline(link.dag_id)} (+{link.hops})" for link in links)
        lines += ["", f"{title} DAGs within {dag.depth} hops: {names or 'none'}"]
    return "\n".join(lines)


def dataset_markdown(ds: Any) -> str:
    lines = [f"### dataset {ds.name}", "", f"`{ds.node_id}` · status **{ds.status}**", ""]
    if getattr(ds, "status_reason", None):
        lines += [f"_{ds.status_reason}_", ""]
    for title, jobs in (("produced by", ds.producers), ("read by", ds.consumers)):
        names = ", ".join(f"{j.name} ({j.current_state or '—'})" for j in jobs)
        lines.append(f"{title}: {names or 'nothing known'}")
    return "\n".join(lines)


def blast_markdown(radius: Any) -> str:
    what = f"{radius.dag_id}" + (f".{radius.task_id}" if radius.task_id else "")
    reach = f"{radius.total} downstream node(s) · {len(radius.other_dags)} other DAG(s)"
    if radius.maybe_other_dag_reads:
        reach += f" · {len(radius.maybe_other_dag_reads)} more may be affected"
    if radius.seeds_failed:
        lines = [f"### blast radius of {what}", "", f"severity **{radius.severity}** · {reach}"]
        lines += ["", md_inline(radius.recommendation)]
    else:
        lines = [
            f"### what a failure of {what} would reach",
            "",
            f"**nothing has failed** · {reach} · if it failed: severity {radius.severity}",
        ]
    for seed in radius.seeds:
        run = seed.latest_run
        git = _git(seed.source, seed.git_sha, seed.git_branch)
        lines += ["", f"**{seed.task_id or seed.name}** {_run(run)} · {git}"]
        if run:
            lines += _error_block(run.error_message)
    lines += ["", "| hops | node | impact | state |", "|---|---|---|---|"]
    nodes = (*radius.jobs, *radius.datasets)
    for n in sorted(nodes, key=lambda n: (n.hops is None, n.hops or 0, n.node_id)):
        label = n.task_id or short_name(n.name)
        hops = "?" if n.hops is None else n.hops
        lines.append(f"| {hops} | {n.type} {label} | {n.impact} | {n.state or ''} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- messages
@dataclass
class CatalogLoaded(Message):
    entries: list[CatalogEntry]
    stats: Any
    complete: bool  # False: more nodes exist than were listed


@dataclass
class NodesFound(Message):
    text: str  # what was typed when the search started
    entries: list[CatalogEntry]


@dataclass
class ViewLoaded(Message):
    title: str
    model: GraphModel
    markdown: str
    entry: CatalogEntry
    blast: bool


class LineagePane(PaneScreen):
    MODE = "lineage"
    TITLE = "Lineage"
    INFO = "#lineage-info"
    HELP = (
        "Pick a DAG, job or dataset (type to filter, fuzzy). The graph shows it with its "
        "upstream and downstream to the chosen depth; `b` shows the blast radius of a failed "
        "task (everything downstream, with hop counts). `g` switches between the drawn graph "
        "and a tree (the tree is used when the pane is narrow)."
    )
    HOME = "#catalog"
    BINDINGS = [
        Binding("slash", "focus_pick", "Pick", key_display="/"),
        Binding("u", "direction('up')", "Up", tooltip="Upstream of the picked node"),
        Binding("d", "direction('down')", "Down", tooltip="Downstream of the picked node"),
        Binding("a", "direction('both')", "Both", tooltip="Upstream and downstream"),
        Binding(
            "plus,equals_sign", "depth(1)", "Depth+", key_display="+", tooltip="One hop deeper"
        ),
        Binding("minus", "depth(-1)", "Depth-", key_display="-", tooltip="One hop shallower"),
        Binding("b", "blast", "Blast", tooltip="Blast radius of a failure (everything downstream)"),
        Binding("g", "toggle_view", "Graph/tree"),
        Binding("left", "pan(-1)", "Pan left", show=False, tooltip="Pan a wide graph left"),
        Binding("right", "pan(1)", "Pan right", show=False, tooltip="Pan a wide graph right"),
        Binding("c", "copy", "Copy", show=False),
        Binding("r", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.catalog: list[CatalogEntry] = []
        self.catalog_limit = CATALOG_NODES
        self.catalog_complete = True
        self.pending_submit: str | None = None  # Enter pressed while a search was running
        self.shown: list[CatalogEntry] = []
        self.current: CatalogEntry | None = None
        self.direction = "both"
        self.depth = DEFAULT_DEPTH
        self.blast = False
        self.model: GraphModel | None = None
        self.title_text = ""
        self.detail_markdown = ""
        self.graph_data: tuple[dict[str, Any], list[Any]] | None = None
        self.graph_overflows = False
        self.view_forced: str | None = None  # "graph" | "tree" once the operator chose

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="pane-body"):
            with Vertical(classes="list-column lineage-picker"):
                yield BoxInput(placeholder="DAG, job or dataset…", id="pick", classes="compact")
                yield OptionList(id="catalog")
                yield Label("", id="lineage-info", classes="hint")
            with Vertical(classes="detail-column"):
                yield Label("pick something on the left", id="view-title", classes="preview-title")
                with ContentSwitcher(id="views", initial="tree"):
                    yield graph_widget(id="graph")
                    yield Tree("lineage", id="tree")
                with VerticalScroll(id="lineage-detail-scroll", can_focus=False):
                    yield Markdown("", id="lineage-detail")

    def on_mount(self) -> None:
        self.query_one("#catalog", OptionList).focus()
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        self.action_refresh()

    def _theme_changed(self, _theme: Any) -> None:
        """Boxes take the new theme's colours (drawn graphs hold styles, not variables)."""
        if self.model is not None:
            self.graph_data = netext_data(self.model, partial(theme_style, self.app))
            if self.query_one("#views", ContentSwitcher).current == "graph":
                self.call_after_refresh(self._draw_graph)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("direction", "depth") and self.current is None:
            return None  # shown dimmed: they act on what is picked
        if action == "depth" and self.blast:
            return None  # a blast radius always reaches everything downstream
        if action == "pan":
            return self.graph_overflows and self.query_one("#views").current == "graph"
        return True

    # ------------------------------------------------------------------ catalog
    @work(group="catalog", exclusive=True, exit_on_error=False, name="reading the lineage catalog")
    async def load_catalog(self) -> None:
        wb = await self.workbench()
        stats, nodes = await asyncio.gather(
            wb.lineage.get_lineage_stats(), wb.lineage.list_nodes(limit=self.catalog_limit)
        )
        self.post_message(
            CatalogLoaded(catalog_from_nodes(nodes.nodes), stats, not nodes.truncated)
        )

    async def on_catalog_loaded(self, message: CatalogLoaded) -> None:
        self.catalog = message.entries
        self.catalog_complete = message.complete
        s = message.stats
        failing = len(s.failing_jobs)
        more = "" if message.complete else " · type to search all"
        self.query_one("#lineage-info", Label).update(
            f"{s.dags} DAGs · {s.jobs} jobs · {s.datasets} datasets · "
            f"{failing} failing · {s.lineage_source}{more}"
        )
        self._show_catalog()
        empty = not self.catalog and self.current is None
        self.set_class(empty, "-no-lineage")  # the hint takes the graph's room (fits 80x24)
        if empty:
            self.query_one("#view-title", Label).update("no lineage yet")
            await self.query_one("#lineage-detail", Markdown).update(EMPTY_LINEAGE)

    def _show_catalog(self) -> None:
        text = self.query_one("#pick", Input).value
        self.shown = fuzzy_filter(self.catalog, text)
        options = self.query_one("#catalog", OptionList)
        options.clear_options()
        options.add_options([Option(escape(e.prompt()), id=e.key) for e in self.shown])
        if self.shown:
            options.highlighted = 0

    @work(group="search", exclusive=True, exit_on_error=False, name="searching lineage")
    async def search_nodes(self, text: str) -> None:
        """Ask the backend for names the listed catalog does not hold (it was cut short)."""
        kind, query = search_terms(text)
        if not query:
            return
        wb = await self.workbench()
        found = await wb.lineage.list_nodes(query, kind, SEARCH_NODES)
        self.post_message(NodesFound(text, catalog_from_nodes(found.nodes)))

    def on_nodes_found(self, message: NodesFound) -> None:
        known = {e.key for e in self.catalog}
        new = [e for e in message.entries if e.key not in known]
        if new:
            self.catalog = sort_catalog([*self.catalog, *new])
            self._show_catalog()
        if self.pending_submit == message.text:
            self.pending_submit = None
            if self.shown and self.query_one("#pick", Input).value == message.text:
                self.select(self.shown[0])
                self.query_one("#catalog", OptionList).focus()

    @on(Input.Changed, "#pick")
    def _pick_changed(self, event: Input.Changed) -> None:
        self.pending_submit = None
        self._show_catalog()
        if not self.catalog_complete and event.value.strip():
            self.search_nodes(event.value)

    @on(Input.Submitted, "#pick")
    def _pick_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.shown:
            self.select(self.shown[0])
            self.query_one("#catalog", OptionList).focus()
        elif not self.catalog_complete and event.value.strip():
            self.pending_submit = event.value  # the search may still find it

    @on(OptionList.OptionSelected, "#catalog")
    def _option_selected(self, event: OptionList.OptionSelected) -> None:
        entry = next((e for e in self.shown if e.key == event.option.id), None)
        if entry is not None:
            self.select(entry)

    def select(self, entry: CatalogEntry, *, blast: bool = False) -> None:
        self.current = entry
        self.blast = blast
        self.refresh_bindings()
        self.query_one("#view-title", Label).update(f"loading {escape(entry.name)}…")
        self.load_view(entry, self.direction, self.depth, blast)

    # ------------------------------------------------------------------ views
    @work(group="view", exclusive=True, exit_on_error=False, name="reading lineage")
    async def load_view(self, entry: CatalogEntry, direction: str, depth: int, blast: bool) -> None:
        wb = await self.workbench()
        lineage = wb.lineage
        if blast:
            if entry.kind == "dag":
                dag_id, task_id = entry.name, None
            else:
                job = await lineage.get_job(entry.key)
                if not job.dag_id:
                    from core.errors import InputError

                    raise InputError(f"{entry.name} is not an Airflow task; pick a DAG or task")
                dag_id, task_id = job.dag_id, job.task_id
            radius = await lineage.get_failure_blast_radius(dag_id, task_id, depth=MAX_DEPTH)
            model = GraphModel(center=f"dag:{dag_id}")
            impacted = {n.node_id: n for n in (*radius.jobs, *radius.datasets)}
            for seed in radius.seeds:
                graph = await lineage.get_lineage_graph(seed.node_id, MAX_DEPTH, "down")
                part = model_from_graph(graph, impacted)
                for node in part.nodes.values():
                    model.add(node)
                model.edges += [e for e in part.edges if e not in model.edges]
            if radius.seeds:
                model.center = radius.seeds[0].node_id
            title = f"blast radius · {dag_id}{'.' + task_id if task_id else ''} · {radius.severity}"
            self.post_message(ViewLoaded(title, model, blast_markdown(radius), entry, True))
            return
        if entry.kind == "dag":
            dag = await lineage.get_dag_lineage(entry.name, depth=depth)
            model = model_from_dag(dag)
            graphs = await asyncio.gather(
                *(lineage.get_lineage_graph(t.node_id, depth, direction) for t in dag.tasks)
            )
            for graph in graphs:  # what lies up/downstream of any of its tasks, to the depth
                merge_outside(model, model_from_graph(graph))
            title = f"DAG {dag.dag_id} · {len(dag.tasks)} tasks · {direction} · depth {depth}"
            markdown = dag_markdown(dag, direction)
            self.post_message(ViewLoaded(title, model, markdown, entry, False))
            return
        graph = await lineage.get_lineage_graph(entry.key, depth, direction)
        if entry.kind == "job":
            markdown = job_markdown(await lineage.get_job(entry.key))
        else:
            markdown = dataset_markdown(await lineage.get_dataset_lineage(entry.key))
        title = f"{entry.kind} {short_name(entry.name)} · {direction} · depth {depth}"
        self.post_message(ViewLoaded(title, model_from_graph(graph), markdown, entry, False))

    async def on_view_loaded(self, message: ViewLoaded) -> None:
        self.model = message.model
        self.detail_markdown = message.markdown
        self.title_text = message.title
        self.graph_overflows = False
        self.query_one("#view-title", Label).update(escape(message.title))
        fill_tree(self.query_one("#tree", Tree), message.model, message.entry.name)
        self.graph_data = netext_data(message.model, partial(theme_style, self.app))
        self._choose_view()
        await self.query_one("#lineage-detail", Markdown).update(message.markdown)

    def _choose_view(self) -> None:
        views = self.query_one("#views", ContentSwitcher)
        if self.view_forced:
            views.current = self.view_forced
        else:
            wide = views.size.width >= GRAPH_MIN_WIDTH
            views.current = "graph" if wide else "tree"
        if views.current == "graph":
            # netext lays the graph out for the widget's size: draw once it is shown and sized
            self.call_after_refresh(self._draw_graph)

    def _draw_graph(self) -> None:
        if self.graph_data is None or self.model is None:
            return
        graph = self.query_one("#graph")
        graph.set_graph(*self.graph_data)
        self.graph_overflows = centre_on(graph, focus_node(self.model))
        hint = " · ←→ pan, g tree" if self.graph_overflows else ""
        self.query_one("#view-title", Label).update(escape(self.title_text + hint))
        self.refresh_bindings()

    # ------------------------------------------------------------------ actions
    def action_focus_pick(self) -> None:
        self.query_one("#pick", Input).focus()

    def action_direction(self, direction: str) -> None:
        self.direction = direction
        if self.current is not None:
            self.select(self.current)  # leaves a blast radius for the plain graph

    def action_depth(self, delta: int) -> None:
        depth = max(1, min(MAX_DEPTH, self.depth + delta))
        if depth == self.depth:
            self.notify(f"depth is already {depth} (1 to {MAX_DEPTH})", timeout=3)
            return
        self.depth = depth
        if self.current is not None:
            self.select(self.current, blast=self.blast)

    def action_pan(self, step: int) -> None:
        graph = self.query_one("#graph")
        graph.scroll_to(x=graph.scroll_x + step * max(graph.size.width // 2, 8), animate=False)

    def action_blast(self) -> None:
        if self.current is None or self.current.kind == "dataset":
            self.notify("Pick a DAG or a task first", severity="warning", timeout=3)
            return
        self.select(self.current, blast=True)

    def action_toggle_view(self) -> None:
        views = self.query_one("#views", ContentSwitcher)
        self.view_forced = "tree" if views.current == "graph" else "graph"
        self._choose_view()

    def action_copy(self) -> None:
        if self.detail_markdown:
            copy_text(self.app, self.detail_markdown)

    def action_refresh(self) -> None:
        self.load_catalog()
        if self.current is not None:
            self.select(self.current, blast=self.blast)
