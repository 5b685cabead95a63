"""The run directory: an append-only, crash-safe record of every completion and every verdict.

Layout of a run directory (`--out`):
    config.json         what the run is (model, problems, sampling, ...): a resume must match it
    generations.jsonl   one line per completion: problem_id, sample_index, completion, code, finish_reason, tokens
    verdicts.jsonl      one line per executed program: problem_id, sample_index, results (per test), passed
    summary.json        written at the end (see prompt_tree.tasks.runner)
    .lock               held (fcntl.flock) by the one process writing the directory; it names that process
    generations.rank<d>.jsonl, verdicts.rank<d>.jsonl
                        under torchrun, data-parallel group d's records (RunStore(part=...)); rank 0 merges them
                        into the two files above at the end (prompt_tree.tasks.dp_runner); with --node-dir they live on
                        each node instead and travel to rank 0 through the rendezvous store (prompt_tree.tasks.node_files)

Crash safety: records are only ever appended. Every write is flushed to the OS at once (so a killed process loses
nothing it reported done) and fsynced at most every `fsync_interval` seconds and on close (so a power loss loses at
most that window, and a long run does not pay one fsync per completion). A process killed in the middle of a write
leaves a torn last line: on reload it is dropped (the record is simply redone) and cut off the file before the next
append, so the next record does not glue onto it. A malformed line anywhere else is corruption and an error.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from prompt_tree.parallel.dp import merge_parts, part_paths

CONFIG_FILE = "config.json"
GENERATIONS_FILE = "generations.jsonl"
VERDICTS_FILE = "verdicts.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
# Run-config fields added after runs were already being written, with the value a config.json that lacks one
# meant: such a run resumes as before (config_differences fills them in when the wanted config has them).
# Fields older config.json files lack, with the value those runs had: runs made before the APPS preamble ran
# without it and ran every test (resuming one needs --no-preamble), and had no BOS option and no chat template.
CONFIG_FIELD_DEFAULTS = {"few_shot_source": "embedded", "bos": None, "chat": False, "preamble": False,
                         "fail_fast": False}


class RunDirError(ValueError):
    """A run directory that cannot be used as asked: the message names the file or field and the fix."""


@dataclass
class GenerationRecord:
    """One completion. `code` is what gets executed (extracted from `completion`); tokens = generated token count
    (None for programs imported from a file)."""

    problem_id: str
    sample_index: int
    completion: str
    code: str
    finish_reason: str
    tokens: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample_index)


@dataclass
class VerdictRecord:
    """The checker's verdict on one program: results[t] is True / False / -1 (runtime error or timeout) /
    -2 (compile error) for test t; passed = every test True; error = why the first failing test failed.
    duplicate_of: set when the program was not run because an identical one of the same problem was (its
    sample index; the verdict is that run's). Records written before these fields existed load with None."""

    problem_id: str
    sample_index: int
    results: list = field(default_factory=list)
    passed: bool = False
    error: str | None = None  # the checker's word on the first test that did not pass ('wrong answer', ...)
    duplicate_of: int | None = None  # same program (trailing whitespace aside) as this sample, which ran
    tests: int | None = None  # the problem's test count; more than len(results) after --fail-fast stopped

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample_index)


def read_jsonl(path: str, truncate_torn: bool = False) -> list[dict]:
    """All complete records of a JSONL file ([] if it does not exist).

    A last line without its newline, or one that does not parse, is a torn write and is dropped; with
    truncate_torn it is also cut off the file so appends start on a fresh line. Any other bad line raises
    RunDirError naming the file and line.
    """
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    records: list[dict] = []
    good_end = 0  # byte offset just past the last complete, valid line
    pos = 0
    line_no = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        line_no += 1
        last = nl < 0 or nl == len(data) - 1
        raw = data[pos:] if nl < 0 else data[pos:nl]
        try:
            rec = json.loads(raw.decode("utf-8")) if raw.strip() else None
            ok = nl >= 0 and (rec is None or isinstance(rec, dict))
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
            rec = None
        if not ok:
            if last:
                break  # torn tail: dropped (and truncated below when asked)
            raise RunDirError(
                f"{path}: line {line_no} is not a JSON object ({raw[:80]!r}); the file is corrupt in the middle, "
                f"not just torn at the end: repair or delete that line, or start afresh with --force"
            )
        if rec is not None:
            records.append(rec)
        pos = nl + 1
        good_end = pos
    if truncate_torn and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    return records


