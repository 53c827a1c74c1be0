"""`--cluster` where Ray is not installed: a clear error naming the extra, exit 2, before anything runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

TINY = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"


def test_cluster_without_ray_installed_names_the_extra(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["ray"] = None  # as where the `cluster` extra is not installed
        from builder.host.cli import main
        sys.argv = ["builder", "run", {str(TINY)!r}, "-t", "x86-tflite", "--runner", "local",
                    "--out", {str(tmp_path / "out")!r}, "--cluster", "127.0.0.1:6379"]
        main()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = proc.stdout + proc.stderr
    assert "--cluster: Ray is not installed here" in said and "edge-builder[cluster]" in said, said
    assert "Traceback" not in said
    assert not (tmp_path / "out").exists()
