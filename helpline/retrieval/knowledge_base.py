"""The knowledge base: sync documents into a vector store and a BM25 index; search them by role.

Search modes: ``dense`` (embedding similarity in the vector store), ``bm25`` (lexical) and ``hybrid``
(both, fused by reciprocal rank fusion). Follow-up questions are searched together with the user's
earlier turns (``history``), because "and if I moved?" alone names nothing to look for.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from helpline.platform.errors import ConfigError, DataError, NotFoundError
from helpline.platform.registry import Registry
from helpline.platform.schemas import Access, Chunk, Document, ScoredChunk
from helpline.retrieval.bm25 import BM25Index, chunks_fingerprint
from helpline.retrieval.embedders.base import Embedder
from helpline.retrieval.fusion import reciprocal_rank_fusion, weighted_fusion
from helpline.retrieval.index_lock import IndexLock
from helpline.retrieval.ingest.chunking import chunk_document, content_hash
from helpline.retrieval.ingest.loaders import SUPPORTED, load_directory
from helpline.retrieval.ingest.records import Record, RecordManager
from helpline.retrieval.ingest.syncing import SyncReport, apply_sync, document_hash, folder_origin, from_folder
from helpline.retrieval.stores.protocol import VectorStore

Mode = Literal["dense", "bm25", "hybrid"]

ALL_ACCESS: tuple[Access, ...] = ("public", "internal")

#: What each caller may see. Customers never retrieve internal chunks; unknown roles see public only.
VISIBLE: dict[str, tuple[Access, ...]] = {
    "customer": ("public",),
    "staff": ("public", "internal"),
}


class Reranker(Protocol):
    """Re-orders the fused candidates of a query (e.g. a cross-encoder); returns them best first."""

    def rerank(self, query: str, hits: list[ScoredChunk]) -> list[ScoredChunk]: ...


@dataclass
class SearchOptions:
    """How a query is run (defaults are the measured best; see `helpline eval retrieval`)."""

    mode: Mode = "hybrid"
    candidates: int = 50
    #: Min-max normalised scores mixed 50/50 measured better than RRF (k=60) on both test collections:
    #: SciFact nDCG@10 0.729 vs 0.718, doc2dial recall@5 0.929 vs 0.924 (exact dense scores, fp32 MiniLM).
    fusion: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = 60
    dense_weight: float = 0.5
    #: Earlier user turns searched with the question. On doc2dial more context kept helping up to ~6 turns
    #: (BM25 recall@5: 0.59 alone, 0.81 with 2 turns, 0.87 with 6), as a conversation stays on one topic.
    history_turns: int = 6
    #: Also search the question alone and fuse it in. Off: on doc2dial it cost 0.12 recall@5 (BM25).
    question_alone: bool = False


@dataclass(frozen=True)
class _Lexical:
    """The BM25 index searches read and the stamp of the saved index it came from. A refresh replaces it whole
    (one assignment), so a search running on another thread while a sync finishes reads the old index or the
    new one, never half of each."""

    index: BM25Index
    stamp: float | None


class KnowledgeBase:
    """Documents chunked, embedded and stored; searched with access filters."""

    def __init__(
        self,
        *,
        store: VectorStore,
        embedder: Embedder,
        chunk_size: int = 900,
        chunk_overlap: int = 120,
        registry: Registry | None = None,
        records: RecordManager | None = None,
        index_dir: str | Path | None = None,
        options: SearchOptions | None = None,
        reranker: Reranker | None = None,
        lock: IndexLock | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.registry = registry
        self.records = records or RecordManager(":memory:")
        self.index_dir = Path(index_dir) if index_dir else None
        self.options = options or SearchOptions()
        self.reranker = reranker
        #: The index's writer lock (None: an index no other process opens, in memory or a scratch folder).
        self.lock = lock
        #: How many fused candidates the reranker sees.
        self.rerank_depth = 20
        self._lexical: _Lexical | None = None
        #: Whether a search reloads the BM25 index another process saved. A knowledge base searched on other
        #: threads than the one that writes it (``serving.kb_owner``) turns this off: the reload reads the
        #: thread-bound ledger, so its owner calls ``refresh`` instead.
        self.searches_refresh = True

    # writing ------------------------------------------------------------------------------

    def sync(
        self,
        docs: Iterable[Document],
        *,
        delete_missing: bool = True,
        keep: Iterable[str] = (),
        origin: str | None = None,
    ) -> SyncReport:
        """Make the store hold ``docs``: embed new and changed ones, delete removed ones (if ``delete_missing``)
        except those in ``keep``, which stay as they are. ``docs`` are recorded as coming from ``origin``
        (``upload``, ``folder:PATH``; None keeps a document's recorded origin, and a new one is ``added``).

        Safe to kill at any point: the next sync finishes what the killed one started.
        """
        wanted = {d.doc_id: d for d in docs}
        report = SyncReport()
        with self._writing():
            apply_sync(self, wanted, report, delete_missing=delete_missing, keep=set(keep), origin=origin)
            return self._finish(report)

    def sync_folder(self, folder: Path, *, rebuild: bool = False) -> tuple[SyncReport, list]:
        """Mirror ``folder`` (``helpline kb sync`` and the admin API): its articles in, its removed ones out.

        Only documents that came from this folder are deleted (uploads and other folders' documents stay).
        What a file that cannot be loaded held stays as it was (an article broken by an edit does not
        vanish from the answers), and a folder with no readable article is refused rather than allowed to
        delete what it brought. ``rebuild`` embeds the folder's documents again. Returns the report and
        the files that could not be loaded.
        """
        with self._writing():
            docs, failures = load_directory(folder)
            origin = folder_origin(folder)
            records = self.records.all()
            own = {doc_id for doc_id, r in records.items() if from_folder(r, folder)}
            if not docs and own:
                broken = f" ({len(failures)} could not be loaded: {failures[0].reason})" if failures else ""
                raise DataError(
                    f"{folder} has no readable article{broken}; syncing it would delete all {len(own)} "
                    "documents synced from it",
                    hint=f"check the folder (articles are {', '.join(sorted(SUPPORTED))}); "
                    "to delete documents, use `helpline kb remove ID ...`",
                )
            kept = {f.doc_id for f in failures} & own
            if rebuild and kept:
                raise DataError(
                    f"{len(kept)} document(s) have a file that cannot be loaded ({', '.join(sorted(kept)[:5])}); "
                    "a rebuild would drop them",
                    hint="fix or remove those files (`helpline kb sync` without --rebuild lists why), then rebuild",
                )
            if rebuild:
                self._delete(sorted(own), records)
            report = self.sync(docs, keep=(set(records) - own) | kept, origin=origin)
            report.kept = sorted(kept)
            return report, failures

    def sync_source(self, origin: str, docs: list[Document], *, rebuild: bool = False) -> SyncReport:
        """Mirror one export (``origin``, e.g. ``zendesk:/exports/articles.json``; ``ingest/exports.py``): its
        articles in (only new and changed ones embedded), the ones it brought before and holds no more out;
        documents of other sources stay. An export with no article is refused rather than allowed to delete all
        that it brought."""
        with self._writing():
            records = self.records.all()
            own = {doc_id for doc_id, r in records.items() if r.origin == origin}
            if not docs and own:
                raise DataError(
                    f"{origin} holds no published article; syncing it would delete all {len(own)} documents it brought",
                    hint="check the export; to delete documents, use `helpline kb remove ID ...`",
                )
            if rebuild:
                self._delete(sorted(own), records)
            return self.sync(docs, keep=set(records) - own, origin=origin)

    def remove(self, doc_ids: list[str]) -> SyncReport:
        """Delete documents by id; unknown ids are an error (nothing is deleted then)."""
        with self._writing():
            known = self.records.all()
            missing = [d for d in doc_ids if d not in known]
            if missing:
                raise NotFoundError(
                    f"no document with id {', '.join(map(repr, missing))} in the knowledge base",
                    hint="`helpline kb list` shows the ids",
                )
            report = SyncReport(deleted=self._delete(doc_ids, known))
            return self._finish(report)

    def _delete(self, doc_ids: list[str], known: dict[str, Record]) -> list[str]:
        for doc_id in doc_ids:
            self.records.begin_delete(doc_id)
            self.store.delete(known[doc_id].chunk_ids)
            self.records.forget(doc_id)
        return list(doc_ids)

    def clear(self) -> None:
        """Drop every chunk and record."""
        with self._writing():
            ids = [c.chunk_id for c in self.store.chunks()]
            for start in range(0, len(ids), 5000):
                self.store.delete(ids[start : start + 5000])
            self.records.clear()
            self._refresh_bm25(force=True)

    def close(self) -> None:
        """Let other processes write the index again (a serving process holds it until then)."""
        if self.lock is not None:
            self.lock.release()

    def _writing(self) -> AbstractContextManager:
        """The index's writer lock for one write (IndexBusyError while another process holds it)."""
        return self.lock.writing() if self.lock is not None else nullcontext()

    def reindex(self) -> None:
        """Rebuild the BM25 index from the store (after chunks were written to the store directly)."""
        with self._writing():
            self._refresh_bm25(force=True)

    def documents(self) -> list[Record]:
        """The documents the knowledge base holds (including ones a killed sync left unfinished)."""
        return list(self.records.all().values())

    def _finish(self, report: SyncReport) -> SyncReport:
        self._refresh_bm25()
        changes = self.records.unrecorded()
        if self.registry is not None and any(changes.values()):
            report.version = self.registry.record_kb_version(**changes, content_hash=self.fingerprint())
        self.records.reset_unrecorded()
        return report

    # reading ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int = 4,
        role: str = "customer",
        history: list[str] | None = None,
        mode: Mode | None = None,
    ) -> list[ScoredChunk]:
        """The ``k`` most relevant chunks that ``role`` may see.

        ``history`` holds the user's earlier turns, oldest first; the last ``history_turns`` of them are
        searched together with ``query``. Scores are cosine similarities in dense mode, BM25 scores in
        bm25 mode and fused scores in hybrid mode: compare them only within one mode.
        """
        opts = self.options
        mode = mode or opts.mode
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigError(f"unknown search mode {mode!r}", hint="use dense, bm25 or hybrid")
        access = VISIBLE.get(role, ("public",))
        texts = self.query_texts(query, history)
        n = max(k, opts.candidates)
        rankings: list[list[tuple[str, float]]] = []
        signals: dict[str, dict[str, float]] = {"lexical": {}, "dense": {}}
        snapshot = self._lexical_index() if mode != "dense" else (self._lexical or _NO_INDEX)
        found: dict[str, Chunk] = {}  # chunks the dense search returned (the BM25 index may not hold them yet)
        for text in texts:
            if mode in ("bm25", "hybrid"):
                rankings.append(snapshot.index.search(text, k=n, access=access))
                _keep_best(signals["lexical"], rankings[-1])
            if mode in ("dense", "hybrid"):
                rankings.append(self._dense_search(text, n, access, found))
                _keep_best(signals["dense"], rankings[-1])
        if len(rankings) == 1:
            fused = rankings[0]
        elif opts.fusion == "weighted" and mode == "hybrid":
            weights = [opts.dense_weight if i % 2 else 1 - opts.dense_weight for i in range(len(rankings))]
            fused = weighted_fusion(rankings, weights=weights)
        else:
            fused = reciprocal_rank_fusion(rankings, k=opts.rrf_k)
        depth = max(k, self.rerank_depth) if self.reranker is not None else k
        out = []
        for chunk_id, score in fused:
            chunk = snapshot.index.chunks.get(chunk_id) or found.get(chunk_id)
            if chunk is not None and chunk.access in access:  # the filter holds whatever the index says
                dense, lexical = signals["dense"].get(chunk_id), signals["lexical"].get(chunk_id)
                out.append(ScoredChunk(chunk=chunk, score=score, dense=dense, lexical=lexical))
            if len(out) == depth:
                break
        if self.reranker is not None and out:
            out = [h for h in self.reranker.rerank(texts[0], out) if h.chunk.access in access]
        return out[:k]

    def query_texts(self, query: str, history: list[str] | None = None) -> list[str]:
        """What gets searched for ``query``: with its recent context, and (optionally) alone."""
        turns = self.options.history_turns
        context = [t for t in (history or [])[-turns:] if t.strip()] if turns else []
        texts = ["\n".join([*context, query])]
        if context and self.options.question_alone:
            texts.append(query)
        return texts

    def _dense_search(
        self, text: str, n: int, access: tuple[str, ...], found: dict[str, Chunk]
    ) -> list[tuple[str, float]]:
        """Nearest chunks that ``access`` allows.

        A metadata filter makes Chroma pre-filter every id before the graph search (390 ms at 100k chunks
        against 2 ms without), so the filter is applied here to an over-fetched unfiltered result, and the
        filtered query only runs when too few allowed chunks came back.
        """
        vector = self.embedder.embed_query(text)
        fetched = self.store.query(vector, k=2 * n, where=None)
        hits = [h for h in fetched if h.chunk.access in access]
        if len(hits) < n and len(fetched) == 2 * n and not set(ALL_ACCESS) <= set(access):
            where = {"access": access[0]} if len(access) == 1 else {"access": {"$in": list(access)}}
            hits = self.store.query(vector, k=n, where=where)
        hits = hits[:n]
        for h in hits:
            found.setdefault(h.chunk.chunk_id, h.chunk)
        return [(h.chunk.chunk_id, h.score) for h in hits]

    def _lexical_index(self) -> _Lexical:
        if self.searches_refresh:
            self._refresh_bm25(verify=self._lexical is None)
        return self._lexical or _NO_INDEX

    def refresh(self) -> None:
        """Load the BM25 index another process saved, as a search does when ``searches_refresh`` is on (one
        ``stat`` when nothing changed). Call it on the thread that owns the ledger."""
        self._refresh_bm25(verify=self._lexical is None)

    # the BM25 index follows the store --------------------------------------------------------

    def _refresh_bm25(self, *, force: bool = False, verify: bool = True) -> None:
        """Load the BM25 index another process saved; rebuild it from the store if it is stale.

        Searches pass ``verify=False``: they only reload when the saved index changed on disk, so a
        query costs one ``stat``. Syncs verify the index against the ledger every time.
        """
        stamp, current = self._pointer_stamp(), self._lexical
        fresh = not force and current is not None and stamp == current.stamp
        if fresh and (not verify or current.index.fingerprint == self._ledger_fingerprint()):  # type: ignore[union-attr]
            return
        index = None if force or self.index_dir is None else BM25Index.load(self.index_dir)
        if index is None or index.fingerprint != self._ledger_fingerprint():
            index = BM25Index.build(self.store.chunks())
            # A reader saves it only when no other process writes the index; otherwise it keeps it in memory.
            with self.lock.attempt() if self.lock is not None else nullcontext(True) as may_write:
                if self.index_dir is not None and may_write:
                    index.save(self.index_dir)
        self._lexical = _Lexical(index, self._pointer_stamp())

    def _pointer_stamp(self) -> float | None:
        if self.index_dir is None:
            return None
        try:
            return (self.index_dir / "bm25.json").stat().st_mtime_ns
        except OSError:
            return None

    def _ledger_fingerprint(self) -> str:
        records = self.records.all().values()
        if any(r.state != "ok" for r in records):
            return "unfinished-sync"
        return chunks_fingerprint(
            [
                Chunk(chunk_id=cid, doc_id=r.doc_id, title="", text="", content_hash=r.doc_hash)
                for r in records
                for cid in r.chunk_ids
            ]
        )

    def fingerprint(self) -> str:
        """A hash of everything stored, identifying this knowledge-base version."""
        hashes = sorted(f"{c.chunk_id}:{c.content_hash}" for c in self.store.chunks())
        return content_hash("\n".join(hashes))

    def chunk_documents(self, doc: Document) -> list[Chunk]:
        """``doc`` split into chunks, each carrying the document's hash."""
        chunks = chunk_document(doc, chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)
        doc_hash = document_hash(doc)
        for c in chunks:  # the document hash on every chunk tells the next sync what changed
            c.content_hash = doc_hash
        return chunks


_NO_INDEX = _Lexical(BM25Index(), None)  # what a search reads before any index was loaded


def _keep_best(best: dict[str, float], ranking: list[tuple[str, float]]) -> None:
    """Record each chunk's best score in ``ranking`` (several texts may rank the same chunk)."""
    for chunk_id, score in ranking:
        if chunk_id not in best or score > best[chunk_id]:
            best[chunk_id] = score
