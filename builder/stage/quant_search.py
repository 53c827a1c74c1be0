"""Accuracy-aware quantization: the fastest candidate that meets the variant's gates, within a bound.

A format's search step proposes candidates in the order it expects them to run, fastest first:
a ladder (full int8, then int8 with more and more of its most sensitive layers kept in float),
then fallbacks whose speed cannot be guessed in advance (int16x8, fp16). Each candidate is built,
compared with the fp32 model on the validation samples under the gates, and timed briefly.

The first ladder candidate that passes every gate (decided, not within its interval) wins; failing
that, the fastest fallback that does; failing that, the most accurate candidate, named as missing
its gates, so that the variant's own validation fails it. The ladder is a generator given the
candidates tried so far, so a step computes layer sensitivities only once full int8 has failed, on
the closest int8 candidate.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder import formats
from builder.errors import BuilderError
from builder.records import SearchCandidate, SearchResult

QUICK_RUNS = 20  # timed runs per candidate: enough to order them, the benchmark step measures the winner


@dataclass
class Candidate:
    name: str
    description: str
    build: Callable[[Path], dict]  # writes the model at the given path; returns its converter report
    fallback: bool = False  # tried after the ladder, all of them: the fastest passing one wins
    kept_float: list[str] = field(default_factory=list)


Ladder = Callable[[Sequence[SearchCandidate]], Iterator[Candidate]]  # given the candidates tried so far


@dataclass
class Judge:
    """How a candidate is measured: against the fp32 model's outputs on the samples, under the gates."""

    samples: np.ndarray
    reference: list[list[np.ndarray]]
    gates: dict[str, float]
    task: str
    runtime: str
    threads: int
    photos: int  # the distinct photos the samples were cut from: what the intervals count

    def __call__(self, path: Path) -> dict:
        from builder.stage import timing
        from builder.stage.runtimes import load
        from builder.stage.steps.measure import add_intervals, agreement, check_gates, model_size

        session = load(path, runtime=self.runtime, threads=self.threads)
        outputs = [session.run([s]) for s in self.samples]
        figures = agreement(self.task, self.reference, outputs) | {"photos": self.photos}
        add_intervals(figures)
        finite = all(np.isfinite(v) for v in figures.values() if isinstance(v, float))
        timed = timing.measure(session, warmup=3, runs=QUICK_RUNS)
        return {"figures": figures, "gates": check_gates(self.gates, figures) if finite else [],
                "finite": finite, "p50_ms": timed["p50_ms"], "size_bytes": model_size(path)}


@dataclass
class Budget:
    max_candidates: int
    max_minutes: float


def search(ladder: Ladder, fallbacks: list[Candidate], judge: Judge, folder: Path, suffix: str,
           budget: Budget, log: logging.Logger) -> tuple[SearchResult, Path | None]:
    """Try the ladder, then the fallbacks (built under `folder`); the budget keeps room for the fallbacks.
    Return the result and the chosen model."""
    tried: list[SearchCandidate] = []
    paths: dict[str, Path] = {}
    started = time.monotonic()
    stop = ""

    def attempt(candidate: Candidate, limit: int) -> bool:
        """Try one candidate; False when the budget is spent."""
        nonlocal stop
        if time.monotonic() - started > budget.max_minutes * 60:
            stop = f"max_minutes {budget.max_minutes:g} ended the search after {len(tried)} candidates"
            return False
        if len(tried) >= limit:
            stop = (f"max_candidates {budget.max_candidates} ended the int8 ladder after {limit} candidates"
                    + (f", keeping {len(fallbacks)} for the fallbacks" if fallbacks else ""))
            return False
        entry, path = _try(candidate, judge, built_at(folder, candidate.name, suffix), log)
        tried.append(entry)
        if path:
            paths[candidate.name] = path
        return True

    ladder_limit = max(1, budget.max_candidates - len(fallbacks))
    for candidate in ladder(tried):
        if not attempt(candidate, ladder_limit) or tried[-1].passed:
            break
    if not any(c.passed for c in tried):
        for candidate in fallbacks:
            if not attempt(candidate, budget.max_candidates):
                break
    chosen, why = _choose(tried)
    if stop:
        why = f"{why}; {stop}"
    log.info("search: %s", why)
    return SearchResult(candidates=tried, chosen=chosen, why=why, max_candidates=budget.max_candidates,
                        max_minutes=budget.max_minutes), paths.get(chosen) if chosen else None


def built_at(folder: Path, name: str, suffix: str) -> Path:
    """Where the search builds the candidate `name`."""
    return folder / name / f"model{suffix}"


def _try(candidate: Candidate, judge: Judge, path: Path, log: logging.Logger) -> tuple[SearchCandidate, Path | None]:
    log.info("candidate %s: %s", candidate.name, candidate.description)
    base = {"name": candidate.name, "description": candidate.description, "fallback": candidate.fallback,
            "kept_float": candidate.kept_float}
    started = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = candidate.build(path)
        measured = judge(path)
    except BuilderError as exc:  # one candidate that does not build or run is a finding, not the end
        log.warning("candidate %s failed: %s", candidate.name, exc.message)
        return SearchCandidate(**base, status="failed", error=exc.message,
                               seconds=round(time.monotonic() - started, 1)), None
    base["kept_float"] = candidate.kept_float or report.get("kept_float", [])  # some builders find out themselves
    gates = measured["gates"]
    passed = measured["finite"] and all(g["outcome"] == "pass" for g in gates)
    entry = SearchCandidate(**base, status="ok", passed=passed, p50_ms=measured["p50_ms"],
                            size_bytes=measured["size_bytes"], agreement=measured["figures"], gates=gates,
                            seconds=round(time.monotonic() - started, 1))
    log.info("candidate %s: %s, p50 %.3f ms, %s", candidate.name, "meets the gates" if passed else "misses them",
             entry.p50_ms, ", ".join(f"{g['metric']} {g['value']:.4f} {g['outcome']}" for g in gates) or "no gates")
    return entry, path


def _choose(tried: list[SearchCandidate]) -> tuple[str | None, str]:
    built = [c for c in tried if c.status == "ok"]
    if not built:
        return None, "no candidate could be built"
    ladder = next((c for c in built if c.passed and not c.fallback), None)
    if ladder:
        return ladder.name, f"{ladder.name} is the first of the int8 ladder that meets every gate"
    fallbacks = sorted((c for c in built if c.passed), key=lambda c: c.p50_ms)
    if fallbacks:
        return fallbacks[0].name, f"no int8 candidate met the gates; {fallbacks[0].name} is the fastest fallback that does"
    best = max(built, key=closeness)
    return best.name, f"no candidate met the gates; {best.name} came closest (kept so that validation reports it)"


def closeness(c: SearchCandidate) -> tuple[float, float, float]:
    """Closeness to the gates: how many pass, then the first gated figure, then speed."""
    return (sum(g.outcome == "pass" for g in c.gates), (c.gates[0].value or 0.0) if c.gates else 0.0, -c.p50_ms)


def place(chosen: Path, out: Path) -> None:
    """Move the chosen model (and its companion files) to the step's output path."""
    fmt = formats.of_file(chosen.name)
    for src, dst in zip(fmt.files(chosen), fmt.files(out)) if fmt else [(chosen, out)]:
        shutil.move(src, dst)
