"""Run one stage of a plan in a work directory: `python -m builder.stage.execute WORKDIR --stage toolchain`.

The same code runs in-process for the local runner and inside the toolchain
and device images for the docker runner. Each step writes a record
(`work/records/<id>.json`) and a log (`logs/<id>.log`). A failed step does not
stop the others: steps whose inputs it should have made are skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

from builder import records, versions
from builder.errors import BuilderError
from builder.placement import Placement
from builder.plan import Plan, StepCall
from builder.records import StepRecord
from builder.stage.steps import registry
from builder.stage.steps.base import StepContext
from builder.util import atomic_write_bytes, tree_files, tree_sha256
from builder.workdir import LOGS, PLAN, RECORDS, VERSIONS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any step imports TensorFlow

LOG_TAIL = 30
STEPS_FAILED = 3  # exit code: some step failed and said so in its record (1 is Python's uncaught exception)


def load_plan(workdir: Path) -> Plan:
    return Plan.from_json(json.loads((workdir / PLAN).read_text()))


def read_records(workdir: Path) -> dict[str, StepRecord]:
    """The run's step records, validated, by step id."""
    return records.read_records(workdir / RECORDS)


def describe_output(workdir: Path, rel: str) -> dict:
    """Path, sha256 and size of a file, or of a directory tree (sha over its files' hashes)."""
    path = workdir / rel
    return {"path": rel, "sha256": tree_sha256(path), "size": sum(f.stat().st_size for f in tree_files(path))}


def _logger(workdir: Path, call: StepCall, echo: Callable[[str], None] | None) -> tuple[logging.Logger, logging.Handler]:
    log_path = workdir / LOGS / f"{call.id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_bytes(b"")
    handler = logging.FileHandler(log_path, mode="a", encoding="utf-8")  # appends, as the tools' output does
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger(f"edge_builder.step.{call.id}")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.handlers = [handler]
    if echo:
        echo_handler = logging.Handler()
        echo_handler.emit = lambda record: echo(f"    {record.levelname.lower()}: {record.getMessage()}")  # type: ignore[method-assign]
        log.handlers.append(echo_handler)
    # Library loggers (builder.stage.convert.*, builder.host.fetch ...) go to the step log too.
    logging.getLogger("builder").handlers = [handler]
    logging.getLogger("builder").setLevel(logging.INFO)
    return log, handler


@contextmanager
def tool_output_to(log_path: Path):
    """Everything written to fds 1 and 2 (TensorFlow, absl, oneDNN and the other libraries' C++ and Python
    output) goes to the step's log instead of the console."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


_FINISHED = re.compile(r"^\s*< (\S+) ok \(")


def finished_step(line: str) -> str | None:
    """The id of the step a console line of run_stage says has just finished ok (its record is written)."""
    found = _FINISHED.match(line)
    return found[1] if found else None


def step_files(call: StepCall) -> list[str]:
    """What a finished step leaves in the run, relative to it: its record, its log and its outputs."""
    return [f"{RECORDS}/{call.id}.json", f"{LOGS}/{call.id}.log", *call.outputs.values()]


def _tail(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-LOG_TAIL:] if path.exists() else []


def blocked_by_earlier_stages(plan: Plan, done: dict[str, StepRecord], stage: str) -> dict[str, str]:
    """Output path -> the step whose failure kept it from being built, for the other stages' steps
    that did not finish (a skipped step passes on the step it waited for)."""
    outputs = {call.id: call.outputs for call in plan.steps}
    return {rel: rec.blocked_by or rid for rid, rec in done.items()
            if rec.status != "ok" and rec.stage != stage for rel in outputs.get(rid, {}).values()}


def _run(workdir: Path, call: StepCall, log: logging.Logger, placement: Placement) -> dict:
    params = registry.params_of(call.kind, call.params)
    ctx = StepContext(workdir=workdir, call=call, log=log, placement=placement)
    return registry.get(call.kind)().run(ctx, params)


def run_step(workdir: Path, call: StepCall, *, placement: Placement, blocked: dict[str, str],
             echo: Callable[[str], None] | None = None, quiet: bool = False) -> dict:
    """Run one step; with `quiet`, the tools' own output goes to its log only."""
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
        with tool_output_to(workdir / LOGS / f"{call.id}.log") if quiet else nullcontext():
            result = _run(workdir, call, log, placement)
        records.check_result(call.kind, result)  # a result its record cannot hold fails this step, not the report
        record["result"] = result
        record["outputs"] = {name: describe_output(workdir, rel) for name, rel in call.outputs.items()}
        record["status"] = "ok"
    except Exception as exc:  # a failed step is recorded; the run goes on with what does not depend on it
        record["status"] = "failed"
        record["error"] = exc.message if isinstance(exc, BuilderError) else f"{type(exc).__name__}: {exc}"
        record["cause"] = getattr(exc, "cause", None) or ("error" if isinstance(exc, BuilderError) else "crash")
        record["hint"] = getattr(exc, "hint", None)
        record["tool"] = registry.get(call.kind).tool
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
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        handler.close()
    if record["status"] == "failed":
        record["log_tail"] = _tail(workdir / LOGS / f"{call.id}.log")
    return record


