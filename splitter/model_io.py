"""Load a user's model file safely, turning every way it can be wrong into one clear error.

Keras' own exceptions for a truncated zip or a SavedModel directory are long tracebacks;
here each case is recognised first and named with its fix.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from splitter.errors import SplitterError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")


def check_model_file(path: Path) -> str:
    """Return the format ('keras' or 'h5') of ``path`` or raise naming what is wrong."""
    if not path.exists():
        raise SplitterError(f"model file '{path}' does not exist", "check the path")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise SplitterError(
                f"'{path}' is a TensorFlow SavedModel directory, which splitter cannot cut "
                "(it has no Keras layer graph)",
                "load the original Keras model and save it with model.save('model.keras')",
            )
        raise SplitterError(f"'{path}' is a directory, not a model file", "pass a .keras file")
    size = path.stat().st_size
    if size == 0:
        raise SplitterError(f"model file '{path}' is empty (0 bytes)", "re-save or re-copy it")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        if not zipfile.is_zipfile(path):
            raise SplitterError(
                f"'{path}' is not a valid .keras archive (truncated or corrupt?)",
                "re-save the model with model.save('model.keras') or copy it again",
            )
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
        if bad is not None or "config.json" not in names:
            raise SplitterError(
                f"'{path}' is a zip file but not a complete Keras model "
                f"({'corrupt member ' + bad if bad else 'no config.json'})",
                "re-save the model with model.save('model.keras')",
            )
        return "keras"
    if suffix in H5_SUFFIXES:
        with open(path, "rb") as handle:
            if handle.read(8) != HDF5_SIGNATURE:
                raise SplitterError(
                    f"'{path}' is not an HDF5 file (truncated or corrupt?)", "copy it again"
                )
        return "h5"
    raise SplitterError(
        f"'{path}' has an unknown model format '{suffix or '(no suffix)'}'",
        "splitter reads Keras .keras files and legacy .h5 files; "
        "save your model with model.save('model.keras')",
    )


def load_model(path: Path, *, unsafe: bool = False) -> Any:
    """Load a Keras model with ``safe_mode`` on unless the user said ``--unsafe``."""
    check_model_file(path)
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many types; each becomes one clear line
        raise _explain_load_error(path, error) from error
    if not isinstance(model, keras.Model):
        raise SplitterError(f"'{path}' holds a {type(model).__name__}, not a Keras model")
    return model


def _explain_load_error(path: Path, error: Exception) -> SplitterError:
    text = str(error)
    if "safe_mode" in text or "Lambda" in text or "lambda" in text:
        return SplitterError(
            f"'{path}' contains Python code (a Lambda layer), which safe mode refuses to load",
            "if you trust this file, pass --unsafe (it runs the code in the model)",
        )
    if "Unknown layer" in text or "Could not locate" in text or "custom" in text.lower():
        first = text.strip().splitlines()[0][:300]
        return SplitterError(
            f"'{path}' uses a layer Keras does not know ({first})",
            "register the custom layer with @keras.saving.register_keras_serializable() "
            "in an importable module, or rebuild the model from built-in layers",
        )
    first = text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
    return SplitterError(
        f"could not load '{path}' as a Keras model: {first}",
        "check that the file was saved by Keras 3 (model.save('model.keras')) and is complete",
    )
