"""A content-addressed cache of step results, shared by every run, recipe and target.

A step's key is its kind, its resolved params, the sha256 of each input, the
names of its outputs and the environment it runs in (the image's content-hash
tag under docker; tool versions and the project's code under the local runner),
plus the placement for device-stage steps (a benchmark on one device is not a
benchmark on another). The key is known before the step runs, so a hit replaces
running it: its outputs are linked (or copied) into the run and its record is
reused, marked `cached`.

Layout under `<cache>/steps/`:
- `blobs/ab/<sha256>`: each output file once, read-only;
- `entries/ab/<key>.json`: the step's record and, per output, its files' hashes;
- `last/<scope>.json`: the key parts a step last ran with, to say why it runs again.

Never a wrong hit: every blob is checked by sha256 when reused, and an entry with
a missing or corrupt blob is dropped (with a warning) and the step runs again.
Blobs are written before their entry, each through a temp file and a rename, so
a run killed at any point leaves nothing an entry points to half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from builder.host.inputs import cache_dir
from builder.plan import StepCall
from builder.records import StepRecord, as_json
from builder.util import atomic_write_bytes, create_beside, is_within, remove, sha256_file, tree_sha256
from builder.workdir import LOGS

log = logging.getLogger(__name__)

FORMAT = 1  # bump when entries change shape: old ones are then simply never hit
NEW = "not built before"
MADE_NOW = "an input is made in this run"


def step_cache_dir() -> Path:
    return Path(os.environ.get("EDGE_BUILDER_STEP_CACHE") or cache_dir() / "steps")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class StageIdentity:
    """What a stage's steps run in: part of every key."""

    environment: str
    placement: dict
    image: str | None = None  # the image's tag under docker
    machine: dict = field(default_factory=dict)  # the machine it runs on: CPU, cores, the device's own id


def key_parts(call: StepCall, inputs: dict[str, str], identity: StageIdentity) -> dict:
    parts = {"format": FORMAT, "kind": call.kind, "params": call.params, "inputs": inputs,
             "outputs": sorted(call.outputs), "environment": identity.environment}
    if call.stage == "device":  # benchmarks and validations: a figure of one machine is not another's
        parts["placement"] = identity.placement
        parts["machine"] = identity.machine
    return parts


def step_scope(scope: str, call: StepCall) -> str:
    """A step's place in a recipe x target, stable across runs: what `last/` remembers its key parts by."""
    return f"{scope}\0{call.kind}\0{call.variant}\0{sorted(call.outputs.values())}"


def why_different(old: dict | None, new: dict) -> str:
    """A short reason a step runs although it ran before (or that it never did)."""
    if old is None:
        return NEW
    changed = []
    for part in ("params", "inputs"):
        keys = sorted(k for k in {*old.get(part, {}), *new[part]} if old.get(part, {}).get(k) != new[part].get(k))
        changed += [f"{part[:-1] if part == 'inputs' else 'param'} {k}" for k in keys]
    changed += [part for part in ("kind", "outputs", "environment", "placement", "machine", "format")
                if old.get(part) != new.get(part)]
    return ("changed: " + ", ".join(changed)) if changed else "its cache entry is gone"


def _items(entry: dict) -> list[dict]:
    """Every file an entry names (outputs and log): path, sha256, size."""
    outputs = [*entry["files"].values(), *([entry["log"]] if entry.get("log") else [])]
    return [item for output in outputs for item in output["files"]]


