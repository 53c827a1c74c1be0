"""`builder verify`: build a recipe twice into clean folders and compare the artifacts' sha256.

Both runs use the same runner (so the same images) and the same cached inputs;
any difference comes from the converters themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

from builder.run import Echo, Runner, run_recipe
from builder.workdir import MANIFEST

# Artifacts known to differ between clean runs, by (format, precision), and why. Measured on the
# quickstart: every TFLite artifact (TF converter and onnx2tf) and the OpenVINO fp32/fp16 IR are
# bit-identical; NNCF int8 weights (.bin) are too, only its .xml may differ.
KNOWN_NONDETERMINISM: dict[tuple[str, str], str] = {
    ("openvino", "int8"): "OpenVINO names unnamed nodes from a process-wide counter (Constant_226064 in one run, "
                          "Constant_226063 in the other) and NNCF creates nodes from several threads: the .xml's "
                          "generated names differ, the weights (.bin) and the graph do not",
}


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
            info = a[path]
            entry["reason"] = KNOWN_NONDETERMINISM.get(
                (info.get("format"), info.get("precision")),
                "unexpected: the converter is not deterministic here; compare the two files' logs",
            )
        out[path] = entry
    return out


def verify(recipe_path: Path, target_id: str, runner: Runner, out: Path, variants: list[str] | None = None,
           echo: Echo = print) -> dict:
    """Run twice into `out`/a and `out`/b; return the comparison of every artifact."""
    workdirs = []
    for run in ("a", "b"):
        echo(f"verify: clean run {run} of {recipe_path} on {target_id}")
        workdirs.append(run_recipe(Path(recipe_path), target_id, runner, out=Path(out) / run, variants=variants,
                                   echo=echo).workdir)
    manifests = [json.loads((w / MANIFEST).read_text()) for w in workdirs]
    artifacts = compare(*manifests)
    for path, entry in artifacts.items():
        echo(f"verify: {path}: " + ("identical" if entry["identical"] else f"DIFFERS ({entry['reason']})"))
    return {"recipe": str(recipe_path), "target": target_id, "runs": [str(w) for w in workdirs],
            "identical": all(e["identical"] for e in artifacts.values()), "artifacts": artifacts}
