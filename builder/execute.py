"""Run one stage of a plan in a work directory: `python -m builder.execute WORKDIR --stage toolchain`.

The same code runs in-process for the local runner and inside the toolchain
and device images for the docker runner. Each step writes a record
(`work/records/<id>.json`) and a log (`logs/<id>.log`). A failed step does not
stop the others: steps whose inputs it should have made are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from builder import versions
from builder.errors import BuilderError
from builder.placement import Placement
from builder.plan import Plan
from builder.steps import registry
from builder.steps.base import StepCall, StepContext
from builder.util import atomic_write_bytes, sha256_file, tree_files
from builder.workdir import LOGS, PLAN, RECORDS, VERSIONS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any step imports TensorFlow

LOG_TAIL = 30


def load_plan(workdir: Path) -> Plan:
    return Plan.from_json(json.loads((workdir / PLAN).read_text()))


def read_records(workdir: Path) -> dict[str, dict]:
    folder = workdir / RECORDS
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def describe_output(workdir: Path, rel: str) -> dict:
    """Path, sha256 and size of a file, or of a directory tree (sha over its files' hashes)."""
    path = workdir / rel
    files = tree_files(path)
    if path.is_file():
        return {"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size}
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
    return {"path": rel, "sha256": digest.hexdigest(), "size": sum(f.stat().st_size for f in files)}


def _logger(workdir: Path, call: StepCall, echo: Callable[[str], None] | None) -> tuple[logging.Logger, logging.Handler]:
    log_path = workdir / LOGS / f"{call.id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger(f"edge_builder.step.{call.id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.handlers = [handler]
    if echo:
        echo_handler = logging.Handler()
        echo_handler.emit = lambda record: echo(f"    {record.levelname.lower()}: {record.getMessage()}")  # type: ignore[method-assign]
        log.handlers.append(echo_handler)
    # Library loggers (builder.convert.*, builder.fetch ...) go to the step log too.
    logging.getLogger("builder").handlers = [handler]
    logging.getLogger("builder").setLevel(logging.INFO)
    return log, handler


def _tail(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-LOG_TAIL:] if path.exists() else []


def blocked_by_earlier_stages(plan: Plan, records: dict[str, dict], stage: str) -> dict[str, str]:
    """Output path -> the step whose failure kept it from being built, for the other stages' steps
    that did not finish (a skipped step passes on the step it waited for)."""
    outputs = {call.id: call.outputs for call in plan.steps}
    return {rel: rec.get("blocked_by") or rid for rid, rec in records.items()
            if rec["status"] != "ok" and rec.get("stage") != stage for rel in outputs.get(rid, {}).values()}


def run_step(workdir: Path, plan: Plan, call: StepCall, *, placement: Placement, blocked: dict[str, str],
             echo: Callable[[str], None] | None = None) -> dict:
    record: dict = {"id": call.id, "kind": call.kind, "stage": call.stage, "variant": call.variant, "outputs": {}}
    missing = [rel for rel in call.inputs.values() if rel in blocked or not (workdir / rel).exists()]
    if missing:
        rel = next((rel for rel in missing if rel in blocked), missing[0])
        root = blocked.get(rel)
        record |= {"status": "skipped", "seconds": 0.0, "blocked_by": root,
                   "error": f"input {rel} was not built" + (f" ({root} failed)" if root else "")}
        for out in call.outputs.values():  # what this step would have made waits on the same root
            blocked[out] = root or call.id
        return record
    log, handler = _logger(workdir, call, echo)
    started = time.perf_counter()
    try:
        step = registry.get(call.kind)
        params = registry.params_of(call.kind, call.params)
        ctx = StepContext(workdir=workdir, recipe=plan.recipe, target=plan.target, call=call, log=log,
                          placement=placement)
        record["result"] = step().run(ctx, params)
        record["outputs"] = {name: describe_output(workdir, rel) for name, rel in call.outputs.items()}
        record["status"] = "ok"
    except Exception as exc:  # a failed step is recorded; the run goes on with what does not depend on it
        record["status"] = "failed"
        record["error"] = exc.message if isinstance(exc, BuilderError) else f"{type(exc).__name__}: {exc}"
        record["cause"] = getattr(exc, "cause", None) or ("error" if isinstance(exc, BuilderError) else "crash")
        record["hint"] = getattr(exc, "hint", None)
        if isinstance(exc, BuilderError):
            if exc.log_tail:
                log.error("tool output:\n%s", "\n".join(exc.log_tail))
        else:  # an unexpected crash: keep the traceback in the step log for the bug report
            log.error("%s", traceback.format_exc())
        log.error("%s", record["error"])
        for rel in call.outputs.values():
            blocked[rel] = call.id
    finally:
        record["seconds"] = round(time.perf_counter() - started, 3)
        handler.close()
    if record["status"] == "failed":
        record["log_tail"] = _tail(workdir / LOGS / f"{call.id}.log")
    return record


def run_stage(workdir: Path, stage: str, *, placement: Placement | None = None,
              echo: Callable[[str], None] | None = None) -> list[dict]:
    """Run every step of `stage`; return their records (also written to work/records/)."""
    workdir = workdir.resolve()  # steps hand paths to tools that run in other folders (tf2onnx, onnx2tf)
    plan = load_plan(workdir)
    atomic_write_bytes(workdir / VERSIONS / f"{stage}.json", json.dumps(versions.collect(), indent=1).encode())
    blocked = blocked_by_earlier_stages(plan, read_records(workdir), stage)
    records = []
    for call in plan.stage_steps(stage):
        if echo:
            echo(f"  > {call.id}")
        record = run_step(workdir, plan, call, placement=placement or Placement(), blocked=blocked, echo=echo)
        atomic_write_bytes(workdir / RECORDS / f"{call.id}.json", json.dumps(record, indent=1, default=str).encode())
        records.append(record)
        if echo:
            mark = {"ok": "ok", "failed": "FAILED", "skipped": "skipped"}[record["status"]]
            detail = f": {record['error']}" if record.get("error") else ""
            echo(f"  < {call.id} {mark} ({record['seconds']:.1f} s){detail}")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m builder.execute", description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--stage", choices=["toolchain", "device"], required=True)
    parser.add_argument("--device", default="host", help="the device's name, for the results")
    parser.add_argument("--engine", default="local", help="the engine the stage runs on, for the results")
    parser.add_argument("--emulated", action="store_true", help="timings are taken under emulation")
    parser.add_argument("--off-target", action="store_true", help="this machine is not of the target's platform")
    args = parser.parse_args(argv)
    placement = Placement(device=args.device, engine=args.engine, emulated=args.emulated, on_target=not args.off_target)
    records = run_stage(args.workdir, args.stage, placement=placement, echo=lambda line: print(line, flush=True))
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
