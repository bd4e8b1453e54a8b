"""Lineage views for the Lineage pane: a neutral graph model built from the engine's answers,
drawn by netext's GraphView (roomy terminals) or as a Textual Tree (small ones)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from textual.widgets import Tree

FAILED_STATES = ("FAIL", "ABORT")
STATE_GLYPH = {"COMPLETE": "✓", "FAIL": "✗", "ABORT": "✗", "START": "▶", "RUNNING": "▶",
               "UPSTREAM_FAILED": "⊘", "SKIPPED": "↷"}  # fmt: skip


@dataclass(frozen=True)
class GNode:
    node_id: str
    kind: str  # job | dataset | dag
    label: str
    state: str | None = None
    hops: int | None = None
    impact: str | None = None

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    def text(self, *, compact: bool = False) -> str:
        """`load ✗ FAIL +1`; compact (drawn graph boxes) drops the state word but not a failure."""
        glyph = STATE_GLYPH.get(self.state or "", "")
        parts = [("◆ " if self.kind == "dataset" else "") + self.label]
        if glyph:
            parts.append(glyph if compact and not self.failed else f"{glyph} {self.state}")
        if self.hops:
            parts.append(f"+{self.hops}")
        return " ".join(parts)


@dataclass
class GraphModel:
    center: str
    nodes: dict[str, GNode] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, node: GNode) -> None:
        old = self.nodes.get(node.node_id)
        if old is None or (node.hops is not None and (old.hops or 0) > node.hops):
            self.nodes[node.node_id] = node

    def connect(self, origin: str, destination: str, kind: str) -> None:
        if origin in self.nodes and destination in self.nodes:
            edge = (origin, destination, kind)
            if edge not in self.edges:
                self.edges.append(edge)


def short_name(name: str) -> str:
    """A dataset's file name or a job's last dotted part stays readable in a small box."""
    if "/" in name:
        return PurePosixPath(name).name or name
    return name


def node_label(node: Any) -> str:
    if node.type == "job":
        return node.task_id or node.name
    return short_name(node.name)


def model_from_graph(graph: Any, impacted: dict[str, Any] | None = None) -> GraphModel:
    """A LineageGraph (hop counts, states) as a GraphModel; `impacted` marks a blast radius."""
    model = GraphModel(center=graph.center)
    for n in graph.nodes:
        hit = (impacted or {}).get(n.node_id)
        model.add(
            GNode(
                n.node_id,
                n.type,
                node_label(n),
                state=n.state,
                hops=n.hops,
                impact=hit.impact if hit is not None else None,
            )
        )
    for e in graph.edges:
        model.connect(e.origin, e.destination, e.kind)
    return model


def model_from_dag(dag: Any) -> GraphModel:
    """A DagLineage: its tasks, the datasets they read and write, task dependencies."""
    model = GraphModel(center=f"dag:{dag.dag_id}")
    for t in dag.tasks:
        # judged against the DAG's latest run (an upstream_failed task has no run of its own)
        model.add(GNode(t.node_id, "job", t.task_id or t.name, state=t.current_state))
        for d in (*t.inputs, *t.outputs):
            model.add(GNode(d, "dataset", short_name(d.split(":", 2)[-1])))
    for t in dag.tasks:
        for d in t.inputs:
            model.connect(d, t.node_id, "consumed_by")
        for d in t.outputs:
            model.connect(t.node_id, d, "produces")
    for e in dag.task_edges:
        model.connect(e.origin, e.destination, e.kind)
    return model


# ---------------------------------------------------------------------------- netext
def _render_node(_node: str, data: dict[str, Any], style: Any) -> Any:
    from rich.text import Text

    return Text(data["label"], style=data.get("text_style") or style)


def netext_data(model: GraphModel, style: Callable[[str], Any]) -> tuple[dict, list]:
    """Nodes and edges in netext's attribute format (left-to-right, rounded boxes, arrows).

    `style(name)` gives a Rich Style for a theme colour name (`error`, `accent`…); it must
    turn every theme's colours into something Rich draws (see `widgets.theme_style`)."""
    from netext.edge_rendering.modes import EdgeSegmentDrawingMode
    from netext.edge_routing.modes import EdgeRoutingMode
    from netext.properties.arrow_tips import ArrowTip

    nodes: dict[str, dict[str, Any]] = {}
    for node_id, node in model.nodes.items():
        if node.failed:
            box = style("error")
        elif node_id == model.center:
            box = style("accent")
        elif node.impact:
            box = style("warning")
        else:
            box = style("primary")
        nodes[node_id] = {
            "label": node.text(compact=True),
            "$content-renderer": _render_node,
            "$style": box,
            "text_style": style("text-error") if node.failed else None,
        }
    edge_data = {
        "$edge-segment-drawing-mode": EdgeSegmentDrawingMode.BOX_ROUNDED,
        "$edge-routing-mode": EdgeRoutingMode.ORTHOGONAL,
        "$end-arrow-tip": ArrowTip.ARROW,
    }
    edges = []
    for origin, destination, kind in model.edges:
        data = dict(edge_data)
        if kind == "task_dep":
            data["$dash-pattern"] = [1, 1]
        edges.append((origin, destination, data))
    return nodes, edges


