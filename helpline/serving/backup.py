"""`helpline backup` and `helpline restore`: a consistent copy of a workspace, taken while a gateway serves it.

A backup holds everything in the workspace folder except its logs, lock files, SQLite's side files and
half-written folders (``*.partial``, ``*.tmp``); symbolic links are not followed (listed as skipped), so nothing
from outside the workspace is copied. Each SQLite database (the registry, the gateway's keys, audit log and
conversations, the knowledge base's ledger, Chroma's ``chroma.sqlite3``, caches) is copied through SQLite's online
backup API, which reads one consistent state while other processes write; other files are copied byte for byte.
``manifest.json`` beside the copy lists every file with its size and sha256, the helpline version, the registry's
schema version and the settings the backup was taken under (``database_url`` without its password).

With ``database_url`` set, the gateway's database and the registry are on PostgreSQL, outside the workspace (the
workspace's ``registry.sqlite``, if any, is no longer the live registry then): a backup is refused
unless the caller says that database is backed up elsewhere (``pg_dump``); the manifest then says it is not in it.

The knowledge base's files (Chroma's, the ledger, BM25) must all come from one moment. With no gateway serving
the workspace, the backup holds the index's writer lock (``retrieval/index_lock.py``) while it copies, so no
`kb sync` writes mid-copy. A serving gateway holds that lock itself for as long as it runs, and then only it
writes the index (through its admin API); so every file under ``indexes/`` is also compared before and after
the copy, and a copy during which any of them changed is taken again (then refused, naming the file).

The order of steps (an interrupted backup or restore changes nothing and leaves no folder that looks whole):
backup: copy into ``.DEST.partial-PID`` beside DEST → write the manifest → rename it to DEST.
restore: copy the files the manifest lists into ``.TARGET.restore-PID`` beside TARGET → check each copy's size
and sha256 and each database's integrity → point registry paths that were inside the old workspace at TARGET →
move an existing TARGET aside → rename the copy to TARGET → delete the old TARGET.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import Any

import helpline
from helpline.platform.errors import ConfigError, DataError, WorkspaceNotReadyError
from helpline.platform.registry import Registry
from helpline.platform.registry_migrations import MIGRATIONS
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.retrieval.factory import index_lock_path
from helpline.retrieval.index_lock import IndexBusyError, IndexLock
from helpline.serving.gateway.store_db import masked

FORMAT, VERSION = "helpline-backup", 1
MANIFEST = "manifest.json"
#: The copied workspace's folder inside a backup (the manifest sits beside it).
TREE = "workspace"
_SKIPPED_DIRS = {"logs"}  # top-level: process output, not state
_SKIPPED_SUFFIXES = (".lock", "-wal", "-shm", "-journal", ".tmp", ".partial")
#: Files under indexes/ that change without a knowledge-base write (an evaluation's embedding cache): each is
#: consistent by itself and nothing needs it to match the index, so a change to it does not restart the copy.
_VOLATILE = {"embedding-cache.sqlite"}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_CHUNK = 1 << 20
_A_BACKUP = "pass a folder that `helpline backup` wrote"
_DAMAGED = "the backup was changed or damaged after it was written: restore another one (nothing was replaced)"


def backup_workspace(
    workspace: Workspace, dest: Path, *, settings: Settings, attempts: int = 3, database_elsewhere: bool = False
) -> dict[str, Any]:
    """Copy ``workspace`` into the new folder ``dest`` (it must not exist, or be empty); returns the manifest.
    ``database_elsewhere``: the gateway's PostgreSQL database (``database_url``) is backed up by other means."""
    root, dest = workspace.root, Path(dest).expanduser().resolve()
    if not workspace.registry_db.is_file():
        raise WorkspaceNotReadyError(f"no workspace at {root} (it has no registry.sqlite)")
    if settings.database_url is not None and not database_elsewhere:
        raise ConfigError(
            "the gateway's database (keys, conversations, audit log) and the registry (models, aliases) are on "
            f"PostgreSQL ({masked(settings.database_url)}, database_url), outside the workspace this backup copies",
            hint="back that database up with pg_dump (pg_dump --format=custom --file=helpline.dump DATABASE_URL), "
            "then back up the rest with `helpline backup --database-elsewhere DEST`",
        )
    if dest.is_relative_to(root):
        raise ConfigError(f"{dest} is inside the workspace it would back up", hint=f"choose a folder outside {root}")
    _refuse_non_empty(dest, hint="choose a new folder for the backup")
    outside = [m.name for m in Registry(workspace.registry_db).list_models() if not Path(m.path).is_relative_to(root)]
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        with IndexLock(index_lock_path(settings, workspace)).attempt() as locked:
            files, skipped = _copy_consistently(root, partial / TREE, attempts=attempts)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": time.time(),
            "helpline_version": helpline.__version__,
            "registry_schema": _user_version(partial / TREE / workspace.registry_db.name),
            "workspace": str(root),
            "index": "writer lock held" if locked else "served by a gateway: unchanged during the copy",
            "settings": _settings_record(settings),
            "gateway_database": "in the backup (gateway.sqlite)"
            if settings.database_url is None
            else f"not in the backup: PostgreSQL at {masked(settings.database_url)} (pg_dump)",
            "files": files,
            "skipped": skipped,
            "models_outside_workspace": outside,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)  # holds no file (checked above)
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _settings_record(settings: Settings) -> dict[str, Any]:
    """The settings for the manifest: ``database_url`` without its password."""
    record = settings.model_dump(mode="json", exclude={"workspace"})
    if settings.database_url is not None:
        record["database_url"] = masked(settings.database_url)
    return record


