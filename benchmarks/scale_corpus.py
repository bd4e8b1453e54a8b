"""Synthetic-but-real text for the search-scale benchmark, and its embedding cache.

Chunks are recombined from the shared corpus (real sentences, real headings, so real vocabulary and
term statistics): chunk i of the sequence is the same whatever the total, so a 3k store is a prefix
of a 1M store and one cache serves every size. Vectors are the project's embedder's (real MiniLM),
computed once and kept in shards outside git:

    nice -n 19 .venv/bin/python benchmarks/scale_corpus.py --chunks 1000000   # resumable

The cache lives in $XDG_CACHE_HOME/qwb-bench (else ~/.cache/qwb-bench), one directory per corpus
and generator version; a shard is written whole (temp file + rename), so an interrupted run resumes
at the first missing shard.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "qubinode-docs"
GENERATOR_VERSION = "v1"
CHUNKS_PER_DOC = 10
SHARD = 1000
SEED = 20261124


@dataclass(frozen=True)
class ScaleChunk:
    index: int
    document: int
    heading: str
    content: str
    sentence_ids: tuple[int, ...]  # indexes into corpus_pools()[0]

    def embedding_text(self) -> str:
        """What the store embeds for a chunk: heading path, blank line, text (core.chunking)."""
        return f"{self.heading}\n\n{self.content}"


def corpus_pools(corpus: Path = CORPUS) -> tuple[list[str], list[str]]:
    """Unique real sentences (40-300 chars) and headings of the shared corpus, in a stable order."""
    if not corpus.is_dir():
        raise SystemExit(f"the shared corpus is not at {corpus}; the benchmark needs ../shared")
    sentences: dict[str, None] = {}
    headings: dict[str, None] = {}
    for path in sorted(corpus.rglob("*.md")):
        text = path.read_text(encoding="utf-8", errors="ignore")
        for line in text.splitlines():
            match = re.match(r"^#{1,4}\s+(.+?)\s*#*\s*$", line)
            if match and 3 <= len(match[1]) <= 120:
                headings[match[1]] = None
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            sentence = " ".join(sentence.split())
            if 40 < len(sentence) < 300:
                sentences[sentence] = None
    return list(sentences), list(headings)


def corpus_digest(corpus: Path = CORPUS) -> str:
    h = hashlib.sha256(GENERATOR_VERSION.encode())
    for path in sorted(corpus.rglob("*.md")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def generate(n: int, corpus: Path = CORPUS) -> Iterator[ScaleChunk]:
    """The first n chunks: each a real heading plus one or two real sentences (mean ~45 word
    pieces; shorter than the store's 256-piece chunks so that 1M embed on 2 cores)."""
    sentences, headings = corpus_pools(corpus)
    rng = random.Random(SEED)
    for i in range(n):
        doc = i // CHUNKS_PER_DOC
        k = 1 if rng.random() < 0.5 else 2
        ids = tuple(rng.randrange(len(sentences)) for _ in range(k))
        heading = headings[rng.randrange(len(headings))]
        yield ScaleChunk(i, doc, heading, " ".join(sentences[j] for j in ids), ids)


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qwb-bench"


def cache_dir(model: str, corpus: Path = CORPUS) -> Path:
    slug = re.sub(r"\W+", "-", model).strip("-")
    return cache_root() / f"search-scale-{corpus_digest(corpus)}-{slug}"


def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"vectors_{shard:05d}.npy"


def cached_shards(folder: Path, n: int) -> int:
    """How many of the shards covering n chunks are present (a prefix)."""
    shards = 0
    while shards * SHARD < n and shard_path(folder, shards).exists():
        shards += 1
    return shards


def load_vectors(folder: Path, n: int) -> np.ndarray:
    """The first n cached vectors (float32, n x 384); SystemExit when the cache is short."""
    have = cached_shards(folder, n)
    if have * SHARD < n:
        raise SystemExit(
            f"only {have * SHARD} of {n} vectors are cached in {folder}; run "
            f"'nice -n 19 .venv/bin/python benchmarks/scale_corpus.py --chunks {n}' first"
        )
    parts = [np.load(shard_path(folder, s)) for s in range(have)]
    return np.concatenate(parts)[:n]


def pieces_path(folder: Path) -> Path:
    return folder / "pieces.npz"


def composed_vectors(folder: Path, n: int) -> np.ndarray:
    """Stand-in vectors for chunks not embedded yet: the normalised mean of the real MiniLM
    vectors of the chunk's heading and sentences (embedded once each). They lie where MiniLM puts
    this text, clustered as the real ones, but are not what embedding the whole chunk gives."""
    data = np.load(pieces_path(folder), allow_pickle=False)
    index = {text: i for i, text in enumerate(data["texts"].tolist())}
    vectors = data["vectors"]
    sentences, _ = corpus_pools()
    out = np.empty((n, vectors.shape[1]), dtype=np.float32)
    for chunk in generate(n):
        rows = [index[chunk.heading], *(index[sentences[j]] for j in chunk.sentence_ids)]
        v = vectors[rows].mean(axis=0)
        out[chunk.index] = v / np.linalg.norm(v)
    return out


async def build_cache(n: int, batch: int = 256) -> Path:
    """Embed the unique headings and sentences (for composed vectors), then the first n chunks
    shard by shard, with the configured embedder (resumable)."""
    from core.config import load_config
    from core.embeddings import get_embedder

    embedder = get_embedder(load_config())
    folder = cache_dir(embedder.model_name)
    folder.mkdir(parents=True, exist_ok=True)
    await embedder.warm_up()
    if not pieces_path(folder).exists():
        sentences, headings = corpus_pools()
        texts = list(dict.fromkeys(headings + sentences))
        t0 = time.perf_counter()
        vectors = [await embedder.embed_documents(texts[i : i + batch])
                   for i in range(0, len(texts), batch)]  # fmt: skip
        tmp = folder / ".tmp_pieces.npz"
        np.savez(tmp, texts=np.array(texts), vectors=np.concatenate(vectors).astype(np.float32))
        tmp.rename(pieces_path(folder))
        print(f"pieces: {len(texts)} embedded in {time.perf_counter() - t0:.0f} s", flush=True)
    shards = -(-n // SHARD)
    start = cached_shards(folder, n)
    print(f"cache {folder}: {start}/{shards} shards present", flush=True)
    if start == shards:
        return folder
    texts = [c.embedding_text() for c in generate(shards * SHARD)]
    t0, done = time.perf_counter(), 0
    for shard in range(start, shards):
        part = texts[shard * SHARD : (shard + 1) * SHARD]
        vectors = [await embedder.embed_documents(part[i : i + batch])
                   for i in range(0, len(part), batch)]  # fmt: skip
        tmp = folder / f".tmp_{shard:05d}.npy"
        np.save(tmp, np.concatenate(vectors).astype(np.float32))
        tmp.rename(shard_path(folder, shard))
        done += len(part)
        rate = done / (time.perf_counter() - t0)
        left = (shards - shard - 1) * SHARD / rate
        print(f"shard {shard + 1}/{shards}  {rate:6.1f} chunks/s  ~{left / 60:5.0f} min left",
              flush=True)  # fmt: skip
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description="Embed the search-scale corpus into the cache.")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    asyncio.run(build_cache(args.chunks, args.batch))


if __name__ == "__main__":
    main()
