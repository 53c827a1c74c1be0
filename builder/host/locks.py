"""Locked package sets for images, and wheelhouses built from them on the host.

`dockerfiles/locks/<name>.in` (or a backend's `locks/<name>.in`) lists the direct pins; `<name>.txt`
beside it is the full, resolved set that images install with --no-deps. The lock name ends in the
platform it is for (`-amd64`, `-arm64`). Resolution and downloads use the
host's own pip, so its configuration (index mirrors, CA bundle, find-links) applies.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from builder.errors import BuildError, ConfigError
from builder.host import catalog

ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
PYTHON = "3.11"
GLIBC_MINORS = range(17, 37)  # manylinux tags a bookworm (glibc 2.36) image accepts


def _files(suffix: str) -> dict[str, Path]:
    """Every lock's `suffix` file by name: the project's dockerfiles/locks/ and each backend's locks/."""
    found: dict[str, Path] = {}
    for folder in catalog.data_dirs("locks"):
        for path in sorted(folder.glob(f"*{suffix}")):
            if found.setdefault(path.stem, path) != path:
                raise ConfigError(f"lock {path.stem!r} is defined twice: {found[path.stem]} and {path}",
                                  hint="give one of them another name")
    return found


def lock_file(lock: str, suffix: str = ".txt") -> Path:
    """`<lock>.txt` (or .in) beside its .in file, wherever that lives (the project's dockerfiles/locks/ by default)."""
    source = _files(".in").get(lock, catalog.dockerfiles_dir() / "locks" / f"{lock}.in")
    return source.with_suffix(suffix)


def lock_names() -> list[str]:
    return sorted(_files(".in"))


def locked_packages() -> list[str]:
    """Every package any image installs (the locks' full closure): what stage code may import."""
    names = set()
    for lock in _files(".txt").values():
        for line in lock.read_text().splitlines():
            if line.split("#")[0].strip():
                names.add(line.split("==")[0].split("[")[0].strip().lower())
    return sorted(names)


def holds(lock: str, package: str) -> bool:
    """Whether the image of `lock` installs `package` (names compared as pip does: `-`, `_` and `.` alike)."""
    path = lock_file(lock)
    canonical = lambda name: re.sub(r"[-_.]+", "-", name.strip().lower())  # noqa: E731
    names = {canonical(line.split("#")[0].split("==")[0].split("[")[0]) for line in
             (path.read_text().splitlines() if path.exists() else [])}
    return canonical(package) in names


def _arch(lock: str) -> str:
    suffix = lock.rsplit("-", 1)[-1]
    if suffix not in ARCHES:
        raise ConfigError(f"lock {lock!r} must end in one of: {', '.join('-' + a for a in ARCHES)}")
    return ARCHES[suffix]


def python_of(lock: str) -> str:
    """The Python a lock is for: a `# python: X.Y` line in its .in file (a base image's own Python,
    e.g. JetPack's 3.10), else the project's."""
    source = lock_file(lock, ".in")
    text = source.read_text() if source.exists() else ""
    match = re.search(r"^# python: (3\.\d+)\s*$", text, re.MULTILINE)
    return match.group(1) if match else PYTHON


def platform_args(lock: str) -> list[str]:
    arch = _arch(lock)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in GLIBC_MINORS] + [f"manylinux2014_{arch}", f"linux_{arch}"]
    args = [f"--platform={tag}" for tag in tags]
    return args + [f"--python-version={python_of(lock)}", "--implementation=cp", "--only-binary=:all:"]


def target_markers(lock: str) -> dict[str, str]:
    """The environment markers (PEP 508) of the lock's platform and Python."""
    python = python_of(lock)
    return {"platform_machine": _arch(lock), "python_version": python, "python_full_version": f"{python}.0",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


# pip evaluates a requirement's markers (`; platform_machine == "aarch64"`, `; python_version < "3.11"`) for the
# interpreter it runs in, whatever --platform and --python-version say; so it runs with the target's markers.
_PIP_WITH_MARKERS = """
import json, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv.pop(1))
host = markers.default_environment
markers.default_environment = lambda: {**host(), **target}
from pip._internal.cli.main import main
sys.exit(main())
"""


def _pip(args: list[str], what: str, markers: dict[str, str] | None = None) -> str:
    command = ["-c", _PIP_WITH_MARKERS, json.dumps(markers)] if markers else ["-m", "pip"]
    proc = subprocess.run([sys.executable, *command, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (pip exit {proc.returncode})",
                         log_tail=(proc.stdout + proc.stderr).splitlines()[-30:],
                         hint="check the pins in the .in file and your pip index/CA settings")
    return proc.stdout


def resolve(lock: str) -> list[str]:
    """Resolve `<lock>.in` for its platform into exact `name==version` lines."""
    source = lock_file(lock, ".in")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
              "--target", str(Path(tmp) / "t"), *platform_args(lock), "-r", str(source)], f"resolving {source.name}",
             markers=target_markers(lock))
        installs = json.loads(report.read_text())["install"]
    return sorted(f"{i['metadata']['name'].lower()}=={i['metadata']['version']}" for i in installs)


def write_lock(lock: str) -> Path:
    lines = resolve(lock)
    path = lock_file(lock)
    header = [f"# {lock}: resolved from {lock}.in for linux/{lock.rsplit('-', 1)[-1]}, Python {python_of(lock)}.",
              "# Regenerate on purpose with `builder lock`; images install exactly this with --no-deps."]
    path.write_text("\n".join(header + lines) + "\n")
    return path


def wheelhouse(lock: str, cache: Path) -> Path:
    """Download every wheel of `<lock>.txt` for its platform into a cached folder (once)."""
    locked = lock_file(lock)
    folder = cache / "wheelhouse" / f"{lock}-{hashlib.sha256(locked.read_bytes()).hexdigest()[:16]}"
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _pip(["download", "--no-deps", "--quiet", "--dest", str(folder), *platform_args(lock), "-r", str(locked)],
         f"downloading the wheels of {locked.name}")
    done.write_text("ok\n")
    return folder
