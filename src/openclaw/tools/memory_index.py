"""Keyword search over an agent's memory files (``MEMORY.md`` and ``memory/**/*.md`` in its
workspace): chunks of about 400 tokens (80 overlapping) in SQLite FTS5, ranked by BM25 and the
share of the query's words found, brought up to date with the files (by size and modification
time) before each search.

One index per agent, at ``<state>/agents/<agentId>/memory.sqlite``.  Blocking: the tools call it
from a worker thread, on a connection of that call's own.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_CHARS = 1600  # ~400 tokens
OVERLAP_CHARS = 320  # ~80 tokens
SNIPPET_CHARS = 700
_WORD = re.compile(r"\w+", re.UNICODE)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5("
    "text, path UNINDEXED, start_line UNINDEXED, end_line UNINDEXED)",
)


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
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
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
        words = _WORD.findall(query)
        if not words:
            return []
        # Every word quoted (FTS5 syntax never comes from the model), any of them may match.
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        db = self._connect()
        try:
            self.refresh(db)
            rows = db.execute(
                "SELECT path, start_line, end_line, text, bm25(chunks) FROM chunks"
                " WHERE chunks MATCH ? ORDER BY bm25(chunks) LIMIT ?",
                (match, max_results * 4),
            ).fetchall()
        finally:
            db.close()
        # A score in [0, 1]: half how many of the query's words the passage has, half its BM25
        # relative to the best hit (BM25 alone is near 0 in a small corpus, useless for minScore).
        wanted = {w.lower() for w in words}
        best = max((-float(row[4]) for row in rows), default=0.0)
        hits = []
        for path, first, last, text, rank in rows:
            coverage = len(wanted & {w.lower() for w in _WORD.findall(text)}) / len(wanted)
            relative = -float(rank) / best if best > 0 else 1.0
            score = 0.5 * coverage + 0.5 * max(0.0, relative)
            if score >= min_score:
                hits.append(Hit(path, int(first), int(last), score, text[:SNIPPET_CHARS]))
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
