"""Redaction benchmark: coverage of the generated secrets corpus, near-misses kept, every
redaction made on the shared corpus (for review by eye), and throughput. With --detect-secrets
it runs detect-secrets' default plugins over the same inputs, side by side (install it into a
scratch venv first: `python -m venv /tmp/ds && /tmp/ds/bin/pip install detect-secrets==1.5.0`,
then run this script with that interpreter and PYTHONPATH pointing here).

    .venv/bin/python benchmarks/redaction_bench.py                 # seeds 1..20
    .venv/bin/python benchmarks/redaction_bench.py --seeds 200 --show
    /tmp/ds/bin/python benchmarks/redaction_bench.py --detect-secrets

Prints numbers; nothing is asserted (tests do not time things).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.redaction import redact_counted  # noqa: E402
from tests.secrets_corpus import NEAR_MISSES, generate  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "qubinode-docs"


def coverage(seeds: int) -> None:
    kinds = leaked_kinds = lost = 0
    leaks: dict[str, int] = {}
    for seed in range(1, seeds + 1):
        for paste in generate(seed):
            out, _ = redact_counted(paste.text)
            kinds += 1
            if any(s in out for s in paste.secrets):
                leaked_kinds += 1
                leaks[paste.kind] = leaks.get(paste.kind, 0) + 1
            lost += sum(1 for k in paste.keep if k not in out)
    changed = [t for t in NEAR_MISSES if redact_counted(t)[0] != t]
    print(f"generated corpus: {kinds - leaked_kinds}/{kinds} pastes fully redacted over {seeds} "
          f"seeds ({len(generate(1))} kinds); context fragments lost: {lost}")  # fmt: skip
    for kind, n in sorted(leaks.items()):
        print(f"  leaked: {kind} ({n}x)")
    print(f"near-misses kept: {len(NEAR_MISSES) - len(changed)}/{len(NEAR_MISSES)}")
    for text in changed:
        print(f"  changed: {text!r} -> {redact_counted(text)[0]!r}")


def shared_corpus(show: bool) -> None:
    if not CORPUS.is_dir():
        print(f"shared corpus not found at {CORPUS}")
        return
    texts = {p: p.read_text(encoding="utf-8", errors="replace")
             for p in sorted(CORPUS.rglob("*")) if p.is_file()}  # fmt: skip
    total, docs = 0, 0
    for path, text in texts.items():
        out, n = redact_counted(text)
        total += n
        docs += n > 0
        if show and n:
            for before, after in zip(text.splitlines(), out.splitlines(), strict=False):
                if before != after:
                    print(f"  {path.relative_to(CORPUS)}: {after.strip()[:140]}")
    size = sum(len(t) for t in texts.values())
    runs = []
    for _ in range(5):
        started = time.process_time()
        for text in texts.values():
            redact_counted(text)
        runs.append(time.process_time() - started)
    median = statistics.median(runs)
    print(f"shared corpus: {total} redactions in {docs} of {len(texts)} documents")
    print(f"throughput: {size / 1e6:.2f} MB in {median:.2f} s CPU (median of 5) = "
          f"{size / 1e6 / median:.2f} MB/s")  # fmt: skip


def detect_secrets_side_by_side(seeds: int) -> None:
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError:
        print("detect-secrets is not installed in this interpreter; see the module docstring")
        return
    folder = Path(tempfile.mkdtemp(prefix="qwb-ds-"))

    def found(text: str, suffix: str = ".txt") -> list[str]:
        path = folder / f"scan{suffix}"
        path.write_text(text)
        collection = SecretsCollection()
        collection.scan_file(str(path))
        return [s.secret_value or "" for _, s in collection]

    with default_settings():
        caught = adds = total = 0
        for seed in range(1, seeds + 1):
            for paste in generate(seed):
                values = found(paste.text)
                hit = [s for s in paste.secrets if any(s in v or (len(v) >= 8 and v in s)
                                                       for v in values)]  # fmt: skip
                total += 1
                caught += len(hit) == len(paste.secrets)
                ours = redact_counted(paste.text)[0]
                adds += any(s in ours for s in hit)
        flagged = sum(1 for t in NEAR_MISSES if found(t))
        corpus = sum(len(found(p.read_text(errors="replace"), p.suffix or ".txt"))
                     for p in sorted(CORPUS.rglob("*")) if p.is_file())  # fmt: skip
    print(f"detect-secrets 1.5 (default plugins): {caught}/{total} pastes fully caught; "
          f"pastes where it catches a secret these rules leak: {adds}; near-misses flagged: "
          f"{flagged}/{len(NEAR_MISSES)}; shared-corpus findings: {corpus}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="generated corpora to run")
    parser.add_argument("--show", action="store_true", help="print each shared-corpus redaction")
    parser.add_argument("--detect-secrets", action="store_true", help="compare detect-secrets")
    args = parser.parse_args()
    coverage(args.seeds)
    shared_corpus(args.show)
    if args.detect_secrets:
        detect_secrets_side_by_side(min(args.seeds, 3))


if __name__ == "__main__":
    main()
