"""Search over an agent's memory files (``MEMORY.md`` and ``memory/**/*.md`` in its workspace):
chunks of about 400 tokens (80 overlapping) in SQLite FTS5, ranked by BM25 and the share of the
query's words found, brought up to date with the files (by size and modification time) before
each search.  With an embedding model the search is hybrid: each chunk's vector (cached by model
and text, so only changed chunks are embedded again) is compared with the query's, and that
similarity is blended with the keyword score.

One index per agent, at ``<state>/agents/<agentId>/memory.sqlite``.  Blocking: the tools call it
from a worker thread, on a connection of that call's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import sqlite3
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openclaw.paths import create_private_file, make_private_dir

CHUNK_CHARS = 1600  # ~400 tokens
OVERLAP_CHARS = 320  # ~80 tokens
SNIPPET_CHARS = 700
_WORD = re.compile(r"\w+", re.UNICODE)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5("
    "text, path UNINDEXED, start_line UNINDEXED, end_line UNINDEXED)",
    # A chunk's embedding, keyed by the model and the chunk's text (float32, little-endian).
    "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB) WITHOUT ROWID",
)
# Hybrid score: this much of the vector similarity, the rest the keyword score.
VECTOR_WEIGHT = 0.6
# Texts per embeddings call (OpenAI takes at most 2,048; smaller calls fail less at once).
EMBED_BATCH = 256


@dataclass(frozen=True, slots=True)
class Hit:
    path: str
    start_line: int
    end_line: int
    score: float
    snippet: str

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "startLine": self.start_line,
            "endLine": self.end_line,
            "score": round(self.score, 4),
            "snippet": self.snippet,
        }


def memory_files(workspace: Path) -> Iterator[Path]:
    """The memory files of a workspace, relative paths sorted; none that a symlink leads out
    of the workspace (the file tools refuse those too)."""
    root = workspace.resolve()
    top = workspace / "MEMORY.md"
    candidates = [top] if top.is_file() else []
    folder = workspace / "memory"
    if folder.is_dir():
        candidates += sorted(p for p in folder.rglob("*.md") if p.is_file())
    for path in candidates:
        if path.resolve().is_relative_to(root):
            yield path


def is_memory_path(rel: str) -> bool:
    parts = Path(rel).parts
    return rel == "MEMORY.md" or (len(parts) > 1 and parts[0] == "memory" and rel.endswith(".md"))


def chunks(text: str) -> Iterator[tuple[int, int, str]]:
    """(first line, last line, text) of overlapping chunks of about ``CHUNK_CHARS``."""
    lines = text.splitlines()
    start = 0
    while start < len(lines):
        size, end = 0, start
        while end < len(lines) and (size == 0 or size + len(lines[end]) < CHUNK_CHARS):
            size += len(lines[end]) + 1
            end += 1
        yield start + 1, end, "\n".join(lines[start:end])
        if end >= len(lines):
            return
        # Step back by about the overlap, but always move on.
        back, overlap = end, 0
        while back > start + 1 and overlap < OVERLAP_CHARS:
            back -= 1
            overlap += len(lines[back]) + 1
        start = max(back, start + 1)


class MemoryIndex:
    def __init__(self, db_path: Path, workspace: Path) -> None:
        self.db_path = db_path
        self.workspace = workspace

    def _connect(self) -> sqlite3.Connection:
        make_private_dir(self.db_path.parent)
        create_private_file(self.db_path)
        db = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        for statement in _SCHEMA:
            db.execute(statement)
        return db

    def refresh(self, db: sqlite3.Connection) -> None:
        """Index what changed since the last search; forget what is gone."""
        seen: set[str] = set()
        known = {row[0]: (row[1], row[2]) for row in db.execute("SELECT * FROM files")}
        db.execute("BEGIN IMMEDIATE")
        try:
            for path in memory_files(self.workspace):
                rel = str(path.relative_to(self.workspace))
                seen.add(rel)
                stat = path.stat()
                if known.get(rel) == (stat.st_mtime_ns, stat.st_size):
                    continue
                db.execute("DELETE FROM chunks WHERE path = ?", (rel,))
                text = path.read_text("utf-8", "replace")
                db.executemany(
                    "INSERT INTO chunks (text, path, start_line, end_line) VALUES (?, ?, ?, ?)",
                    ((body, rel, first, last) for first, last, body in chunks(text)),
                )
                db.execute(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?)",
                    (rel, stat.st_mtime_ns, stat.st_size),
                )
            for rel in set(known) - seen:
                db.execute("DELETE FROM chunks WHERE path = ?", (rel,))
                db.execute("DELETE FROM files WHERE path = ?", (rel,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def search(self, query: str, max_results: int, min_score: float) -> list[Hit]:
        """Keyword search: the best ``max_results`` passages scoring at least ``min_score``."""
        db = self._connect()
        try:
            self.refresh(db)
            rows = self._keyword_rows(db, query, max_results * 4)
        finally:
            db.close()
        hits = [
            Hit(path, int(first), int(last), score, text[:SNIPPET_CHARS])
            for path, first, last, text, score in _keyword_scores(query, rows)
            if score >= min_score
        ]
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:max_results]

    @staticmethod
    def _keyword_rows(db: sqlite3.Connection, query: str, limit: int) -> list[tuple[Any, ...]]:
        words = _WORD.findall(query)
        if not words:
            return []
        # Every word quoted (FTS5 syntax never comes from the model), any of them may match.
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        return db.execute(
            "SELECT path, start_line, end_line, text, bm25(chunks), rowid FROM chunks"
            " WHERE chunks MATCH ? ORDER BY bm25(chunks) LIMIT ?",
            (match, limit),
        ).fetchall()

    # --- hybrid search (the blocking halves; ``hybrid_search`` runs them around the model) ----

    def prepare(self, query: str, model: str) -> Prepared:
        """Refresh; every chunk with its keyword score and cached vector (None: to embed)."""
        db = self._connect()
        try:
            self.refresh(db)
            rows = self._keyword_rows(db, query, 1000)
            scored = _keyword_scores(query, rows)
            keyword = {row[5]: hit[4] for row, hit in zip(rows, scored, strict=True)}
            stored = db.execute(
                "SELECT rowid, path, start_line, end_line, text FROM chunks"
            ).fetchall()
            cached = dict(db.execute("SELECT key, vector FROM vectors").fetchall())
        finally:
            db.close()
        out = []
        for rowid, path, first, last, text in stored:
            key = _vector_key(model, text)
            blob = cached.get(key)
            vector = _unpack(blob) if blob is not None else None
            out.append(
                Chunk(path, int(first), int(last), text, keyword.get(rowid, 0.0), key, vector)
            )
        return Prepared(out)

    def keep_vectors(self, fresh: dict[str, list[float]], live: set[str]) -> None:
        """Store new vectors; drop those of chunks that no longer exist."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                ((k, _pack(v)) for k, v in fresh.items()),
            )
            stale = [k for (k,) in db.execute("SELECT key FROM vectors") if k not in live]
            db.executemany("DELETE FROM vectors WHERE key = ?", ((k,) for k in stale))
            db.execute("COMMIT")
        finally:
            db.close()


