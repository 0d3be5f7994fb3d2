"""Where BVH clips come from: files, directories and tar archives, read in parallel.

:func:`iter_bvh_sources` walks its inputs and yields one ``(name, text, labels, source)``
tuple per BVH file:

* a ``.bvh`` file (labels from a ``<stem>.json`` beside it, if any);
* a directory, searched recursively (sorted paths);
* a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``/``.txz`` or ``.tar.bz2`` archive, streamed with
  :mod:`tarfile` without extracting anything to disk. A member ``<dir>/<stem>.json`` gives the
  labels of ``<dir>/<stem>.bvh`` wherever it sits in the archive (in an archive whose first
  256 BVH members come without any JSON, labels are not looked for); ``source`` reads
  ``archive.tar.xz:member/path.bvh``.

:func:`load_clips` parses many inputs with a process pool. Reading an ``.xz`` archive is
bound by decompression, so each archive is one task (decompressed and parsed by one worker);
loose files are parsed in chunks. A malformed file is reported (file and line) and skipped
with ``on_error="warn"``, or stops the load with ``on_error="raise"``.

Workers import only numpy and :mod:`mmar.data.bvh` (no JAX), so they start in a fraction of
a second; parsed arrays come back to the parent process, which builds the
:class:`~mmar.data.clip.Clip` objects.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
import queue as queue_mod
import tarfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterator

from mmar.data.bvh import BvhData, decode_text, parse_bvh_arrays
from mmar.errors import DataFormatError, few, shorten

__all__ = [
    "ARCHIVE_SUFFIXES",
    "is_archive",
    "iter_bvh_sources",
    "iter_archive_members",
    "list_bvh_names",
    "load_clips",
    "LoadedClip",
]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


def is_archive(path) -> bool:
    name = os.fspath(path).lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def _stem(member: str) -> str:
    base = member.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _decode(raw: bytes) -> str:
    return decode_text(raw)


def _parse_labels(text: str | None, where: str) -> dict | None:
    if text is None:
        return None
    try:
        labels = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"bad JSON labels: {e.msg}", where, e.lineno) from None
    if not isinstance(labels, dict):
        raise DataFormatError("JSON labels must be an object", where, 1)
    return labels


# --------------------------------------------------------------------------
# raw iteration: (name, bvh text, json text or None, source, json source or None)
# --------------------------------------------------------------------------

_MAX_UNPAIRED = 256


def iter_archive_raw(path: str, progress: Callable[[int], None] | None = None):
    """Stream a tar archive; pair ``x.bvh`` with ``x.json`` of the same directory.

    A BVH member waits (in memory) for its JSON, which may come later in the archive; once
    ``_MAX_UNPAIRED`` BVH members have gone by without a single JSON member, the archive is
    taken to have no labels and BVH texts are passed on at once."""
    pending_bvh: dict[str, tuple[str, str]] = {}
    pending_json: dict[str, tuple[str, str]] = {}
    json_seen = False
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise DataFormatError(f"cannot open archive ({e.strerror})", path) from e
    last = 0
    with fh:
        try:
            tf = tarfile.open(fileobj=fh, mode="r|*")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataFormatError(f"not a readable tar archive ({e})", path) from e
        with tf:
            try:
                for m in tf:
                    if progress is not None:
                        pos = fh.tell()
                        if pos != last:
                            progress(pos - last)
                            last = pos
                    if not m.isfile():
                        continue
                    low = m.name.lower()
                    if not (low.endswith(".bvh") or low.endswith(".json")):
                        continue
                    f = tf.extractfile(m)
                    text = _decode(f.read()) if f is not None else ""
                    key = m.name.rsplit(".", 1)[0]
                    src = f"{path}:{m.name}"
                    if low.endswith(".bvh"):
                        if key in pending_json:
                            jtext, jsrc = pending_json.pop(key)
                            yield _stem(m.name), text, jtext, src, jsrc
                        elif not json_seen and len(pending_bvh) >= _MAX_UNPAIRED:
                            # an archive without labels: stop holding texts back
                            for k2, (t2, s2) in pending_bvh.items():
                                yield _stem(k2 + ".bvh"), t2, None, s2, None
                            pending_bvh.clear()
                            yield _stem(m.name), text, None, src, None
                        else:
                            pending_bvh[key] = (text, src)
                    else:
                        json_seen = True
                        if key in pending_bvh:
                            btext, bsrc = pending_bvh.pop(key)
                            yield _stem(m.name), btext, text, bsrc, src
                        else:
                            pending_json[key] = (text, src)
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DataFormatError(f"archive is corrupt or truncated ({e})", path) from e
    if progress is not None:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = last
        if size > last:
            progress(size - last)
    for key, (text, src) in pending_bvh.items():
        yield _stem(key + ".bvh"), text, None, src, None


def _iter_file_raw(path: str):
    try:
        with open(path, "rb") as f:
            text = _decode(f.read())
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror})", path) from e
    base = path[:-4]
    jtext = jsrc = None
    for ext in (".json", ".JSON"):
        if os.path.isfile(base + ext):
            jsrc = base + ext
            with open(jsrc, "rb") as f:
                jtext = _decode(f.read())
            break
    return _stem(path), text, jtext, path, jsrc


def _expand(inputs) -> list[tuple[str, str]]:
    """Inputs as a list of ``("archive" | "file", path)`` in a stable order."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[tuple[str, str]] = []
    for inp in inputs:
        p = os.fspath(inp)
        if os.path.isdir(p):
            found = []
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for fn in files:
                    full = os.path.join(root, fn)
                    if fn.lower().endswith(".bvh"):
                        found.append(("file", full))
                    elif is_archive(fn):
                        found.append(("archive", full))
            out.extend(sorted(found, key=lambda t: t[1]))
        elif os.path.isfile(p):
            if is_archive(p):
                out.append(("archive", p))
            elif p.lower().endswith(".bvh"):
                out.append(("file", p))
            else:
                raise DataFormatError("not a .bvh file, a directory or a tar archive", p)
        else:
            raise DataFormatError("no such file or directory", p)
    return out


