"""Keras model sources: applications by name, .keras/.h5 files, and SavedModel export.

TensorFlow and Keras are imported inside the functions so that importing the
package (for `builder plan`, say) stays fast on hosts without the toolchain.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import ConfigError, ConversionError, FetchError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


def _application_names() -> list[str]:
    import keras

    return sorted(
        n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n))
    )


def keras_application(
    name: str,
    *,
    weights: str | None,
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
    weights_path: Path | None = None,
    **options: Any,
) -> keras.Model:
    """Build `keras.applications.<name>`; extra `options` (e.g. alpha=0.35) go to its constructor.

    weights: "imagenet" (downloads, needs the network), None (random init,
    seeded for reproducibility), or None plus `weights_path` (a local .h5 /
    .weights.h5 file loaded after construction).
    """
    import keras

    names = _application_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5) or names[:5]
        raise ConfigError(
            f"unknown Keras application {name!r}",
            hint=f"use one of keras.applications' {len(names)} models, e.g. {', '.join(close)}",
        )
    if weights_path is not None and weights is not None:
        raise ConfigError(
            f"Keras application {name}: both weights={weights!r} and weights_path={str(weights_path)!r} given",
            hint="set weights to null when loading a local weights file",
        )
    keras.utils.set_random_seed(0)
    try:
        model = getattr(keras.applications, name)(
            weights=weights, input_shape=input_shape, classes=classes, **options
        )
    except ValueError as e:
        raise ConfigError(f"Keras application {name}: {e}", hint="check input_shape, classes and options") from e
    except Exception as e:  # keras.utils.get_file raises a bare Exception on network failure
        if weights is None:
            raise
        raise FetchError(
            f"could not download {weights!r} weights for Keras application {name}: {e}",
            hint="give a local weights file (weights: null + weights_path) or a mirror the network allows",
        ) from e
    if weights_path is not None:
        if not weights_path.is_file():
            raise ConfigError(f"weights file not found: {weights_path}", hint="check weights_path")
        model.load_weights(str(weights_path))
    return model


def load_keras_file(path: Path) -> keras.Model:
    """Load a whole model from a .keras or (legacy) .h5 file."""
    import keras

    if not path.is_file():
        raise ConfigError(f"Keras model file not found: {path}", hint="check the recipe's source path")
    if path.suffix not in (".keras", ".h5"):
        raise ConfigError(f"{path}: not a .keras or .h5 file", hint="give a .keras/.h5 file or a SavedModel directory")
    try:
        return keras.models.load_model(str(path), compile=False, safe_mode=True)  # no Lambda layer code runs
    except Exception as e:
        raise ConversionError(
            f"could not load Keras model {path}: {e}",
            cause="load-failed",
            hint="models with custom layers need those classes importable; else export a SavedModel",
        ) from e


def save_keras(model: keras.Model, out_dir: Path) -> Path:
    """Export `model` as an inference SavedModel at `out_dir` (replaced atomically) and return it.

    Uses Keras 3's `model.export` (ExportArchive): with TF 2.21, converting the
    output of `tf.saved_model.save` on a Keras 3 MobileNetV2 silently gave a
    184 KB model instead of 6.7 MB (the default signature is not the model).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.export(str(tmp), format="tf_saved_model", verbose=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    log.info("exported SavedModel %s", out_dir)
    return out_dir