def graph_widget(**kwargs: Any) -> Any:
    """A netext GraphView laid out left to right (lineage reads as a pipeline)."""
    from netext._core import LayoutDirection, SugiyamaLayout
    from netext.textual_widget.widget import GraphView

    return GraphView({}, [], layout_engine=SugiyamaLayout(LayoutDirection.LEFT_RIGHT), **kwargs)


def focus_node(model: GraphModel) -> str | None:
    """The node a drawn graph should show first: a failed one (nearest), else the centre."""
    failed = [n for n in model.nodes.values() if n.failed]
    if failed:
        return min(failed, key=lambda n: (n.hops or 0, n.node_id)).node_id
    return model.center if model.center in model.nodes else None


def centre_on(graph: Any, node_id: str | None) -> bool:
    """Scroll a drawn graph so `node_id` is in the middle; False when the graph fits anyway."""
    if graph.virtual_size.width <= graph.size.width and (
        graph.virtual_size.height <= graph.size.height
    ):
        return False
    buffers = getattr(graph._console_graph, "node_buffers", {})
    box = buffers.get(node_id) if node_id else None
    if box is None:
        return True
    origin = graph._console_graph.full_viewport.top_left
    x = box.left_x - origin.x + box.width // 2 - graph.size.width // 2
    y = box.top_y - origin.y + box.height // 2 - graph.size.height // 2
    graph.scroll_to(x=max(x, 0), y=max(y, 0), animate=False)
    return True


# ---------------------------------------------------------------------------- tree
def fill_tree(tree: Tree[str], model: GraphModel, title: str) -> None:
    """Upstream and downstream of the centre as two branches (the small-terminal view)."""
    tree.clear()
    tree.root.set_label(title)
    tree.root.data = model.center
    forward: dict[str, list[str]] = {}
    backward: dict[str, list[str]] = {}
    for origin, destination, _kind in model.edges:
        forward.setdefault(origin, []).append(destination)
        backward.setdefault(destination, []).append(origin)
    centre = model.nodes.get(model.center)
    if centre is None:  # a DAG: its tasks in order, each with what it reads and writes
        for node in model.nodes.values():
            if node.kind != "job":
                continue
            branch = tree.root.add(node.text(), data=node.node_id, expand=True)
            for src in backward.get(node.node_id, []):
                branch.add_leaf(f"reads {model.nodes[src].text()}", data=src)
            for dst in forward.get(node.node_id, []):
                branch.add_leaf(f"→ {model.nodes[dst].text()}", data=dst)
        tree.root.expand()
        return
    tree.root.set_label(f"{title}: {centre.text()}")
    for name, links in (("▲ upstream", backward), ("▼ downstream", forward)):
        branch = tree.root.add(name, expand=True)
        _grow(branch, model, links, model.center, {model.center})
        if not branch.children:
            branch.add_leaf("(nothing)")
    tree.root.expand()


def _grow(
    branch: Any, model: GraphModel, links: dict[str, list[str]], at: str, seen: set[str]
) -> None:
    for nxt in links.get(at, []):
        if nxt in seen:
            continue
        node = model.nodes[nxt]
        child = branch.add(node.text(), data=nxt, expand=True)
        _grow(child, model, links, nxt, seen | {nxt})
        if not child.children:
            child.allow_expand = False


def iter_labels(tree: Tree[str]) -> Iterable[str]:
    """Every label in the tree (for tests and copy)."""
    stack = [tree.root]
    while stack:
        node = stack.pop()
        yield str(node.label)
        stack.extend(node.children)