def iter_bvh_sources(inputs) -> Iterator[tuple[str, str, dict | None, str]]:
    """Yield ``(name, text, labels or None, source)`` for every BVH file in ``inputs``
    (a path or a list of paths: files, directories, archives).

    ``name`` is the file name without ``.bvh``; ``labels`` is the parsed ``<stem>.json``;
    ``source`` is the file path or ``archive:member``. Malformed JSON raises
    :class:`DataFormatError`.
    """
    for kind, p in _expand(inputs):
        it = iter_archive_raw(p) if kind == "archive" else [_iter_file_raw(p)]
        for name, text, jtext, src, jsrc in it:
            yield name, text, _parse_labels(jtext, jsrc or src), src


def iter_archive_members(path) -> Iterator[str]:
    """Member names of a tar archive, streamed (the whole archive is still decompressed)."""
    with open(os.fspath(path), "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tf:
        for m in tf:
            if m.isfile():
                yield m.name


def list_bvh_names(inputs) -> list[str]:
    """Clip names (file names without ``.bvh``) in the inputs, without parsing any BVH."""
    names: list[str] = []
    for kind, p in _expand(inputs):
        if kind == "archive":
            names.extend(_stem(m) for m in iter_archive_members(p) if m.lower().endswith(".bvh"))
        else:
            names.append(_stem(p))
    return names


# --------------------------------------------------------------------------
# parallel loading
# --------------------------------------------------------------------------

@dataclasses.dataclass
class LoadedClip:
    """What a worker sends back for one file: parsed arrays, labels and where it came from."""

    name: str
    data: BvhData
    labels: dict | None
    source: str


# A per-clip hook run in the worker: (name, data, labels, source) -> (data, labels).
Transform = Callable[[str, BvhData, "dict | None", str], "tuple[BvhData, dict | None]"]

_PROGRESS_QUEUE = None


def _init_worker(q) -> None:
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = q
    # Ctrl-C is the parent's to handle (it stops the workers); no traceback from each worker
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(pool) -> None:
    """Terminate the pool's worker processes (after an error or Ctrl-C in the parent), so the
    parent neither waits for their current task nor leaves them running."""
    procs = getattr(pool, "_processes", None) or {}
    for p in list(procs.values()):
        try:
            p.terminate()
        except Exception:  # noqa: BLE001 - already gone
            pass


def _report(nbytes: int = 0, nclips: int = 0) -> None:
    q = _PROGRESS_QUEUE
    if q is not None and (nbytes or nclips):
        try:
            q.put_nowait((nbytes, nclips))
        except Exception:  # pragma: no cover - progress is best effort
            pass


def _error_tuple(e: BaseException, where: str) -> tuple[str, str | None, int | None]:
    """``(message, path, line)`` of a per-file error; the message is cut to a readable length."""
    if isinstance(e, DataFormatError):
        msg = str(e)
        prefix = f"{e.path}:{e.line}: " if e.line is not None else f"{e.path}: "
        if e.path is not None and msg.startswith(prefix):
            msg = msg[len(prefix):]
        return shorten(msg), e.path if e.path is not None else where, e.line
    return shorten(f"{type(e).__name__}: {e}"), where, None


def _resample_hook(fps: float, transform, name: str, data: BvhData, labels, src: str):
    """Worker hook: the previous transform, then resampling to ``fps`` in numpy."""
    if transform is not None:
        data, labels = transform(name, data, labels, src)
    return data.resample(fps), labels


def _retarget_hook(maps, transform, name: str, data: BvhData, labels, src: str):
    """Worker hook: the user's transform, then a numpy retarget to SMPL-22 with the first of
    ``maps`` (``(key, mapping)`` pairs) whose source joints the clip has."""
    from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

    if transform is not None:
        data, labels = transform(name, data, labels, src)
    have = set(data.names)
    for _key, mapping in maps:
        needed = set()
        for spec in mapping:
            needed |= set(spec[1:]) if isinstance(spec, tuple) else {spec}
        if needed <= have:
            return data.retarget(mapping, SMPL22_NAMES, SMPL22_PARENTS), labels
    if len(maps) == 1:
        missing = sorted(needed - have)
        raise DataFormatError(f"joint map {maps[0][0]!r} needs joints missing here: {few(missing, 10)}", src)
    raise DataFormatError(
        f"no registered joint map fits the {len(have)} joints {few(sorted(have), 10)} "
        f"(see mmar.data.clip.register_joint_map)", src
    )


def _parse_one(name, text, jtext, src, jsrc, scale, transform, out, errors) -> None:
    try:
        labels = _parse_labels(jtext, jsrc or src)
    except DataFormatError as e:
        errors.append(_error_tuple(e, jsrc or src))
        labels = None
    try:
        data = parse_bvh_arrays(text, src, scale)
        if transform is not None:
            data, labels = transform(name, data, labels, src)
            data.check_finite("converting")
    except Exception as e:  # reported per file; the load goes on
        errors.append(_error_tuple(e, src))
        return
    out.append(LoadedClip(name, data, labels, src))


def _run_task(task, scale: float, transform: Transform | None, report_clips: bool = True):
    """Worker body: one archive, or a chunk of loose files."""
    kind, paths = task
    out: list[LoadedClip] = []
    errors: list[tuple[str, str | None, int | None]] = []
    if kind == "archive":
        (path,) = paths
        try:
            for name, text, jtext, src, jsrc in iter_archive_raw(path, progress=lambda b: _report(b)):
                n0 = len(out)
                _parse_one(name, text, jtext, src, jsrc, scale, transform, out, errors)
                if report_clips:
                    _report(0, len(out) - n0)
        except DataFormatError as e:
            errors.append(_error_tuple(e, path))
    else:
        for path in paths:
            try:
                name, text, jtext, src, jsrc = _iter_file_raw(path)
            except DataFormatError as e:
                errors.append(_error_tuple(e, path))
                continue
            n0 = len(out)
            _parse_one(name, text, jtext, src, jsrc, scale, transform, out, errors)
            try:
                size = os.path.getsize(path)
            except OSError:
                size = 0
            _report(size, len(out) - n0)
    return out, errors


def _make_tasks(items: list[tuple[str, str]], workers: int):
    """Archives one task each; loose files grouped into chunks of 256 KiB to 8 MiB, about four
    chunks per worker."""
    sizes_of = {}
    for _kind, p in items:
        try:
            sizes_of[p] = os.path.getsize(p)
        except OSError:
            sizes_of[p] = 0
    loose = sum(sizes_of[p] for k, p in items if k == "file")
    chunk_bytes = min(8 << 20, max(256 << 10, loose // max(1, 4 * workers)))
    tasks: list[tuple[str, tuple[str, ...]]] = []
    sizes: list[int] = []
    chunk: list[str] = []
    csize = 0
    for kind, p in items:
        size = sizes_of[p]
        if kind == "archive":
            tasks.append(("archive", (p,)))
            sizes.append(size)
            continue
        chunk.append(p)
        csize += size
        if csize >= chunk_bytes:
            tasks.append(("files", tuple(chunk)))
            sizes.append(csize)
            chunk, csize = [], 0
    if chunk:
        tasks.append(("files", tuple(chunk)))
        sizes.append(csize)
    return tasks, sizes


class _Progress:
    """A rich progress bar over input bytes, with a clip counter; no-op when disabled."""

    def __init__(self, total: int, enabled: bool, description: str):
        self.enabled = enabled
        self.clips = 0
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[clips]} clips"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._p.start()
        self._t = self._p.add_task(description, total=max(total, 1), clips=0)

    def advance(self, nbytes: int, nclips: int) -> None:
        self.clips += nclips
        if self.enabled:
            self._p.update(self._t, advance=nbytes, clips=self.clips)

    def close(self) -> None:
        if self.enabled:
            self._p.update(self._t, completed=self._p.tasks[0].total, clips=self.clips)
            self._p.stop()


class _DirectProgress:
    """Stands in for the worker queue when parsing in this process."""

    def __init__(self, bar: _Progress):
        self.bar = bar

    def put_nowait(self, item) -> None:
        self.bar.advance(*item)


def load_clips(
    inputs,
    scale: float = 1.0,
    workers: int = 2,
    progress: bool = True,
    on_error: str = "warn",
    transform: Transform | None = None,
    description: str = "loading BVH",
    retarget=None,
    fps: float | None = None,
) -> tuple[list, list[DataFormatError]]:
    """Parse every BVH in ``inputs`` into :class:`~mmar.data.clip.Clip` objects.

    Args:
      inputs: a path or list of paths (files, directories, tar archives).
      scale: length unit factor (0.01 for centimetre files).
      workers: processes; ``<= 1`` parses in this process.
      progress: show a rich progress bar (input bytes, clips done).
      on_error: ``"warn"`` (report each bad file with its line and go on), ``"ignore"`` (go on
        silently) or ``"raise"`` (stop at the first bad file).
      transform: optional picklable per-clip hook run in the worker on the parsed
        :class:`~mmar.data.bvh.BvhData`, returning ``(data, labels)``.
      retarget: ``None`` keeps each file's skeleton; a joint-map name of
        :data:`mmar.data.clip.JOINT_MAPS` (or a 22-entry mapping) retargets to SMPL-22 in the
        workers; ``"auto"`` picks the first registered map that fits each file. Retargeting
        here runs in numpy with the rules of :meth:`Clip.retarget` (whose JAX forward
        kinematics compiles once per clip length, slow for thousands of clips). A file no
        map fits is reported like a malformed one.
      fps: resample every clip to this rate in the workers (numpy slerp / lerp on the time
        grid of :meth:`Clip.resample`), after retargeting.

    Returns:
      ``(clips, errors)``: clips in input order (archive member order inside an archive) and
      one :class:`DataFormatError` per file that could not be read.
    """
    if on_error not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_error must be 'warn', 'raise' or 'ignore', got {on_error!r}")
    if retarget is not None:
        from mmar.data.clip import JOINT_MAPS

        if isinstance(retarget, str) and retarget == "auto":
            maps = tuple((k, tuple(v)) for k, v in JOINT_MAPS.items())
        elif isinstance(retarget, str):
            maps = ((retarget, tuple(JOINT_MAPS[retarget])),)
        else:
            maps = (("custom", tuple(retarget)),)
        transform = functools.partial(_retarget_hook, maps, transform)
    if fps is not None:
        from mmar.data.arrays import check_fps

        transform = functools.partial(_resample_hook, check_fps(fps, "fps"), transform)
    items = _expand(inputs)
    tasks, sizes = _make_tasks(items, workers)
    results: list[Any] = [None] * len(tasks)
    bar = _Progress(sum(sizes), progress, description)
    errors: list[DataFormatError] = []

    def take(i, res):
        results[i] = res
        if on_error == "raise" and res[1]:
            raise DataFormatError(res[1][0][0], res[1][0][1], res[1][0][2])

    try:
        if workers <= 1 or len(tasks) <= 1:
            global _PROGRESS_QUEUE
            saved, _PROGRESS_QUEUE = _PROGRESS_QUEUE, (_DirectProgress(bar) if progress else None)
            try:
                for i, t in enumerate(tasks):
                    take(i, _run_task(t, scale, transform))
            finally:
                _PROGRESS_QUEUE = saved
        else:
            ctx = multiprocessing.get_context("spawn")
            q = ctx.Queue() if progress else None
            # largest tasks first, so the last one to finish is small
            order = sorted(range(len(tasks)), key=lambda i: -sizes[i])
            pool = ProcessPoolExecutor(
                max_workers=min(workers, len(tasks)), mp_context=ctx,
                initializer=_init_worker, initargs=(q,),
            )
            failed = True
            try:
                futs = {pool.submit(_run_task, tasks[i], scale, transform): i for i in order}
                pending = set(futs)
                while pending:
                    done = {f for f in pending if f.done()}
                    if q is not None:
                        _drain(q, bar, timeout=0.05 if not done else 0.0)
                    elif not done:
                        time.sleep(0.02)
                    for f in done:
                        pending.discard(f)
                        take(futs[f], f.result())
                if q is not None:
                    _drain(q, bar, timeout=0.0)
                failed = False
            finally:
                if failed:
                    _stop_workers(pool)
                pool.shutdown(wait=not failed, cancel_futures=failed)
    finally:
        bar.close()

    clips = []
    for res in results:
        if res is None:
            continue
        loaded, errs = res
        for msg, path, line in errs:
            err = DataFormatError(msg, path, line)
            errors.append(err)
            if on_error == "warn":
                warnings.warn(f"skipped: {err}", stacklevel=2)
        for lc in loaded:
            clips.append(lc.data.to_clip(lc.name, source=lc.source, labels=lc.labels))
    return clips, errors


def _drain(q, bar: _Progress, timeout: float) -> None:
    try:
        item = q.get(timeout=timeout) if timeout > 0 else q.get_nowait()
    except queue_mod.Empty:
        return
    except Exception:  # pragma: no cover
        return
    bar.advance(*item)
    while True:
        try:
            bar.advance(*q.get_nowait())
        except queue_mod.Empty:
            return
        except Exception:  # pragma: no cover
            return
