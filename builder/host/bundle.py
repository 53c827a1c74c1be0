"""`builder bundle` and `builder collect`: the device stage of a run, carried to a device with no network.

A bundle is one archive: the device image's build context (Dockerfile, lock,
step code and the host-made wheelhouse for the device's platform), the run's
directory after its toolchain stage, and `run.sh`, which needs only `docker` on
the device. `builder collect` takes the folder (or a tar.gz of it) back and
writes the same results, manifest and report as a run with `--device`.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

from builder.errors import ConfigError
from builder.host import images, locks
from builder.host.image_build import ImageBuilder
from builder.host.planner import recipe_hash
from builder.host.run import Echo, Outcome, finish
from builder.host.run_dir import claim
from builder.plan import Plan
from builder.stage.execute import STEPS_FAILED
from builder.util import atomic_write_bytes, is_within, links_outside, remove
from builder.workdir import PLAN, RECORDS, RUN

BUNDLE_INFO = "bundle.json"

RUN_SH = """#!/bin/sh
# The device stage of {recipe} on {target}, for a device with Docker and no network.
# Run it on the device: sh run.sh   (then bring this folder, or results.tar.gz, back to
# the workstation and run: builder collect PATH --out OUT)
set -eu
cd "$(dirname "$0")"
TAG={tag}
if ! docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "building $TAG (first time on this device)"
    docker build -t "$TAG" image
fi
EMULATED=""
[ "$(docker info --format '{{{{.Architecture}}}}')" = "{arch}" ] || EMULATED="--emulated --off-target"
docker run --rm --network none {runtime}--user "$(id -u):$(id -g)" -v "$PWD/run:/work" "$TAG" \\
    python -m builder.stage.execute /work --stage device --device "$(hostname)" --engine local $EMULATED \\
    || [ $? -eq {steps_failed} ]
tar -czf results.tar.gz {info} run
echo "device stage done: bring results.tar.gz back and run: builder collect results.tar.gz"
"""


def write_bundle(plan: Plan, workdir: Path, archive: Path, images_: ImageBuilder, echo: Echo) -> Path:
    """Pack the device stage of the run in `workdir` into `archive` (a .tar.gz)."""
    target = plan.target
    image = images.render_image(target, "device", engine_platform=target.platform, wheelhouse=True)
    info = {"recipe": plan.recipe.name, "target": target.id, "image": image.tag, "platform": image.platform,
            "recipe_sha256": json.loads((workdir / RUN).read_text())["recipe_sha256"]}
    native = locks.ARCHES[image.platform.split("/")[1]]  # what `docker info` says on a native engine
    script = RUN_SH.format(recipe=plan.recipe.name, target=target.id, tag=image.tag, arch=native,
                           runtime=_docker_run_options(target), info=BUNDLE_INFO, steps_failed=STEPS_FAILED)
    device_records = {f"{call.id}.json" for call in plan.stage_steps("device")}
    echo(f"bundling the device stage of {plan.recipe.name} / {target.id} into {archive}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(f".{archive.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        _add_bytes(tar, BUNDLE_INFO, json.dumps(info, indent=1).encode())
        _add_bytes(tar, "run.sh", script.encode(), mode=0o755)
        for name, data in images_.context(image).items():
            if isinstance(data, Path):
                tar.add(data, arcname=f"image/{name}")
            else:
                _add_bytes(tar, f"image/{name}", data)
        tar.add(workdir, arcname="run", filter=lambda m: None if _is_device_record(m.name, device_records) else m)
    tmp.replace(archive)
    return archive


def _docker_run_options(target) -> str:
    """The device stage's container options as `docker run` flags (runtime, groups, environment)."""
    from builder.host.runners.docker import container_options

    options = container_options(target, "device")
    flags = ([f"--runtime {options['runtime']}"] if options["runtime"] else []) + [
        f"--group-add {shlex.quote(g)}" for g in options["group_add"] or []] + [
        f"-e {shlex.quote(f'{k}={v}')}" for k, v in options["env"].items()]
    return "".join(f"{flag} " for flag in flags)


def _is_device_record(name: str, device_records: set[str]) -> bool:
    """A device step's record from an earlier attempt (device-needed): the device writes its own."""
    path = Path(name)
    return path.parent.as_posix() == f"run/{RECORDS}" and path.name in device_records


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mode = len(data), mode
    tar.addfile(member, io.BytesIO(data))


