"""`builder compare OLD NEW`: per recipe/target/variant, how p50 latency, size and accuracy changed.

Noise, for p50: the benchmark measures each run's spread of single inferences, p90 - p50 (about one standard
deviation, a little more for the usual right-skewed latencies). The p50 of n inferences is uncertain by about
spread / sqrt(n), so a change smaller than twice the combined uncertainty of the two p50s,
2 * sqrt(s_old^2 / n_old + s_new^2 / n_new), is within the benchmark's own noise. (min/max was not used: one
outlier sets it.) Accuracy and agreement: within noise when the new value lies inside the old run's 95% interval.
Size has no noise.

`--baseline last-good` takes OLD from the tracking store: for each variant of NEW, the newest run of that variant
that passed (status ok) on the same recipe, target and device, started before NEW and of another build.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from builder.errors import BuilderError, ConfigError
from builder.host.tracked_runs import StoredRun, build_id, device_of, epoch_ms
from builder.records import BenchmarkResult, Results, VariantResult, load_results
from builder.workdir import MANIFEST

BENCHMARK = ("p50_ms", "size_bytes")
VALIDATION = ("top1_accuracy", "top1_agreement", "top5_agreement", "cosine", "detection_f1", "map50", "map", "miou", "psnr_db",
              "cer")
LOWER_IS_BETTER = ("p50_ms", "size_bytes", "cer")
HINT = "give a run's folder (<out>/<recipe>/<target>/), a matrix's --out folder, or a results.json file"


def _results_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
    elif (path / "results.json").is_file():
        files = [path / "results.json"]
    elif path.is_dir():
        files = sorted(path.glob("*/*/results.json"))
    else:
        raise ConfigError(f"{path}: no such file or folder", hint=HINT)
    if not files:
        raise ConfigError(f"{path} holds no results.json", hint=HINT)
    return files


def load(path: Path) -> dict[tuple[str, str], Results]:
    """Every run's results.json under PATH, by (recipe, target)."""
    runs = {}
    for f in _results_files(path):
        try:
            results = load_results(f)
        except BuilderError as exc:
            raise ConfigError(f"{f}: not a results.json written by `builder run` ({exc.message})", hint=HINT) from None
        runs[(results.recipe, results.target)] = results
    return runs


def p50_noise(old: BenchmarkResult, new: BenchmarkResult) -> float:
    """How far apart two benchmarks' p50s can be by chance (see above)."""
    terms = [((b.p90_ms or b.p50_ms) - b.p50_ms) ** 2 / max(1, b.runs or 1) for b in (old, new)]
    return 2 * math.sqrt(sum(terms))


def _figure(name: str, old_section: BaseModel | None, new_section: BaseModel | None) -> dict | None:
    """One figure of a benchmark or validation on both sides, if both have it."""
    before, after = getattr(old_section, name, None), getattr(new_section, name, None)
    if before is None or after is None:
        return None
    change = (after - before) / abs(before) * 100 if before else None
    if name == "p50_ms":
        noise = abs(after - before) <= p50_noise(old_section, new_section)
    elif interval := getattr(old_section, f"{name}_interval", None):
        noise = interval[0] <= after <= interval[1]
    else:
        noise = after == before
    worse = after > before if name in LOWER_IS_BETTER else after < before
    return {"name": name, "old": before, "new": after, "change_pct": change, "noise": noise, "worse": worse and not noise}


def compare_variant(old: VariantResult | None, new: VariantResult | None, pct: float) -> tuple[list[dict], list[str]]:
    """The figures both sides of one variant have, and why it regressed, if it did: a figure worse by more than
    `pct` percent beyond noise, or a status that was ok and is not."""
    figures, why = [], []
    if old and new:
        for name in BENCHMARK + VALIDATION:
            section = "benchmark" if name in BENCHMARK else "validation"
            if fig := _figure(name, getattr(old, section), getattr(new, section)):
                figures.append(fig)
        why = [f"{f['name']} {f['change_pct']:+.1f}%" for f in figures
               if f["worse"] and (f["change_pct"] is None or abs(f["change_pct"]) > pct)]
    new_status = new.status if new else "missing"
    if old and old.status == "ok" and new_status != "ok":
        why.append(f"status ok -> {new_status}")
    return figures, why


def _variants(run: Results | None) -> dict[str, VariantResult]:
    return {v.name: v for v in run.variants} if run else {}


def compare(old_runs: dict[tuple[str, str], Results], new_runs: dict[tuple[str, str], Results],
            pct: float = 0.0) -> list[dict]:
    """One row per recipe/target/variant found in either side."""
    rows = []
    for key in dict.fromkeys([*old_runs, *new_runs]):
        old, new = _variants(old_runs.get(key)), _variants(new_runs.get(key))
        for name in dict.fromkeys([*old, *new]):
            figures, why = compare_variant(old.get(name), new.get(name), pct)
            rows.append({"recipe": key[0], "target": key[1], "variant": name,
                         "old_status": old[name].status if name in old else None,
                         "new_status": new[name].status if name in new else None,
                         "figures": figures, "regression": why})
    return rows


def check(rows: list[dict], pct: float) -> None:
    """--fail-on-regression: exit 1 naming every regression."""
    bad = [f"{r['recipe']}/{r['target']}/{r['variant']}: {', '.join(r['regression'])}" for r in rows if r["regression"]]
    if bad:
        raise BuilderError(f"{len(bad)} regression(s) beyond {pct:g}% and the benchmark's noise: " + "; ".join(bad))


class Store(Protocol):
    """What a baseline is read from: tracking.Store (compare never imports MLflow itself)."""

    def last_good(self, recipe: str, target: str, device: str, variant: str, before_ms: int | None,
                  other_than: str | None) -> StoredRun | None: ...

    def results(self, run: StoredRun) -> Results: ...


def _manifests(path: Path) -> dict[tuple[str, str], dict]:
    """The manifest.json beside each results.json under PATH, by (recipe, target); {} where there is none."""
    found = {}
    for f in _results_files(path):
        try:
            manifest = json.loads((f.parent / MANIFEST).read_text())
            found[(manifest["recipe"]["name"], manifest["target"]["id"])] = manifest
        except (OSError, ValueError, KeyError):
            continue
    return found


def last_good(path: Path, new_runs: dict[tuple[str, str], Results], store: Store,
              warn) -> dict[tuple[str, str], Results]:
    """OLD for `--baseline last-good`: per recipe/target of NEW, each variant's last passing run in the store."""
    manifests = _manifests(path)
    old_runs = {}
    for (recipe, target), new in new_runs.items():
        manifest = manifests.get((recipe, target))
        before = epoch_ms(manifest.get("started")) if manifest else None
        build = build_id(manifest) if manifest else None
        found = []
        for v in new.variants:
            stored = store.last_good(recipe, target, device_of(v, manifest), v.name, before, build)
            if stored is None:
                warn(f"{recipe}/{target}/{v.name}: no passing run on {device_of(v, manifest)} in the tracking store "
                     "to compare with")
                continue
            found += [old for old in store.results(stored).variants if old.name == v.name]
        if found:
            old_runs[(recipe, target)] = Results(recipe=recipe, target=target, variants=found)
    return old_runs