def run_stage(workdir: Path, stage: str, *, placement: Placement | None = None,
              echo: Callable[[str], None] | None = None, quiet: bool = False) -> list[dict]:
    """Run every step of `stage` that has no record yet (the cache placed those); return the records
    of the steps run, as written to work/records/."""
    workdir = workdir.resolve()  # steps hand paths to converters that run in other folders
    plan = load_plan(workdir)
    atomic_write_bytes(workdir / VERSIONS / f"{stage}.json", json.dumps(versions.collect(), indent=1).encode())
    done = read_records(workdir)
    blocked = blocked_by_earlier_stages(plan, done, stage)
    ran = []
    for call in plan.stage_steps(stage):
        if call.id in done:
            continue
        if echo:
            echo(f"  > {call.id}")
        record = run_step(workdir, call, placement=placement or Placement(), blocked=blocked, echo=echo,
                          quiet=quiet)
        records.write_record(workdir / RECORDS / f"{call.id}.json", record)
        ran.append(record)
        if echo:
            mark = {"ok": "ok", "failed": "FAILED", "skipped": "skipped"}[record["status"]]
            detail = f": {record['error']}" if record.get("error") else ""
            echo(f"  < {call.id} {mark} ({record['seconds']:.1f} s){detail}")
    return ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m builder.stage.execute", description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--stage", choices=["toolchain", "device"], required=True)
    parser.add_argument("--device", default="host", help="the device's name, for the results")
    parser.add_argument("--engine", default="local", help="the engine the stage runs on, for the results")
    parser.add_argument("--emulated", action="store_true", help="timings are taken under emulation")
    parser.add_argument("--off-target", action="store_true", help="this machine is not of the target's platform")
    parser.add_argument("--verbose", action="store_true", help="the tools' own output on the console too")
    args = parser.parse_args(argv)
    placement = Placement(device=args.device, engine=args.engine, emulated=args.emulated, on_target=not args.off_target)
    console = os.fdopen(os.dup(1), "w", buffering=1)  # stays the console while a step's fds go to its log
    try:
        ran = run_stage(args.workdir, args.stage, placement=placement, quiet=not args.verbose,
                        echo=lambda line: print(line, file=console, flush=True))
    except Exception as exc:  # the stage itself died, not a step: the host fails the steps left without a record
        if args.verbose:
            traceback.print_exc(file=console)
        print(f"the stage died: {type(exc).__name__}: {exc}", file=console, flush=True)
        return 1
    return 0 if all(r["status"] == "ok" for r in ran) else STEPS_FAILED


if __name__ == "__main__":
    sys.exit(main())