class JsonlAppender:
    """Appends JSON records to a file, one per line; thread-safe. Flushes every write, fsyncs every
    `fsync_interval` seconds (0 = every write) and on close."""

    def __init__(self, path: str, fsync_interval: float = 1.0):
        self.path = path
        self.fsync_interval = fsync_interval
        self._f = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._last_sync = time.monotonic()

    def write(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not lines:
            return
        with self._lock:
            # One write call per batch: a torn write can only tear the batch's last line.
            self._f.write(lines)
            self._f.flush()
            now = time.monotonic()
            if now - self._last_sync >= self.fsync_interval:
                os.fsync(self._f.fileno())
                self._last_sync = now

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()


def config_differences(saved: dict, wanted: dict) -> list[str]:
    """Fields whose values differ between two configs, as 'name: saved -> wanted' strings (sorted by name). A
    field of CONFIG_FIELD_DEFAULTS missing from `saved` (written before it existed) counts as its default."""
    saved = dict(saved)
    for name, default in CONFIG_FIELD_DEFAULTS.items():
        if name in wanted and name not in saved:
            saved[name] = default
    out = []
    for name in sorted(set(saved) | set(wanted)):
        a, b = saved.get(name, "<absent>"), wanted.get(name, "<absent>")
        if a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def write_json_atomic(path: str, value: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      ensure_ascii: bool = True) -> None:
    """Write `value` as JSON so that `path` holds either its old content or the whole new one, on disk
    (written beside, fsynced, renamed over): a run killed mid-write never leaves half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_run_dir(out_dir: str) -> None:
    """Create the run directory (and its parents) if needed; RunDirError naming --out if that cannot be done."""
    if os.path.isdir(out_dir):
        return
    if os.path.exists(out_dir):
        raise RunDirError(f"--out {out_dir!r} is a file, not a directory; pass --out a directory path (an existing "
                          f"run directory to resume, or a new one)")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"--out {out_dir!r}: cannot create the run directory ({e.strerror or e}); pass --out a "
                          f"directory path whose parents are directories you can write") from None


class RunLock:
    """An exclusive lock on a run directory for as long as one process writes it (two writers would lose and
    duplicate records). A second process gets RunDirError naming the directory and the holder's pid. The lock
    is an flock on LOCK_FILE, which the kernel releases when the holder ends, however it ends; a clean release
    also removes the file (the directory then holds only the run's records). Removing a lock file is safe
    because a taker checks, once it holds the flock, that the path still names the file it locked."""

    def __init__(self, out_dir: str):
        make_run_dir(out_dir)
        self.path = os.path.join(out_dir, LOCK_FILE)
        self.fd: int | None = None
        for _ in range(100):  # retried only if a releasing holder removed the file in between
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirError(f"{out_dir} is in use by another prompt-tree process (pid {holder}): two "
                                  f"processes writing one run directory lose and duplicate records. Wait for it "
                                  f"to finish, or use another --out directory") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                break
            os.close(fd)
        else:
            raise RunDirError(f"{out_dir}: could not take the run directory's lock ({LOCK_FILE} keeps changing)")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)  # while still holding it (see the class docstring)
            except OSError:
                pass
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunStore:
    """One run directory, open for resuming: what is already done, and appenders for what comes next.

    open(out_dir, config, force): creates the directory, or checks its config.json equals `config` (a
    JSON-safe dict of the fields that decide the results). A different config raises RunDirError naming the
    differing fields unless force, which deletes this run's files and starts afresh.

    part: the store of one data-parallel group (prompt_tree.tasks.dp_runner): it knows the run's records (the normal files,
    read only) plus its own, and appends to generations.<part>.jsonl / verdicts.<part>.jsonl. config.json must
    already be there and equal `config` (rank 0 checked it; a part never rewrites it). merged=False: out_dir is
    a node's own directory (prompt_tree.tasks.node_files), which holds no merged files.
    """

    def __init__(self, out_dir: str, config: dict, force: bool = False, fsync_interval: float = 1.0,
                 part: str | None = None, merged: bool = True):
        self.out_dir = out_dir
        self.config = json.loads(json.dumps(config))  # normalize (tuples -> lists) so it compares as saved
        make_run_dir(out_dir)
        self.config_path = os.path.join(out_dir, CONFIG_FILE)
        suffix = f".{part}" if part else ""
        self.generations_path = os.path.join(out_dir, GENERATIONS_FILE.replace(".jsonl", suffix + ".jsonl"))
        self.verdicts_path = os.path.join(out_dir, VERDICTS_FILE.replace(".jsonl", suffix + ".jsonl"))
        self.summary_path = os.path.join(out_dir, SUMMARY_FILE)
        if part is None:
            self._check_config(force)
        else:
            self._check_part_config()
        self.generations: dict[tuple[str, int], GenerationRecord] = {}
        self.verdicts: dict[tuple[str, int], VerdictRecord] = {}
        if part is not None and merged:  # the run's merged records first (read only: rank 0 owns the normal files)
            self._load(os.path.join(out_dir, GENERATIONS_FILE), os.path.join(out_dir, VERDICTS_FILE), False)
        self._load(self.generations_path, self.verdicts_path, True)
        self.resumed_generations = len(self.generations)
        self.resumed_verdicts = len(self.verdicts)
        self._lock = threading.Lock()
        self._gen_out = JsonlAppender(self.generations_path, fsync_interval)
        self._ver_out = JsonlAppender(self.verdicts_path, fsync_interval)

    def _load(self, generations_path: str, verdicts_path: str, truncate_torn: bool) -> None:
        for rec in read_jsonl(generations_path, truncate_torn=truncate_torn):
            g = _parse(GenerationRecord, rec, generations_path)
            self.generations.setdefault(g.key, g)  # the first record of a key wins (duplicates are identical)
        for rec in read_jsonl(verdicts_path, truncate_torn=truncate_torn):
            v = _parse(VerdictRecord, rec, verdicts_path)
            self.verdicts.setdefault(v.key, v)

    def _check_part_config(self) -> None:
        try:
            with open(self.config_path, encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(f"{self.config_path}: a group's store needs the run's config.json ({e})") from None
        diffs = config_differences(saved, self.config)
        if diffs:
            raise RunDirError(f"{self.config_path} differs from this group's configuration:\n  " + "\n  ".join(diffs))

    def _check_config(self, force: bool) -> None:
        """Resume only into a run made with the same config; a directory holding no records is reused freely
        (nothing was produced under its old settings, e.g. a run that failed at start-up)."""
        if self._has_records():
            if os.path.exists(self.config_path):
                try:
                    with open(self.config_path, encoding="utf-8") as f:
                        saved = json.load(f)
                except (OSError, json.JSONDecodeError) as e:
                    saved = {"<unreadable config.json>": str(e)}
                diffs = config_differences(saved, self.config)
                if not diffs:
                    return
                why = "holds a run with a different configuration; refusing to resume into it.\n  " + "\n  ".join(diffs)
            else:
                why = f"has result files but no {CONFIG_FILE}, so it cannot be checked for resuming"
            if not force:
                raise RunDirError(
                    f"{self.out_dir} {why}\nUse another --out directory, or pass --force to delete that run's files "
                    f"and start afresh."
                )
        for path in (self.generations_path, self.verdicts_path, self.summary_path):  # start afresh
            if os.path.exists(path):
                os.remove(path)
        self._write_config()

    def _has_records(self) -> bool:
        return any(os.path.exists(p) and os.path.getsize(p) > 0 for p in (self.generations_path, self.verdicts_path))

    def _write_config(self) -> None:
        write_json_atomic(self.config_path, self.config, sort_keys=True)

    # ---- appending (thread-safe) -----------------------------------------------------------------------------
    def add_generations(self, records: list[GenerationRecord]) -> list[GenerationRecord]:
        """Record completions (those already recorded are skipped); returns the ones newly written."""
        return self._add(records, self.generations, self._gen_out)

    def add_verdicts(self, records: list[VerdictRecord]) -> list[VerdictRecord]:
        """Record verdicts (those already recorded are skipped); returns the ones newly written."""
        return self._add(records, self.verdicts, self._ver_out)

    def _add(self, records: list, table: dict, out) -> list:
        """Records not in `table` yet: into it and, unless out is None, appended to its file."""
        with self._lock:
            new = [r for r in records if r.key not in table]
            for r in new:
                table[r.key] = r
        if out is not None:
            out.write(asdict(r) for r in new)
        return new

    def absorb(self, records: dict, source: str, write: bool = True) -> tuple[int, int]:
        """Take in records that travelled as JSON ({"generations": [...], "verdicts": [...]}, from another
        node: prompt_tree.tasks.node_files): appended like any others, or with write=False only known (a node's store learns
        what the run already holds). Returns (generations, verdicts) new to this store."""
        gens = [_parse(GenerationRecord, r, source) for r in records.get("generations", ())]
        vers = [_parse(VerdictRecord, r, source) for r in records.get("verdicts", ())]
        return (len(self._add(gens, self.generations, self._gen_out if write else None)),
                len(self._add(vers, self.verdicts, self._ver_out if write else None)))

    def read_summary(self) -> dict | None:
        """summary.json as the last invocation that finished wrote it; None if there is none (or it is unreadable:
        it is rewritten from the records at the end of every invocation)."""
        try:
            with open(self.summary_path) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.summary_path, summary)

    def close(self) -> None:
        self._gen_out.close()
        self._ver_out.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse(cls, rec: dict, path: str):
    try:
        obj = cls(**rec)
    except TypeError as e:
        raise RunDirError(f"{path}: record {rec!r} does not fit {cls.__name__} ({e}); the file is not from this tool "
                          f"or from another version: use another --out directory or --force") from None
    obj.problem_id = str(obj.problem_id)
    obj.sample_index = int(obj.sample_index)
    return obj


def jsonable(x: Any) -> Any:
    """Verdict lists may hold numpy bools / ints from a checker; make them plain JSON values."""
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, bool) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    return x


def record_key(record: dict) -> tuple[str, int]:
    return (str(record["problem_id"]), int(record["sample_index"]))


def fold_parts(out_dir: str) -> int:
    """Merge every group file in out_dir into the normal files and delete them; returns the records added."""
    added = 0
    for name in (GENERATIONS_FILE, VERDICTS_FILE):
        path = os.path.join(out_dir, name)
        parts = part_paths(path)
        if parts:
            added += merge_parts(path, parts, key=record_key, read=lambda p: read_jsonl(p, truncate_torn=True))
    return added
