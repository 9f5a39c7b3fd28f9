"""The last records of recently read transcripts, kept per file and keyed by its committed
length: a run re-reads and re-parses nothing it already knows.

Worker-thread only (the store's I/O thread).  The committed length is the index's, so an entry
is right exactly while the length is the same: bytes before a committed length never change,
and every write moves it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from openclaw.sessions import transcript
from openclaw.sessions.models import TranscriptRecord

# Bounded in entries and records per entry; a run asks for the agent's history budget (100 + 8).
SESSIONS = 128
RECORDS = 128


class TailCache:
    def __init__(self, *, block_size: int = transcript.DEFAULT_BLOCK_SIZE) -> None:
        self._block_size = block_size
        # path -> (committed length, last records, whether they are all of the transcript)
        self._entries: OrderedDict[Path, tuple[int, list[TranscriptRecord], bool]] = OrderedDict()

    def read(self, path: Path, end: int, max_records: int | None) -> list[TranscriptRecord]:
        """The last ``max_records`` records (None: all) before the committed length ``end``."""
        if end == 0:
            self._entries.pop(path, None)
            return []
        hit = self._entries.get(path)
        if (
            hit is not None
            and hit[0] == end
            and (hit[2] or (max_records is not None and max_records <= len(hit[1])))
        ):
            self._entries.move_to_end(path)
            records = hit[1]
        else:
            # Only what is asked: a run asks the same number each time, so later ones hit.
            records, read = transcript.read_records(
                path, max_records, end=end, block_size=self._block_size
            )
            if read == end:  # a file shorter than its committed length is not remembered
                whole = max_records is None or len(records) < max_records
                self._put(path, end, records, whole)
        if max_records is None:
            return list(records)
        return records[max(0, len(records) - max_records) :] if max_records else []

    def learn(
        self, path: Path, before: int, after: int, records: Sequence[TranscriptRecord]
    ) -> None:
        """After a commit moved ``path``'s length from ``before`` to ``after`` by ``records``."""
        cached = self._entries.pop(path, None)
        if cached is not None and cached[0] == before:
            # Nothing else was written since we read: the entry stays exact with them added.
            kept = [*cached[1], *records]
            self._put(path, after, kept, cached[2])

    def forget(self, path: Path) -> None:
        self._entries.pop(path, None)

    def _put(self, path: Path, end: int, records: list[TranscriptRecord], whole: bool) -> None:
        self._entries[path] = (end, records[-RECORDS:], whole and len(records) <= RECORDS)
        if len(self._entries) > SESSIONS:
            self._entries.popitem(last=False)
