"""`qwb eval`: probe files, relevance matching, metrics computed by hand on a tiny corpus, the CLI
in a subprocess, and the repository's own probe set over the shared corpus."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from core.errors import InputError
from core.evaluation import (
    EvalQuestion,
    RankedDocument,
    build_report,
    compute_metrics,
    document_ranking,
    load_probes,
    parse_probes,
    rank_question,
    run_evaluation,
)
from core.relevant_entries import folder_hint, resolve_relevant, source_matches
from tests.conftest import (
    QWB,
    REPO,
    SHARED,
    cli_env,
    create_database,
    make_config,
    requires_shared,
)

PROBES = REPO / "tests" / "data" / "probes"
CORPUS = SHARED / "corpus" / "qubinode-docs"

# A tiny corpus whose text-side ranking can be worked out by hand:
#   "vg_qubi" and "outbound-interface" each occur in one document only;
#   "firewalld" occurs three times in dns.md and once in vault.md, nowhere else;
#   "unseal", "key", "share" occur in vault.md only; "etcd"/"encryption" nowhere.
TINY = {
    "vault.md": "# Vault unseal\n\nRun vault operator unseal three times, each time with a "
    "different key share. If firewalld blocks port 8200, open it first.\n",
    "dns.md": "# Directory DNS\n\nipa-server-install --setup-dns fails when firewalld drops "
    "port 53. Check firewalld, reload firewalld, then retry.\n",
    "lvm.md": "# Image storage\n\nvgcreate vg_qubi from the largest disks and mount "
    "lv_qubi_images under /var/lib/libvirt/images.\n",
    "vyos.md": "# Router NAT\n\nset nat source rule 10 outbound-interface name eth0 "
    "masquerades the lab networks.\n",
}
TINY_PROBES = [
    # rank 1: only lvm.md holds vg_qubi
    {"query": "vg_qubi", "relevant": ["lvm.md"], "kind": "exact"},
    # rank 1: only vyos.md holds outbound-interface
    {"query": "outbound-interface", "relevant": ["vyos.md"], "kind": "exact"},
    # rank 2: dns.md says firewalld three times, vault.md once
    {"query": "when firewalld gets in the way", "relevant": ["vault.md"], "kind": "paraphrase"},
    # a miss: lvm.md shares no word with the question, so full text never returns it
    {"query": "unseal with key shares", "relevant": ["lvm.md"], "kind": "paraphrase"},
    # no document answers it
    {"query": "etcd encryption rotation", "relevant": [], "kind": "unanswerable"},
]
# By hand, over the four answerable questions with first-relevant ranks 1, 1, 2, none:
#   R@1 = 2/4, R@5 = R@10 = 3/4, MRR@10 = (1 + 1 + 1/2 + 0) / 4
#   exact (1, 1):        R@1 = R@5 = R@10 = 1,   MRR = 1
#   paraphrase (2, none): R@1 = 0, R@5 = R@10 = 1/2, MRR = (1/2 + 0) / 2
EXPECTED = {
    "overall": {"count": 4, "recall@1": 0.5, "recall@5": 0.75, "recall@10": 0.75,
                "mrr@10": 0.625},
    "exact": {"count": 2, "recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0, "mrr@10": 1.0},
    "paraphrase": {"count": 2, "recall@1": 0.0, "recall@5": 0.5, "recall@10": 0.5,
                   "mrr@10": 0.25},
}  # fmt: skip


def write_probes(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qwb(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QWB, *args], cwd=REPO, env=cli_env(db_url), capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# ----------------------------------------------------------------------------- pure parts
def test_metrics_by_hand() -> None:
    m = compute_metrics([1, 3, None, 7, 2])
    assert m.count == 5
    assert m.recall == {1: 1 / 5, 5: 3 / 5, 10: 4 / 5}
    assert m.mrr == pytest.approx((1 + 1 / 3 + 0 + 1 / 7 + 1 / 2) / 5)
    assert compute_metrics([11]).mrr == 0.0  # beyond the MRR cut-off counts as zero
    assert compute_metrics([]).to_dict() == {"count": 0, "recall@1": 0.0, "recall@5": 0.0,
                                             "recall@10": 0.0, "mrr@10": 0.0}  # fmt: skip


def test_chunks_fold_into_documents_at_their_best_rank() -> None:
    class Hit:
        def __init__(self, key: str, sim: float) -> None:
            self.source_key, self.title, self.similarity = key, None, sim

    ranking = document_ranking([Hit("/a", 0.9), Hit("/a", 0.8), Hit("/b", 0.7), Hit("/a", 0.6)])
    assert ranking == [RankedDocument("/a", None, 0.9), RankedDocument("/b", None, 0.7)]


class Hits(list):
    """What a search returns once it says "nothing relevant": hits plus a `weak` flag."""

    weak: bool | None = None


class Hit:
    def __init__(self, key: str, similarity: float = 0.5) -> None:
        self.source_key, self.title, self.similarity = key, None, similarity


async def test_weak_flag_is_counted_only_when_search_gives_it() -> None:
    def search_returning(weak: bool | None) -> Any:
        async def search(query: str, limit: int) -> Hits:
            hits = Hits([Hit("/d/a.md"), Hit("/d/b.md")])
            hits.weak = {"unanswerable one": True, "unanswerable two": False}.get(query, weak)
            return hits

        return search

    questions = [
        EvalQuestion("answerable one", ("a.md",), "exact"),
        EvalQuestion("answerable two", ("b.md",), "exact"),
        EvalQuestion("unanswerable one", (), "unanswerable"),
        EvalQuestion("unanswerable two", (), "unanswerable"),
    ]
    for weak, flagged, false_alarms in ((False, 1, 0), (True, 1, 2)):
        results = [await rank_question(search_returning(weak), q,
                                       lambda k, q=q: any(k.endswith(e) for e in q.relevant), 10)
                   for q in questions]  # fmt: skip
        report = build_report(results, source="stub", mode="hybrid", depth=10)
        nothing = report.nothing_relevant
        assert (nothing.available, nothing.flagged, nothing.false_alarms) == (
            True, flagged, false_alarms)  # fmt: skip
        assert [r.rank for r in results] == [1, 2, None, None]
        assert report.overall.mrr == pytest.approx(0.75)

    async def plain(query: str, limit: int) -> list[Hit]:  # today's search: a plain list
        return [Hit("/d/a.md")]

    result = await rank_question(plain, questions[2], lambda k: False, 10)
    report = build_report([result], source="stub", mode="hybrid", depth=10)
    assert result.weak is None and report.nothing_relevant.available is False
    assert report.nothing_relevant.flagged is None


def test_probe_lines_parse_and_default() -> None:
    questions = parse_probes([
        '# a comment',
        '',
        '{"query": " q1 ", "relevant": "adrs/a.md"}',
        '{"query": "q2", "relevant": []}',
        '{"query": "q3", "relevant": ["./x/b.md", "x/b.md"], "kind": "exact", "note": "why"}',
    ])  # fmt: skip
    assert [(q.line, q.query, q.relevant, q.kind) for q in questions] == [
        (3, "q1", ("adrs/a.md",), "answerable"),
        (4, "q2", (), "unanswerable"),
        (5, "q3", ("x/b.md",), "exact"),
    ]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"query": "q", "relevant": [}', "not valid JSON"),
        ('["q", ["a.md"]]', "expected an object"),
        ('{"query": "q", "relevent": ["a.md"]}', "unknown key(s) relevent"),
        ('{"query": "q"}', "'relevant' is missing; use []"),
        ('{"query": "q", "relevant": [1]}', "'relevant' must be a list of source paths"),
        ('{"query": "  ", "relevant": []}', "'query' must be a non-empty string"),
        ('{"query": "q", "relevant": [], "kind": 3}', "'kind' must be a non-empty string"),
    ],
)
def test_bad_lines_name_the_line(line: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        parse_probes(['{"query": "fine", "relevant": []}', line], "mine.jsonl")
    message = str(err.value)
    assert message.startswith("mine.jsonl line 2: ") and needle in message
    assert "\n" not in message


def test_a_file_saved_with_a_bom_and_crlf_reads(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"query": "q1", "relevant": ["a.md"]}\r\n\r\n'
                     b'{"query": "q2", "relevant": []}\r\n')  # fmt: skip
    assert [(q.line, q.query, q.relevant) for q in load_probes(path)] == [
        (1, "q1", ("a.md",)), (3, "q2", ())]  # fmt: skip


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n# nothing\n")
    with pytest.raises(InputError, match="holds no questions"):
        load_probes(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="probe file not found"):
        load_probes(tmp_path / "nope.jsonl")


def test_entries_match_keys_the_way_operators_write_them() -> None:
    key = "/srv/docs/adrs/adr-0001-container-first.md"
    assert source_matches(key, key)  # the full source key
    assert source_matches("adrs/adr-0001-container-first.md", key)  # relative to the root
    assert source_matches("adr-0001-container-first.md", key)  # a bare filename
    assert source_matches("adrs/adr-00*.md", key)  # a glob
    assert not source_matches("r-0001-container-first.md", key)  # not on a / boundary
    assert not source_matches("adr-0001", key)
    assert source_matches("adr-0001", key, substring=True)  # the health probes' contract
    assert source_matches(
        "provider:apache-airflow-providers-ssh", "provider:apache-airflow-providers-ssh"
    )


def test_a_folder_entry_counts_every_document_under_it() -> None:
    keys = ["/srv/docs/vault-setup/a.md", "/srv/docs/vault-setup/deep/b.md",
            "/srv/docs/vault-setup-old.md", "/srv/docs/adrs/vault-setup/c.md",
            "note:vault-setup"]  # fmt: skip
    assert [k for k in keys if source_matches("vault-setup/", k)] == [
        "/srv/docs/vault-setup/a.md", "/srv/docs/vault-setup/deep/b.md",
        "/srv/docs/adrs/vault-setup/c.md"]  # fmt: skip
    # an absolute folder holds only what starts with it
    assert [k for k in keys if source_matches("/srv/docs/vault-setup/", k)] == keys[:2]
    assert not any(source_matches("/docs/vault-setup/", k) for k in keys)
    assert not any(source_matches("setup/", k) for k in keys)  # not on a / boundary
    # the health probes' substring contract still holds for a folder-like expect_source
    assert source_matches("setup/", keys[0], substring=True)
    res = resolve_relevant(["vault-setup/", "docs/vault-setup/", "a.md"], keys)
    assert res["docs/vault-setup/"].keys == tuple(keys[:2])
    assert len(res["vault-setup/"].keys) == 3 and not res["vault-setup/"].ambiguous
    rooted = resolve_relevant(["vault-setup/", "./deep/"], keys, root="/srv/docs")
    assert rooted["vault-setup/"].keys == tuple(keys[:2])
    assert rooted["./deep/"].keys == ()  # root/deep/ holds nothing
    # the same name without its slash matches nothing, and the warning says what to write
    assert resolve_relevant(["vault-setup"], keys)["vault-setup"].keys == ()
    assert folder_hint("vault-setup", keys) == "vault-setup/"
    assert folder_hint("docs/vault-setup", keys) == "docs/vault-setup/"
    assert folder_hint("missing", keys) is None and folder_hint("adrs/*.md", keys) is None


def test_ambiguous_names_resolve_under_the_common_root() -> None:
    keys = ["/srv/docs/README.md", "/srv/docs/adrs/README.md", "/srv/docs/adrs/adr-0001.md",
            "/srv/docs/guides/a.md", "/elsewhere/README.md"]  # fmt: skip
    res = resolve_relevant(["README.md", "adrs/adr-0001.md", "guides/a.md", "missing.md"], keys)
    assert res["README.md"].keys == ("/srv/docs/README.md",) and not res["README.md"].ambiguous
    assert res["missing.md"].keys == ()
    # nothing else points at a root: every README counts, and the entry is marked ambiguous
    alone = resolve_relevant(["README.md"], keys)["README.md"]
    assert alone.ambiguous and len(alone.keys) == 3
    # an explicit root means exactly root/entry
    rooted = resolve_relevant(["README.md", "adrs/*.md"], keys, root="/srv/docs/adrs")
    assert rooted["README.md"].keys == ("/srv/docs/adrs/README.md",)
    assert set(rooted["adrs/*.md"].keys) == set()
    assert resolve_relevant(["*.md"], keys, root="/srv/docs/adrs")["*.md"].keys == (
        "/srv/docs/adrs/README.md", "/srv/docs/adrs/adr-0001.md")  # fmt: skip


# ----------------------------------------------------------------------------- tiny corpus
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-corpus")
    for name, text in TINY.items():
        (root / name).write_text(text)
    write_probes(root.parent / "tiny-probes.jsonl", TINY_PROBES)
    return root.resolve()


@pytest.fixture(scope="module")
def tiny_db(db_url: str, tiny: Path) -> str:
    proc = qwb(db_url, "ingest", str(tiny), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == len(TINY)
    return db_url


def test_cli_json_metrics_equal_the_hand_computed_ones(tiny_db: str, tiny: Path) -> None:
    proc = qwb(tiny_db, "eval", str(tiny.parent / "tiny-probes.jsonl"), "--mode", "text", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["overall"] == EXPECTED["overall"]
    assert report["by_kind"] == {"exact": EXPECTED["exact"], "paraphrase": EXPECTED["paraphrase"]}
    ranks = {r["query"]: r["rank"] for r in report["results"]}
    assert [ranks[p["query"]] for p in TINY_PROBES] == [1, 1, 2, None, None]
    miss = next(r for r in report["results"] if r["query"] == "unseal with key shares")
    assert miss["relevant_keys"] == [] and miss["searched_documents"] == 1
    assert miss["top"][0]["source_key"].endswith("/vault.md")
    # Search's own verdict (core.relevance): the unanswerable question is flagged (no document
    # holds etcd, encryption or rotation), and so is "when firewalld gets in the way": "get" and
    # "way" are in no document and outweigh the firewalld it found.
    nothing = {"questions": 1, "available": True, "flagged": 1,
               "answerable_questions": 4, "false_alarms": 1}  # fmt: skip
    assert report["nothing_relevant"] == nothing
    weak = {r["query"]: r["weak"] for r in report["results"]}
    assert weak == {"vg_qubi": False, "outbound-interface": False,
                    "when firewalld gets in the way": True, "unseal with key shares": False,
                    "etcd encryption rotation": True}  # fmt: skip
    flagged = next(r for r in report["results"] if r["query"] == "when firewalld gets in the way")
    assert "missing: gets, way" in flagged["weak_reason"]
    assert report["unmatched"] == [] and report["ambiguous"] == []


def test_cli_text_output_says_where_misses_ranked(tiny_db: str, tiny: Path) -> None:
    probes = str(tiny.parent / "tiny-probes.jsonl")
    thresholds = ("--fail-under", "recall@5=0.75", "--fail-under", "paraphrase:mrr@10=0.5")
    proc = qwb(tiny_db, "eval", probes, "--mode", "text", "--no-progress", *thresholds)
    assert proc.returncode == 3, proc.stderr  # paraphrase MRR 0.25 < 0.5; recall@5 0.75 passes
    out = " ".join(proc.stdout.split())
    assert "overall 4 0.500 0.750 0.750 0.625" in out
    assert "rank 2 line 3 paraphrase when firewalld gets in the way" in out
    assert "not in the top 1 documents line 4 paraphrase unseal with key shares" in out
    assert "wanted lvm.md; first: vault.md" in out
    assert "nothing relevant: 1/1 unanswerable questions flagged; 1/4 answerable ones" in out
    assert "line 5 flagged etcd encryption rotation" in out
    assert proc.stderr.strip() == "paraphrase:mrr@10 is 0.250, below 0.5"


def test_cli_counts_a_folder_and_says_when_a_slash_is_missing(
    tiny_db: str, tiny: Path, tmp_path: Path
) -> None:
    rows = [
        {"query": "firewalld", "relevant": [f"{tiny.name}/"], "kind": "exact"},
        {"query": "unseal with key shares", "relevant": [tiny.name], "kind": "paraphrase"},
    ]
    probes = write_probes(tmp_path / "folders.jsonl", rows)
    proc = qwb(tiny_db, "eval", str(probes), "--mode", "text", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    first, second = report["results"]
    # both documents holding firewalld are in the folder, so both count as relevant
    assert sorted(Path(k).name for k in first["relevant_keys"]) == ["dns.md", "vault.md"]
    assert first["rank"] == 1 and second["rank"] is None
    assert report["unmatched"] == [{"line": 2, "entry": tiny.name, "folder": f"{tiny.name}/"}]
    text = qwb(tiny_db, "eval", str(probes), "--mode", "text", "--no-progress")
    assert text.returncode == 0, text.stderr
    out = " ".join(text.stdout.split())
    assert (f"line 2: relevant '{tiny.name}' matches no document in the store; a folder? "
            f"write '{tiny.name}/' to count every document under it") in out  # fmt: skip


async def test_hybrid_evaluation_in_process(workbench: Any, tiny: Path, tiny_db: str) -> None:
    questions = load_probes(tiny.parent / "tiny-probes.jsonl")
    report = await run_evaluation(workbench.rag, questions, root=str(tiny))
    ranks = [r.rank for r in report.results]
    assert ranks[:2] == [1, 1]  # both sides find the only document holding the string
    assert all(r is not None for r in ranks[:4])  # the vector side returns every document
    assert report.nothing_relevant.available is True
    assert report.nothing_relevant.flagged == 1  # etcd: in no document
    # a shallower search sees fewer documents: the misses say how deep it looked
    shallow = await run_evaluation(workbench.rag, questions, depth=1, mode="text")
    assert [r.searched for r in shallow.results] == [1, 1, 1, 1, 0]
    assert shallow.overall.recall[5] == 0.5


@pytest.mark.parametrize(
    ("content", "args", "needles"),
    [
        (
            '{"query": "q", "relevant": ["a.md"]}\n{"query": "q2", "relevant": "x"\n',
            (),
            ("line 2:", "not valid JSON"),
        ),
        ('{"query": "q", "relevant": ["a.md"], "score": 1}\n', (), ("line 1:", "unknown key")),
        ("\n\n", (), ("holds no questions",)),
        (
            '{"query": "q", "relevant": []}\n',
            ("--fail-under", "recall@7=0.5"),
            ("unknown metric 'recall@7'",),
        ),
        (
            '{"query": "q", "relevant": []}\n',
            ("--fail-under", "recall@5"),
            ("--fail-under expects METRIC=VALUE",),
        ),
        ('{"query": "q", "relevant": []}\n', ("--doc-type", "novel"), ("unknown doc type",)),
    ],
)
def test_cli_bad_input_is_one_line(
    db_url: str, tmp_path: Path, content: str, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    probes = tmp_path / "p.jsonl"
    probes.write_text(content)
    assert_one_line_error(qwb(db_url, "eval", str(probes), *args), *needles)


def test_cli_missing_file_is_one_line(db_url: str, tmp_path: Path) -> None:
    assert_one_line_error(qwb(db_url, "eval", str(tmp_path / "nope.jsonl")), "probe file not found")


# ----------------------------------------------------------------------------- the probe set
def probe_set() -> dict[str, list[Any]]:
    return {name: load_probes(PROBES / f"qubinode-{name}.jsonl") for name in ("tune", "heldout")}


def test_probe_set_shape() -> None:
    halves = probe_set()
    everything = [q for qs in halves.values() for q in qs]
    assert len(everything) >= 80
    kinds = {q.kind for q in everything}
    assert kinds == {"paraphrase", "exact", "unanswerable"}
    counts = {name: {k: sum(1 for q in qs if q.kind == k) for k in kinds}
              for name, qs in halves.items()}  # fmt: skip
    for k in kinds:  # balanced by kind: the halves differ by at most one question of each kind
        assert abs(counts["tune"][k] - counts["heldout"][k]) <= 1
    assert counts["heldout"]["unanswerable"] >= 10
    assert sum(1 for q in everything if q.kind == "paraphrase") > len(everything) / 2
    queries = [q.query.lower() for q in everything]
    assert len(set(queries)) == len(queries)  # no question is in both halves
    assert all(q.answerable == (q.kind != "unanswerable") for q in everything)


@requires_shared
def test_probe_set_names_real_documents_unambiguously() -> None:
    keys = [str(p) for p in sorted(CORPUS.rglob("*")) if p.is_file()]
    for name, questions in probe_set().items():
        res = resolve_relevant((e for q in questions for e in q.relevant), keys)
        bad = {e: r.keys for e, r in res.items() if len(r.keys) != 1}
        assert not bad, f"{name}: entries not naming exactly one corpus document: {bad}"
        assert all(".." not in e and not e.startswith("/") for e in res)


@requires_shared
async def test_probe_set_over_the_shared_corpus(pg_server: Any, embedder: Any) -> None:
    """Runs both halves over the real corpus (its own database: ~150 documents to embed).
    Asserts the machinery, not a quality bar (that lives in `qwb eval` output and the issue
    note): every entry resolves, every question is searched, and search finds something
    relevant for most answerable questions."""
    from core.engine import Workbench

    wb = await Workbench.open(make_config(database__url=create_database(pg_server, "probes")))
    try:
        ingested = await wb.rag.ingest_paths([CORPUS])
        assert ingested.count("failed") == 0
        for questions in probe_set().values():
            result = await run_evaluation(wb.rag, questions)
            assert result.unmatched == [] and result.ambiguous == []
            assert len(result.results) == len(questions)
            assert result.overall.recall[10] > 0.5  # fails only if matching or search broke
            assert result.nothing_relevant.available == any(
                r.weak is not None for r in result.results
            )
    finally:
        await wb.close()
