"""`builder verify`: build a recipe twice into clean folders and compare the artifacts' sha256.

Both runs use the same runner (so the same images) and the same cached inputs;
any difference comes from the converters themselves. Measured on the quickstart:
every artifact of the CPU targets, fp32 to int8, is bit-identical (an IR once its
auto-generated node names are made positional).
"""

from __future__ import annotations

import json
from pathlib import Path

from builder.errors import StepError
from builder.host.run import Echo, Runner, run_recipe
from builder.workdir import MANIFEST


def artifact_hashes(manifest: dict) -> dict[str, dict]:
    return {a["path"]: a for a in manifest["artifacts"]}


def compare(manifest_a: dict, manifest_b: dict) -> dict[str, dict]:
    """Per artifact path: {identical, sha256_a, sha256_b} and, when they differ, a reason."""
    a, b = artifact_hashes(manifest_a), artifact_hashes(manifest_b)
    out = {}
    for path in sorted(a.keys() | b.keys()):
        sha_a, sha_b = (a.get(path) or {}).get("sha256"), (b.get(path) or {}).get("sha256")
        entry = {"identical": sha_a is not None and sha_a == sha_b, "sha256_a": sha_a, "sha256_b": sha_b}
        if sha_a is None or sha_b is None:
            entry["reason"] = f"not produced by run {'a' if sha_a is None else 'b'}"
        elif not entry["identical"]:
            entry["reason"] = ("not deterministic: the two runs' step logs and work/records show where they "
                               "diverge (a converter without a seed, thread-order dependent calibration, ...)")
        out[path] = entry
    return out


def verify(recipe_path: Path, target_id: str, runner: Runner, out: Path, variants: list[str] | None = None,
           echo: Echo = print, trust_remote_code: bool = False) -> dict:
    """Run twice into `out`/a and `out`/b; return the comparison of every artifact."""
    workdirs = []
    for run in ("a", "b"):
        echo(f"verify: clean run {run} of {recipe_path} on {target_id}")
        workdirs.append(run_recipe(Path(recipe_path), target_id, runner, out=Path(out) / run, variants=variants,
                                   echo=echo, trust_remote_code=trust_remote_code).workdir)
    manifests = [json.loads((w / MANIFEST).read_text()) for w in workdirs]
    artifacts = compare(*manifests)
    for path, entry in artifacts.items():
        echo(f"verify: {path}: " + ("identical" if entry["identical"] else f"DIFFERS ({entry['reason']})"))
    result = {"recipe": str(recipe_path), "target": target_id, "runs": [str(w) for w in workdirs],
              "identical": all(e["identical"] for e in artifacts.values()), "artifacts": artifacts}
    (Path(out) / "verify.json").write_text(json.dumps(result, indent=2))
    if not result["identical"]:
        differing = [p for p, e in artifacts.items() if not e["identical"]]
        raise StepError(f"not reproducible: {', '.join(differing)} differ between two clean runs",
                        hint=f"details in {Path(out) / 'verify.json'}")
    return result
