"""Image smoke test: `python -m builder.stage.smoke MODULE...` imports each tool and prints its version."""

from __future__ import annotations

import importlib
import json
import sys

from builder import versions


def main(modules: list[str]) -> int:
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import failure fails the image build, with its reason
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    import builder.stage.execute  # noqa: F401  (the step runner itself must import)

    print(json.dumps(versions.collect()))
    for line in failed:
        print(f"smoke test: cannot import {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