def _keyword_scores(
    query: str, rows: list[tuple[Any, ...]]
) -> list[tuple[str, int, int, str, float]]:
    """(path, first, last, text, score) per row: a score in [0, 1], half how many of the
    query's words the passage has, half its BM25 relative to the best hit (BM25 alone is near 0
    in a small corpus, useless for minScore)."""
    wanted = {w.lower() for w in _WORD.findall(query)}
    best = max((-float(row[4]) for row in rows), default=0.0)
    out = []
    for path, first, last, text, rank, *_ in rows:
        coverage = len(wanted & {w.lower() for w in _WORD.findall(text)}) / len(wanted)
        relative = -float(rank) / best if best > 0 else 1.0
        out.append((path, int(first), int(last), text, 0.5 * coverage + 0.5 * max(0.0, relative)))
    return out


def _vector_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()


def _pack(vector: list[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


def _unpack(blob: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(blob) // 4}f", blob))


@dataclass(slots=True)
class Chunk:
    path: str
    start_line: int
    end_line: int
    text: str
    keyword: float
    key: str
    vector: list[float] | None


@dataclass(slots=True)
class Prepared:
    chunks: list[Chunk]


Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


async def hybrid_search(
    index: MemoryIndex, query: str, model: str, embed: Embed, max_results: int, min_score: float
) -> list[Hit]:
    """Keyword and vector scores blended: passages that say the same thing in other words are
    found too.  Only chunks not embedded before (new or changed) go to the model, with the
    query, in one call."""
    prepared = await asyncio.to_thread(index.prepare, query, model)
    missing = [c for c in prepared.chunks if c.vector is None]
    texts = [query, *(c.text for c in missing)]
    vectors: list[list[float]] = []
    for start in range(0, len(texts), EMBED_BATCH):
        vectors += await embed(texts[start : start + EMBED_BATCH])
    query_vector, fresh = vectors[0], vectors[1:]
    for chunk, vector in zip(missing, fresh, strict=True):
        chunk.vector = vector
    live = {c.key for c in prepared.chunks}
    if missing:
        await asyncio.to_thread(
            index.keep_vectors, {c.key: c.vector for c in missing if c.vector}, live
        )
    hits = []
    for c in prepared.chunks:
        similarity = max(0.0, _cosine(query_vector, c.vector or []))
        score = VECTOR_WEIGHT * similarity + (1 - VECTOR_WEIGHT) * c.keyword
        if score >= min_score:
            hits.append(Hit(c.path, c.start_line, c.end_line, score, c.text[:SNIPPET_CHARS]))
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits[:max_results]


class MemoryIndexes:
    """Each agent's index, made on first use."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._indexes: dict[str, MemoryIndex] = {}

    def get(self, agent_id: str, workspace: Path) -> MemoryIndex:
        index = self._indexes.get(agent_id)
        if index is None:
            db = self.state_dir / "agents" / agent_id / "memory.sqlite"
            index = self._indexes[agent_id] = MemoryIndex(db, workspace)
        return index
