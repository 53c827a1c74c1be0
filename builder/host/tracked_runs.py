"""What a run folder gives a tracking store: one TrackedRun per variant, read from its typed records
(results.json, manifest.json), and the replay file that keeps them when the store cannot take them.

A TrackedRun is plain data (params, metrics, tags, the run's files): writing it to MLflow is tracking.py's
job, so building one, and keeping it for replay, needs no MLflow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from builder.errors import BuilderError, ConfigError
from builder.records import BenchmarkResult, Results, ValidationResult, VariantResult, load_results
from builder.util import atomic_write_bytes
from builder.workdir import MANIFEST

REPLAY = "tracking-replay.json"
ARTIFACTS = ("report.md", "report.html", MANIFEST, "results.json")
EXPERIMENT = "edge-builder/{recipe}"  # one MLflow experiment per recipe
BENCHMARK_METRICS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_fps", "size_bytes", "peak_rss_mb",
                     "init_ms")
VALIDATION_METRICS = ("top1_agreement", "top5_agreement", "cosine", "snr_db", "top1_accuracy", "accuracy_ratio",
                      "detection_f1", "map50", "map", "miou", "psnr_db", "cer")
GATE_SCORE = {"pass": 1.0, "undecided": 0.5, "fail": 0.0}
BUILD_TAG = "edge_builder.build"  # the variants of one build share it
KEY_TAG = "edge_builder.key"  # one variant of one build


class TrackedRun(BaseModel):
    """One variant of one build, as a tracking store holds it."""

    model_config = ConfigDict(extra="forbid")

    experiment: str
    name: str
    key: str  # the same variant of the same build: logged once, however often it is replayed
    started_ms: int
    finished_ms: int | None = None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[str]  # files of the run folder


@dataclass(frozen=True)
class StoredRun:
    """A run read back from the store: what it was logged with."""

    run_id: str
    started_ms: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


class Replay(BaseModel):
    """`tracking-replay.json`: what a build could not log, for `builder track replay`."""

    model_config = ConfigDict(extra="forbid")

    store: str
    error: str
    runs: list[TrackedRun]


def epoch_ms(iso: str | None) -> int | None:
    return int(datetime.fromisoformat(iso).timestamp() * 1000) if iso else None


def build_id(manifest: dict) -> str:
    """One build of a recipe on a target: the machine, the run's start and its folder's recipe and target."""
    who = [manifest.get("host", {}).get("hostname"), manifest.get("started"), manifest["recipe"]["name"],
           manifest["target"]["id"]]
    return hashlib.sha256(json.dumps(who).encode()).hexdigest()[:16]


def device_of(variant: VariantResult, manifest: dict | None) -> str:
    """Where the variant was timed: its benchmark's device, else where its run placed the device stage."""
    if variant.benchmark and variant.benchmark.device:
        return variant.benchmark.device.device
    placement = ((manifest or {}).get("stages", {}).get("device") or {}).get("placement") or {}
    return placement.get("device", "host")


def _versions(manifest: dict) -> dict[str, str]:
    out = {}
    for stage, found in manifest.get("tool_versions", {}).items():
        out[f"versions.{stage}.python"] = found.get("python", "")
        out |= {f"versions.{stage}.{name}": version for name, version in found.get("packages", {}).items()}
    return out


def _metrics(v: VariantResult) -> dict[str, float]:
    found = {}
    for section, names in ((v.benchmark, BENCHMARK_METRICS), (v.validation, VALIDATION_METRICS)):
        found |= {name: float(value) for name in names if (value := getattr(section, name, None)) is not None}
    gates = v.validation.gates if v.validation else []
    found |= {f"gate.{g.gate}": GATE_SCORE[g.outcome] for g in gates}
    found |= {f"gates_{outcome}": float(sum(g.outcome == word for g in gates))
              for word, outcome in (("pass", "passed"), ("fail", "failed"), ("undecided", "undecided")) if gates}
    return found


def _flags(bench: BenchmarkResult | None, validation: ValidationResult | None) -> dict[str, str]:
    def word(value: bool) -> str:
        return "true" if value else "false"

    return {"cached": word(bool((bench and bench.cached) or (validation and validation.cached))),
            "emulated": word(bool(bench and bench.emulated)),
            "on_target": word(bench.on_target if bench else True),
            "estimate": word(bool(bench and bench.estimate)),
            **({"throttled": ", ".join(bench.throttled)} if bench and bench.throttled else {})}


def variant_run(results: Results, v: VariantResult, manifest: dict, artifacts: list[str]) -> TrackedRun:
    build = build_id(manifest)
    images = manifest.get("images", {})
    params = {"recipe": results.recipe, "recipe_sha256": manifest["recipe"].get("sha256") or "",
              "target": results.target, "variant": v.name, "precision": v.precision, "format": v.format,
              "io_dtype": v.io_dtype, "device": device_of(v, manifest), "runner": manifest.get("runner") or "",
              "edge_builder": manifest.get("tool", {}).get("version", ""),
              **({"runtime": v.benchmark.runtime, "threads": str(v.benchmark.threads)} if v.benchmark else {}),
              **{f"image.{stage}": image["tag"] for stage, image in images.items() if image.get("tag")},
              **_versions(manifest)}
    tags = {"status": v.status, **_flags(v.benchmark, v.validation), BUILD_TAG: build,
            **({"cause": v.failure.cause} if v.failure else {})}
    return TrackedRun(experiment=EXPERIMENT.format(recipe=results.recipe), name=f"{results.target}/{v.name}",
                      key=f"{build}/{v.name}", started_ms=epoch_ms(manifest.get("started")) or 0,
                      finished_ms=epoch_ms(manifest.get("finished")), params=params, metrics=_metrics(v), tags=tags,
                      artifacts=artifacts)


def runs_of(folder: Path) -> list[TrackedRun]:
    """Every variant of the run in `folder` (a run's folder, with its results.json and manifest.json)."""
    results = load_results(folder / "results.json")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BuilderError(f"{folder / MANIFEST}: cannot be read ({exc})") from None
    artifacts = [name for name in ARTIFACTS if (folder / name).is_file()]
    return [variant_run(results, v, manifest, artifacts) for v in results.variants]


def write_replay(folder: Path, store: str, error: str, runs: list[TrackedRun]) -> Path:
    path = folder / REPLAY
    atomic_write_bytes(path, Replay(store=store, error=error, runs=runs).model_dump_json(indent=1).encode())
    return path


def replay_files(path: Path) -> list[Path]:
    """The replay files PATH means: the file itself, a run folder's, or those of the run folders under it."""
    if path.is_file():
        return [path]
    if (path / REPLAY).is_file():
        return [path / REPLAY]
    found = sorted(path.glob(f"*/*/{REPLAY}")) if path.is_dir() else []
    if not found:
        raise ConfigError(f"{path}: no {REPLAY} here", hint="give a replay file, the run folder a build wrote it into "
                                                            "(<out>/<recipe>/<target>/), or a matrix's --out folder")
    return found


def read_replay(path: Path) -> Replay:
    try:
        return Replay.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise ConfigError(f"{path}: not a replay file written by `builder run --track` ({exc})") from None