class StepCache:
    def __init__(self, root: Path, warn: Callable[[str], None] | None = None):
        self.root = root
        self.warn = warn or log.warning

    # --- paths -------------------------------------------------------------------------------
    def _blob(self, sha: str) -> Path:
        return self.root / "blobs" / sha[:2] / sha

    def _entry(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / f"{key}.json"

    def _last(self, scope: str) -> Path:
        return self.root / "last" / f"{_digest(scope)}.json"

    def _versions(self, environment: str) -> Path:
        return self.root / "versions" / f"{_digest(environment)}.json"

    # --- reading -----------------------------------------------------------------------------
    def last_parts(self, scope: str) -> dict | None:
        try:
            return json.loads(self._last(scope).read_text())
        except (OSError, ValueError):
            return None

    def lookup(self, key: str) -> dict | None:
        """The entry for `key` with every blob checked, or None (a broken entry is dropped)."""
        path = self._entry(key)
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return self._drop(key, f"unreadable entry ({exc})")
        for item in _items(entry):
            blob = self._blob(item["sha256"])
            try:
                if blob.stat().st_size != item["size"] or sha256_file(blob) != item["sha256"]:
                    return self._drop(key, f"{item['path'] or 'its output'} does not match its sha256", blob)
            except FileNotFoundError:
                return self._drop(key, f"{item['path'] or 'its output'} is missing")
        try:
            os.utime(path)  # last used: pruning by age keeps what runs still use
        except FileNotFoundError:  # pruned this very moment
            return None
        return entry

    def _drop(self, key: str, why: str, blob: Path | None = None) -> None:
        self.warn(f"step cache: entry {key[:12]} dropped and rebuilt: {why}")
        self._entry(key).unlink(missing_ok=True)
        if blob is not None:
            blob.unlink(missing_ok=True)
        return None

    def place(self, entry: dict, workdir: Path, call: StepCall) -> None:
        """Put an entry's outputs at the call's output paths, and its log with the run's logs
        (hard links, or copies across file systems)."""
        placed = {rel: entry["files"][name] for name, rel in call.outputs.items()}
        if entry.get("log"):
            placed[f"{LOGS}/{call.id}.log"] = entry["log"]
        for rel, output in placed.items():
            dest = workdir / rel
            remove(dest)
            if output["dir"]:
                dest.mkdir(parents=True)
                for folder in output["dirs"]:
                    (dest / folder).mkdir(parents=True, exist_ok=True)
            for item in output["files"]:
                target = dest / item["path"] if item["path"] else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(self._blob(item["sha256"]), target)
                except OSError:  # another file system, or links not allowed there
                    shutil.copyfile(self._blob(item["sha256"]), target)

    # --- writing -----------------------------------------------------------------------------
    def store(self, key: str, parts: dict, scope: str, workdir: Path, call: StepCall, record: dict) -> None:
        """Keep a finished step's outputs, log and record; blobs first, the entry last. Never what a link
        leads to outside the work dir: a step's output is read only where it really is."""
        paths = [workdir / rel for rel in call.outputs.values()] + [workdir / LOGS / f"{call.id}.log"]
        if escaping := [f for p in paths for f in (p, *(p.rglob("*") if p.is_dir() else ())) if not is_within(workdir, f)]:
            self.warn(f"step cache: {call.id} not kept: {escaping[0].relative_to(workdir)} leads out of the work dir")
            return
        files = {name: self._store_output(workdir / rel) for name, rel in call.outputs.items()}
        log_file = workdir / LOGS / f"{call.id}.log"
        entry = {"format": FORMAT, "key": key, "created": time.time(), "parts": parts, "files": files,
                 "log": self._store_output(log_file) if log_file.is_file() else None, "record": record}
        atomic_write_bytes(self._entry(key), json.dumps(entry, default=str).encode())
        atomic_write_bytes(self._last(scope), json.dumps(parts, default=str).encode())

    def _store_output(self, path: Path) -> dict:
        if path.is_file():
            return {"dir": False, "dirs": [], "files": [self._store_blob(path, "")]}
        files = sorted(p for p in path.rglob("*") if p.is_file())
        dirs = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_dir())
        return {"dir": True, "dirs": dirs, "files": [self._store_blob(f, str(f.relative_to(path))) for f in files]}

    def _store_blob(self, path: Path, rel: str) -> dict:
        sha = sha256_file(path)
        blob = self._blob(sha)
        if not blob.exists():
            fd, tmp = create_beside(blob)
            try:
                with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o444)  # a run's hard link to it must not be edited in place
                os.replace(tmp, blob)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return {"path": rel, "sha256": sha, "size": path.stat().st_size}

    # --- housekeeping ------------------------------------------------------------------------
    def entries(self) -> list[dict]:
        found = []
        for path in sorted((self.root / "entries").glob("*/*.json")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            size = sum(item["size"] for item in _items(entry))
            found.append({"key": entry["key"], "kind": entry["parts"]["kind"], "size": size,
                          "created": entry["created"], "used": path.stat().st_mtime, "path": path})
        return found

    def size(self) -> int:
        return sum(p.stat().st_size for p in (self.root / "blobs").glob("*/*") if p.is_file())

    def prune(self, *, older_than_s: float | None = None, max_bytes: int | None = None,
              grace_s: float = 3600.0) -> tuple[int, int]:
        """Drop entries unused for `older_than_s`, then the least recently used until blobs fit `max_bytes`;
        then blobs no entry names (older than `grace_s`: a run may be storing them right now).
        Returns (entries dropped, bytes freed)."""
        now = time.time()
        entries = sorted(self.entries(), key=lambda e: e["used"])
        dropped = [e for e in entries if older_than_s is not None and now - e["used"] > older_than_s]
        kept = [e for e in entries if e not in dropped]
        if max_bytes is not None:
            total = self.size()
            while kept and total > max_bytes:
                oldest = kept.pop(0)
                dropped.append(oldest)
                total -= oldest["size"]
        for entry in dropped:
            entry["path"].unlink(missing_ok=True)
        referenced = {item["sha256"] for e in kept for item in _items(json.loads(e["path"].read_text()))}
        freed = 0
        for figure in (self.root / "figures").glob("*.svg"):  # report figures, kept by their data (html_report)
            stat = figure.stat()
            if older_than_s is not None and now - stat.st_mtime > older_than_s:
                figure.unlink(missing_ok=True)
                freed += stat.st_size
        for blob in (self.root / "blobs").glob("*/*"):
            stat = blob.stat()
            if blob.name not in referenced and now - stat.st_mtime > grace_s:
                blob.unlink(missing_ok=True)
                freed += stat.st_size
        return len(dropped), freed


class StageCache:
    """One stage of one run against the cache: reuse what is there, keep what ran."""

    def __init__(self, cache: StepCache, workdir: Path, scope: str, identity: StageIdentity, *,
                 reuse: bool = True, remeasure: bool = False):
        self.cache, self.workdir, self.scope, self.identity = cache, workdir, scope, identity
        self.reuse, self.remeasure = reuse, remeasure
        self._hashes: dict[str, str] = {}

    def _input_hashes(self, call: StepCall) -> dict[str, str] | None:
        """sha256 of each input (a tree's over its files), or None when one is not there (yet)."""
        for rel in call.inputs.values():
            if rel not in self._hashes:
                if not (self.workdir / rel).exists():
                    return None
                self._hashes[rel] = tree_sha256(self.workdir / rel)
        return {name: self._hashes[rel] for name, rel in call.inputs.items()}

    def restore(self, call: StepCall, measures: bool) -> dict | None:
        """The step's record, for records.write_record, if the cache holds its result (now placed in the run),
        else None. The record keeps the date it `finished` when it really ran."""
        if not self.reuse or (measures and self.remeasure):
            return None
        inputs = self._input_hashes(call)
        if inputs is None:
            return None
        parts = key_parts(call, inputs, self.identity)
        entry = self.cache.lookup(_digest(parts))
        if entry is None:
            return None
        try:
            self.cache.place(entry, self.workdir, call)
        except OSError as exc:  # a prune removed a file since the lookup: the step runs
            self.cache.warn(f"step cache: {call.id} could not be placed ({exc}); it runs")
            return None
        for name, rel in call.outputs.items():
            self._hashes[rel] = entry["record"]["outputs"][name]["sha256"]
        # an identical step of another variant or recipe made it: the record is this call's
        record = entry["record"]
        outputs = {name: record["outputs"][name] | {"path": rel} for name, rel in call.outputs.items()}
        return record | {"id": call.id, "variant": call.variant, "stage": call.stage, "outputs": outputs,
                         "cached": True}

    def why_it_runs(self, call: StepCall, measures: bool) -> str:
        if not self.reuse:
            return "--no-cache"
        if measures and self.remeasure:
            return "--remeasure"
        inputs = self._input_hashes(call)
        if inputs is None:
            return MADE_NOW
        return why_different(self.cache.last_parts(step_scope(self.scope, call)), key_parts(call, inputs, self.identity))

    def keep_versions(self, path: Path) -> None:
        """The tool versions the stage's environment holds (what a fully cached stage reports)."""
        if path.exists():
            atomic_write_bytes(self.cache._versions(self.identity.environment), path.read_bytes())

    def place_versions(self, path: Path) -> bool:
        try:
            atomic_write_bytes(path, self.cache._versions(self.identity.environment).read_bytes())
            return True
        except FileNotFoundError:
            return False

    def store(self, call: StepCall, record: StepRecord, folder: Path | None = None) -> None:
        """Keep a step that ran and succeeded (its inputs are still in the run, unchanged, or made by a step
        kept before): the newest result. Its outputs and log are read from `folder` (default: the run)."""
        inputs = self._input_hashes(call)
        if record.status != "ok" or record.cached or inputs is None:
            return
        parts = key_parts(call, inputs, self.identity)  # a step run again (--remeasure) replaces its entry
        self.cache.store(_digest(parts), parts, step_scope(self.scope, call), folder or self.workdir, call,
                         as_json(record))
        for name, rel in call.outputs.items():  # what the next steps' keys read, before the stage copies it out
            self._hashes[rel] = record.outputs[name].sha256


@dataclass(frozen=True)
class CachePolicy:
    """How a run uses the cache: `reuse` off (--no-cache) still keeps what runs; `remeasure` reruns measurements."""

    root: Path
    reuse: bool = True
    remeasure: bool = False

    def stage(self, workdir: Path, scope: str, identity: StageIdentity, warn: Callable[[str], None]) -> StageCache:
        return StageCache(StepCache(self.root, warn), workdir, scope, identity, reuse=self.reuse,
                          remeasure=self.remeasure)


def forecast(calls: list[StepCall], identities: dict[str, StageIdentity], cache: StepCache, previous: Path,
             scope: str, measures: Callable[[str], bool], *, reuse: bool = True, remeasure: bool = False) -> dict:
    """Which steps a run would take from the cache, and why the others would run, without running anything.

    Files no step makes (the fetched source and data) are read from `previous`, the last run's directory."""
    made_by = {rel: call.id for call in calls for rel in call.outputs.values()}
    hashes: dict[str, str] = {}
    status: dict[str, str] = {}
    for call in calls:
        if not reuse or (measures(call.kind) and remeasure):
            status[call.id] = "runs: " + ("--no-cache" if not reuse else "--remeasure")
            continue
        inputs, missing = {}, None
        for name, rel in call.inputs.items():
            if rel in hashes:
                inputs[name] = hashes[rel]
            elif rel in made_by:
                missing = f"its input {name} is made by {made_by[rel]}, which runs"
            elif (previous / rel).exists():
                inputs[name] = hashes[rel] = tree_sha256(previous / rel)
            else:
                missing = f"{rel} is not fetched yet"
            if missing:
                break
        if missing:
            status[call.id] = f"runs: {missing}"
            continue
        parts = key_parts(call, inputs, identities[call.stage])
        try:
            entry = json.loads(cache._entry(_digest(parts)).read_text())
        except (OSError, ValueError):
            status[call.id] = f"runs: {why_different(cache.last_parts(step_scope(scope, call)), parts)}"
            continue
        status[call.id] = "cached"
        hashes |= {rel: entry["record"]["outputs"][name]["sha256"] for name, rel in call.outputs.items()}
    return status
