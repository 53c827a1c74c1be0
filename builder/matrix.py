"""recipes x targets: run each pair (in parallel with --jobs), then one status report over all."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from builder.causes import classify
from builder.errors import BuilderError
from builder.run import Outcome, run_recipe
from builder.util import atomic_write_bytes


def run_matrix(recipes: list[Path], targets: list[str], runner, *, out: Path, variants=None, offline=False,
               jobs: int = 1, echo=print) -> list[Outcome]:
    pairs = [(r, t) for r in recipes for t in targets]

    def one(pair) -> Outcome:
        recipe, target = pair
        try:
            return run_recipe(recipe, target, runner, out=out, variants=variants, offline=offline, echo=echo)
        except BuilderError as exc:
            if exc.exit_code == 2 or len(pairs) == 1:
                raise
            echo(f"[{recipe.stem} / {target}] FAILED: {exc.message}")
            return Outcome(recipe=recipe.stem, target=target, workdir=out, error=exc.message)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(one, pairs))
    if len(pairs) > 1:
        write_status(outcomes, out)
        echo(f"status report: {out / 'status.md'}")
    return outcomes


def write_status(outcomes: list[Outcome], out: Path) -> None:
    """Which model/target/variant succeeded, which failed, why, and what to try (seed 002's report)."""
    rows = []
    for o in outcomes:
        if o.error:
            cause, hint = classify({"status": "failed", "error": o.error})
            rows.append({"recipe": o.recipe, "target": o.target, "variant": "*", "status": "failed",
                         "cause": cause, "error": o.error, "hint": hint})
        for r in o.results:
            f = r.get("failure") or {}
            rows.append({"recipe": o.recipe, "target": o.target, "variant": r["name"], "status": r["status"],
                         "cause": f.get("cause"), "error": f.get("error"), "hint": f.get("hint"),
                         "p50_ms": (r.get("benchmark") or {}).get("p50_ms"),
                         "top1_agreement": (r.get("validation") or {}).get("top1_agreement")})
    atomic_write_bytes(out / "status.json", json.dumps(rows, indent=2).encode())
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] != "ok"]
    lines = ["# Build status", "", f"{len(ok)} succeeded, {len(bad)} did not.", "", "## Succeeded", ""]
    lines += [f"- ✅ {r['recipe']} / {r['target']} / {r['variant']}" for r in ok] or ["- none"]
    lines += ["", "## Not succeeded", ""]
    lines += [f"- ❌ {r['recipe']} / {r['target']} / {r['variant']}: {r['status']}, cause `{r['cause']}`: {r['error']}"
              + (f"\n  - hint: {r['hint']}" if r["hint"] else "") for r in bad] or ["- none"]
    atomic_write_bytes(out / "status.md", ("\n".join(lines) + "\n").encode())
