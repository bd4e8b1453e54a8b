"""Embedding with ONNX Runtime and the `tokenizers` WordPiece tokenizer: no torch, no transformers.

The graph (see `core.onnx_export`) already pools and normalises, so this module only tokenizes as
sentence-transformers does (truncation at the model's max_seq_length, [CLS]/[SEP], right padding)
and feeds length-sorted batches, each padded to its own longest text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from core.onnx_export import OnnxModel


def cpu_count() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class OnnxEncoder:
    """One ONNX Runtime session over an exported model (the caller serialises `encode` calls)."""

    def __init__(self, model: OnnxModel, threads: int = 0, *, spinning: bool = True) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads > 0 else cpu_count()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only: nothing on stdout/stderr in normal use
        # Intra-op threads spin between ops by default: that keeps ingest ~20% faster on 2 cores
        # (benchmarks/embed_bench.py), but steals the CPU a search's database side needs
        # while its question is embedded (`spinning=False` for questions, core.embeddings).
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model.onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {item.name for item in self.session.get_inputs()}
        self.output_name = self.session.get_outputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        tokenizer = Tokenizer.from_file(str(model.tokenizer_file))
        # tokenizer.json ships truncation and fixed padding at 128; the model reads up to 256.
        tokenizer.enable_truncation(model.max_seq_length)
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.lower_case = model.do_lower_case
        self.threads = options.intra_op_num_threads

    def _tokenize(self, texts: Sequence[str]) -> list[Any]:
        prepared = [t.lower() if self.lower_case else t for t in texts]
        try:
            return self.tokenizer.encode_batch(prepared)
        except UnicodeEncodeError:
            # lone surrogates (e.g. from surrogateescape) cannot cross into Rust: replace them,
            # as the same text read with errors="replace" would be.
            clean = [t.encode("utf-8", "replace").decode("utf-8") for t in prepared]
            return self.tokenizer.encode_batch(clean)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in the order given."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenize(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), max(1, batch_size)):
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, index in enumerate(rows):
                tokens = encodings[index].ids
                ids[r, : len(tokens)] = tokens
                mask[r, : len(tokens)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            out[rows] = self.session.run([self.output_name], feeds)[0]
        return out