def _copy_consistently(root: Path, into: Path, *, attempts: int) -> tuple[list[dict], list[dict]]:
    """Copy until the knowledge base's files did not change during one whole copy (see the module docstring)."""
    changed: list[str] = []
    for _ in range(attempts):
        shutil.rmtree(into, ignore_errors=True)
        before = _index_state(root)
        try:
            files, skipped = _copy_tree(root, into)
        except FileNotFoundError as e:  # a file went while it was being copied: a write is under way
            changed = [str(e.filename)]
            continue
        after = _index_state(root)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if not changed:
            return files, skipped
    shutil.rmtree(into, ignore_errors=True)
    raise IndexBusyError(
        f"the knowledge base changed during each of {attempts} copies (e.g. {', '.join(changed[:3])})",
        hint="a knowledge-base sync is running (through the gateway's admin API or `helpline kb sync`): "
        "run the backup again when it has finished",
    )


def _plan(root: Path) -> tuple[list[tuple[str, Path]], list[dict]]:
    """(relative POSIX path, source) of every file to copy, sorted, and the entries skipped with why."""
    files: list[tuple[str, Path]] = []
    skipped: list[dict] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            rel = (here / d).relative_to(root).as_posix()
            if (here / d).is_symlink():
                skipped.append({"path": rel, "reason": "symbolic link"})
            elif not (here == root and d in _SKIPPED_DIRS) and not d.endswith(_SKIPPED_SUFFIXES):
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                skipped.append({"path": rel, "reason": "symbolic link"})
            elif not name.endswith(_SKIPPED_SUFFIXES):
                files.append((rel, path))
    return files, skipped


def _copy_tree(root: Path, into: Path) -> tuple[list[dict], list[dict]]:
    plan, skipped = _plan(root)
    files = []
    for rel, source in plan:
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if _is_sqlite(source):
            _copy_database(source, target)
            digest = _sha256(target)
        else:
            digest = _copy_file(source, target)
        files.append({"path": rel, "size": target.stat().st_size, "sha256": digest})
    return files, skipped


