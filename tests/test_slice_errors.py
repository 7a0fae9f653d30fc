"""Bad input to `splitter slice`: one clear line, exit code 2, nothing half-written."""

from __future__ import annotations

import zipfile

import keras
import pytest
from typer.testing import CliRunner

from splitter.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["slice", *map(str, args)])


def _assert_clean_failure(result, out_dir, *phrases: str) -> None:
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich may wrap long lines
    assert text.startswith("error:"), text
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    leftovers = [p.name for p in out_dir.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


@pytest.fixture()
def small_model(tmp_path):
    inputs = keras.Input((4,))
    path = tmp_path / "small.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(path)
    return path


def test_missing_file(tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(_run(tmp_path / "nope.keras", "-o", out), out, "does not exist")
    assert not out.exists()


def test_empty_file(tmp_path):
    (tmp_path / "empty.keras").write_bytes(b"")
    out = tmp_path / "out"
    _assert_clean_failure(_run(tmp_path / "empty.keras", "-o", out), out, "empty")


def test_truncated_keras_file(small_model, tmp_path):
    data = small_model.read_bytes()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    _assert_clean_failure(_run(truncated, "-o", out), out, "truncated or corrupt", "re-save")


def test_zip_that_is_not_a_model(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    out = tmp_path / "out"
    _assert_clean_failure(_run(path, "-o", out), out, "not a complete Keras model")


def test_random_bytes_h5(tmp_path):
    path = tmp_path / "noise.h5"
    path.write_bytes(b"\x00\x01garbage" * 100)
    out = tmp_path / "out"
    _assert_clean_failure(_run(path, "-o", out), out, "not an HDF5 file")


def test_saved_model_directory_says_how_to_convert(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.export(tmp_path / "exported", verbose=False)
    out = tmp_path / "out"
    _assert_clean_failure(
        _run(tmp_path / "exported", "-o", out), out, "SavedModel", "model.save('model.keras')"
    )


def test_unknown_format(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx")
    out = tmp_path / "out"
    _assert_clean_failure(_run(path, "-o", out), out, "unknown model format", ".keras")


def test_model_with_no_layers(tmp_path):
    inputs = keras.Input((3,))
    path = tmp_path / "identity.keras"
    keras.Model(inputs, inputs).save(path)
    out = tmp_path / "out"
    _assert_clean_failure(_run(path, "-o", out), out, "no layers to cut")
    assert not out.exists()


@keras.saving.register_keras_serializable(package="splitter_tests")
class TinySubclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def test_subclassed_model_is_refused(tmp_path):
    model = TinySubclassed()
    model(keras.ops.zeros((1, 3)))
    path = tmp_path / "sub.keras"
    model.save(path)
    out = tmp_path / "out"
    _assert_clean_failure(_run(path, "-o", out), out, "subclassed", "functional API")


def test_existing_foreign_folder_is_refused_then_replaced_with_force(small_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    _assert_clean_failure(_run(small_model, "-o", out), out, "--force")
    assert (out / "precious.txt").read_text() == "keep me"
    result = _run(small_model, "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "precious.txt").exists() and (out / "manifest.json").exists()


def test_existing_slice_set_is_replaced_without_force(small_model, tmp_path):
    out = tmp_path / "out"
    assert _run(small_model, "-o", out).exit_code == 0
    result = _run(small_model, "-o", out, "--verify")
    assert result.exit_code == 0, result.output
    assert "within tolerance" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_output_path_that_is_a_file_is_refused(small_model, tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    _assert_clean_failure(_run(small_model, "-o", out), out, "is a file", "--force")
    assert out.read_text() == "a file"


def test_cli_version_and_help():
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and "splitter 0." in version.output
    helped = runner.invoke(app, ["--help"])
    assert helped.exit_code == 0 and "slice" in helped.output


def test_console_script_prints_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("splitter")
    done = subprocess.run(
        [str(script), "slice", str(tmp_path / "missing.keras"), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert "does not exist" in lines[0]