def collect(source: Path, out: Path, echo: Echo) -> Outcome:
    """Bring a bundle that ran on a device back into `out/<recipe>/<target>/` and write its report."""
    with tempfile.TemporaryDirectory(prefix="collect-") as tmp:
        folder = _unpacked(source, Path(tmp))
        run_dir = folder / "run"
        plan = _bundled_plan(folder, source)
        missing = [c.id for c in plan.stage_steps("device") if not (run_dir / RECORDS / f"{c.id}.json").exists()]
        if missing:
            raise ConfigError(f"{source}: the device stage has not run ({len(missing)} step(s) without a record, "
                              f"e.g. {missing[0]})", hint="run `sh run.sh` on the device first")
        dest = out / plan.recipe.name / plan.target.id  # names the plan's own validation holds to one folder
        if not is_within(out, dest.parent):
            raise ConfigError(f"{source}: {out / plan.recipe.name} links outside {out}",
                              hint="collect into an --out folder whose recipe folders are not links")
        with claim(dest) as claimed:
            remove(claimed.staging)
            shutil.copytree(run_dir, claimed.staging, symlinks=True)
            run = json.loads((claimed.staging / RUN).read_text())
            run["collected_from"] = str(source)
            atomic_write_bytes(claimed.staging / RUN, json.dumps(run, indent=1).encode())
            outcome = finish(plan, claimed.staging, run)
            claimed.commit()
    echo(f"collected {plan.recipe.name} / {plan.target.id} from {source}; report: {dest / 'report.md'}")
    return replace(outcome, workdir=dest)


def _bundled_plan(folder: Path, source: Path) -> Plan:
    """The bundle's plan, validated like any plan, and its bundle.json naming the same recipe and target: the
    folder collect replaces comes from these names."""
    try:
        info = json.loads((folder / BUNDLE_INFO).read_text())
        plan = Plan.from_json(json.loads((folder / "run" / PLAN).read_text()))
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{source}: not a bundle this version can read: {str(exc).splitlines()[0]}",
                          hint="give the folder `builder bundle` made, or its results.tar.gz") from exc
    said = (info.get("recipe"), info.get("target")) if isinstance(info, dict) else None
    if said != (plan.recipe.name, plan.target.id):
        raise ConfigError(f"{source}: {BUNDLE_INFO} names {said}, its plan {plan.recipe.name} / {plan.target.id}",
                          hint="the bundle was altered: make it again with `builder bundle`")
    if escaping := links_outside(folder / "run"):
        raise ConfigError(f"{source}: {escaping[0].relative_to(folder)} links outside the bundle",
                          hint="the bundle was altered: make it again with `builder bundle`")
    return plan


def _unpacked(source: Path, tmp: Path) -> Path:
    """The bundle folder: `source` itself, or what a .tar.gz of it (results or whole bundle) holds."""
    if source.is_dir():
        if (source / "results.tar.gz").exists():
            source = source / "results.tar.gz"
        else:
            return _checked(source, source)
    if not tarfile.is_tarfile(source):
        raise ConfigError(f"{source}: neither a bundle folder nor a tar archive", hint="give the bundle's folder "
                          "or the results.tar.gz that its run.sh wrote")
    if not hasattr(tarfile, "data_filter"):  # Python 3.10.12 / 3.11.4 and later: an archive cannot write outside
        raise ConfigError(f"{source}: unpacking an archive safely needs Python 3.11.4 or later (this is "
                          f"{sys.version.split()[0]}), whose tarfile has filter='data'",
                          hint="upgrade Python, or unpack the archive yourself and give its folder")
    with tarfile.open(source) as tar:
        tar.extractall(tmp, filter="data")  # no absolute paths, no links out, no devices
    roots = [p for p in tmp.iterdir()]
    folder = roots[0] if len(roots) == 1 and roots[0].is_dir() and not (tmp / BUNDLE_INFO).exists() else tmp
    return _checked(folder, source)


def _checked(folder: Path, source: Path) -> Path:
    if not (folder / BUNDLE_INFO).is_file() or not (folder / "run" / PLAN).is_file():
        raise ConfigError(f"{source}: not an edge-builder bundle ({BUNDLE_INFO} or run/{PLAN} missing)",
                          hint="give the folder `builder bundle` made, or its results.tar.gz")
    return folder


def toolchain_done(workdir: Path, recipe_path: Path) -> bool:
    """Whether `workdir` holds a finished toolchain stage of this very recipe file."""
    run_file = workdir / RUN
    if not run_file.exists():
        return False
    return json.loads(run_file.read_text()).get("recipe_sha256") == recipe_hash(recipe_path)


def bundle_path(out: Path, plan: Plan) -> Path:
    return out / f"{plan.recipe.name}_{plan.target.id}_device-bundle.tar.gz"


def load_run_plan(workdir: Path) -> Plan:
    return Plan.from_json(json.loads((workdir / PLAN).read_text()))