def _index_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """(size, mtime, inode) of every file under ``indexes/`` a knowledge-base write changes. An empty write-ahead
    log counts as none: opening a database to read it may create one."""
    state = {}
    for folder, _, names in os.walk(root / "indexes"):
        for name in names:
            path = Path(folder) / name
            if name.endswith((".lock", "-shm")) or name.removesuffix("-wal") in _VOLATILE:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if not (name.endswith("-wal") and st.st_size == 0):
                state[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return state


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC


def _copy_database(source: Path, target: Path) -> None:
    """One consistent state of a live SQLite database, read through its online backup API. The source is opened
    read-only, so closing it never writes the source (no checkpoint); a database that cannot be opened so (a
    hot journal left by a crashed writer) is opened normally, which recovers it first."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        src.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.OperationalError:
        src = sqlite3.connect(source, timeout=30)
    with closing(src), closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _copy_file(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as fin, target.open("wb") as fout:
        while block := fin.read(_CHUNK):
            digest.update(block)
            fout.write(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _user_version(db_file: Path) -> int:
    """``PRAGMA user_version`` read from the file's header (bytes 60-63), so the copy is never opened."""
    with db_file.open("rb") as f:
        return int.from_bytes(f.read(64)[60:64], "big")


def _refuse_non_empty(folder: Path, *, hint: str) -> None:
    if folder.exists() and (not folder.is_dir() or any(p.is_file() for p in folder.rglob("*"))):
        raise ConfigError(f"{folder} exists and is not empty", hint=hint)


# restore ----------------------------------------------------------------------------------------


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of the backup in ``source``; DataError when it is missing or not one this helpline reads."""
    path = Path(source) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{source} holds no readable backup manifest ({e})", hint=_A_BACKUP) from e
    whole = isinstance(manifest, dict) and {"files", "workspace", "created_at"} <= manifest.keys()
    if not whole or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(f"{path} is not a version-{VERSION} helpline backup manifest", hint=_A_BACKUP)
    if manifest.get("registry_schema", 0) > len(MIGRATIONS):
        raise ConfigError(
            f"the backup's registry has schema version {manifest['registry_schema']}; this helpline reads up to "
            f"{len(MIGRATIONS)}",
            hint=f"restore it with helpline {manifest.get('helpline_version', '(newer)')} or later",
        )
    for entry in manifest.get("files", []):
        if not isinstance(entry, dict) or not {"path", "size", "sha256"} <= entry.keys():
            raise DataError(f"{path} lists a file without its path, size and sha256 ({entry!r})", hint=_DAMAGED)
        rel = PurePosixPath(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{path} lists {entry['path']!r}, outside the backup", hint=_DAMAGED)
    return manifest


def restore_workspace(source: Path, target: Path, *, settings: Settings, force: bool = False) -> dict[str, Any]:
    """Restore the backup in ``source`` as the workspace ``target`` (new or empty; with ``force`` it replaces
    the workspace there, which must not be served meanwhile). Returns what was restored."""
    source, target = Path(source).expanduser().resolve(), Path(target).expanduser().resolve()
    manifest = read_manifest(source)
    if target.is_relative_to(source) or source.is_relative_to(target):
        raise ConfigError(f"{target} and the backup {source} overlap", hint="restore into another folder")
    if not force:
        _refuse_non_empty(target, hint="restore into a new folder, or pass --force to replace that workspace")
    staged = target.with_name(f".{target.name}.restore-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    try:
        _copy_verified(source / TREE, staged, manifest["files"])
        rebased = _rebase_models(staged / Workspace.at(staged).registry_db.name, Path(manifest["workspace"]), target)
        Registry(Workspace.at(staged).registry_db)  # opens, and migrates an older schema
        _swap_in(staged, target, settings=settings)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return {
        "workspace": str(target),
        "backup": str(source),
        "created_at": manifest["created_at"],
        "files": len(manifest["files"]),
        "bytes": sum(f["size"] for f in manifest["files"]),
        "models_moved": rebased,
        "models_outside_workspace": manifest.get("models_outside_workspace", []),
    }


def _copy_verified(tree: Path, staged: Path, files: list[dict]) -> None:
    """Copy the listed files, then check every copy against the manifest and every database's integrity."""
    for entry in files:
        origin, copy = tree / entry["path"], staged / entry["path"]
        if not origin.is_file():
            raise DataError(f"the backup lacks {entry['path']}, which its manifest lists", hint=_DAMAGED)
        copy.parent.mkdir(parents=True, exist_ok=True)
        _copy_file(origin, copy)
    for entry in files:
        copy = staged / entry["path"]
        size, digest = copy.stat().st_size, _sha256(copy)
        if (size, digest) != (entry["size"], entry["sha256"]):
            raise DataError(
                f"{entry['path']} in the backup does not match its manifest (sha256 {digest[:12]}…, {size} bytes; "
                f"the manifest says {entry['sha256'][:12]}…, {entry['size']} bytes)",
                hint=_DAMAGED,
            )
    for entry in files:
        copy = staged / entry["path"]
        if _is_sqlite(copy):
            with closing(sqlite3.connect(copy)) as db:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise DataError(f"database {entry['path']} in the backup is damaged ({verdict})", hint=_DAMAGED)


def _rebase_models(registry_db: Path, old_root: Path, new_root: Path) -> int:
    """Point registered models that lived inside the backed-up workspace at the same place in ``new_root`` (the
    registry stores absolute paths). Models registered from elsewhere keep their path. Returns how many moved."""
    moved = 0
    with closing(sqlite3.connect(registry_db)) as db, db:
        for name, path in db.execute("SELECT name, path FROM models").fetchall():
            if old_root != new_root and Path(path).is_relative_to(old_root):
                moved_to = new_root / Path(path).relative_to(old_root)
                db.execute("UPDATE models SET path = ? WHERE name = ?", (str(moved_to), name))
                moved += 1
    return moved


def _swap_in(staged: Path, target: Path, *, settings: Settings) -> None:
    """Rename ``staged`` to ``target``. An existing ``target`` is moved aside first, holding its index's writer
    lock (refused while a gateway serves it), and deleted only once the restored copy is in its place."""
    if not target.exists():
        staged.rename(target)
        return
    aside = target.with_name(f".{target.name}.replaced-{os.getpid()}")
    try:
        with IndexLock(index_lock_path(settings, Workspace.at(target))).writing("helpline restore"):
            target.rename(aside)
    except IndexBusyError as e:
        raise IndexBusyError(
            f"{target} is in use: {e.message}", hint="stop the gateway that serves it, or restore into a new folder"
        ) from e
    try:
        staged.rename(target)
    except OSError:
        aside.rename(target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
