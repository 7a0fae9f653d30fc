"""The slice set's manifest: the one source of truth for what each slice is and holds.

Read through :func:`read_manifest`, which validates the schema and the set's own
consistency (cuts line up with slices, files exist, checksums match) so that later
steps can trust it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitter.checksums import sha256_of
from splitter.errors import SplitterError
from splitter.schema_check import validate

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """A validated manifest and the directory it describes."""

    directory: Path
    data: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.directory / MANIFEST_NAME

    @property
    def slices(self) -> list[dict[str, Any]]:
        return self.data["slices"]

    @property
    def cuts(self) -> list[dict[str, Any]]:
        return self.data["cuts"]

    def slice_path(self, index: int) -> Path:
        return self.directory / self.slices[index]["file"]

    def cut_tensors(self, position: int) -> list[dict[str, Any]]:
        """Tensor specs crossing cut ``position`` (the inputs of slice ``position``)."""
        if position == len(self.slices):
            return self.slices[-1]["outputs"]
        return self.slices[position]["inputs"]

    def sha256(self) -> str:
        return sha256_of(self.path)

    def check_range(self, start: int, stop: int) -> None:
        count = len(self.slices)
        if not (0 <= start < stop <= count):
            raise SplitterError(
                f"slice range [{start}, {stop}) is outside the slice set ({count} slices)",
                f"choose 0 <= start < stop <= {count}",
            )


def is_slice_set(directory: Path) -> bool:
    """True if ``directory`` looks like something `splitter slice` wrote."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == "splitter.slices"


def write_manifest(directory: Path, data: dict[str, Any]) -> Path:
    validate(data, "manifest", directory / MANIFEST_NAME)
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def read_manifest(directory: Path | str, *, check_files: bool = True) -> Manifest:
    """Load and validate ``directory/manifest.json``; optionally verify every slice file."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME if directory.is_dir() else directory
    directory = path.parent
    if not path.exists():
        raise SplitterError(
            f"'{path}' does not exist", "run `splitter slice MODEL -o DIR` to make a slice set"
        )
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise SplitterError(
            f"{path}: not valid JSON ({error})", "re-run `splitter slice` to regenerate it"
        ) from error
    validate(data, "manifest", path)
    manifest = Manifest(directory, data)
    _check_consistency(manifest)
    if check_files:
        verify_files(manifest)
    return manifest


def _check_consistency(manifest: Manifest) -> None:
    slices, cuts = manifest.slices, manifest.cuts
    if len(cuts) != len(slices) + 1:
        raise SplitterError(
            f"{manifest.path}: field 'cuts' has {len(cuts)} entries, expected "
            f"{len(slices) + 1} (one more than slices)",
            "re-run `splitter slice` to regenerate the slice set",
        )
    for index, entry in enumerate(slices):
        ins = [t["name"] for t in entry["inputs"]]
        outs = [t["name"] for t in entry["outputs"]]
        if entry["index"] != index or ins != cuts[index]["tensors"]:
            raise SplitterError(
                f"{manifest.path}: field 'slices[{index}]' does not match cuts[{index}]",
                "re-run `splitter slice` to regenerate the slice set",
            )
        if outs != cuts[index + 1]["tensors"]:
            raise SplitterError(
                f"{manifest.path}: field 'slices[{index}].outputs' does not match "
                f"cuts[{index + 1}]",
                "re-run `splitter slice` to regenerate the slice set",
            )


def verify_files(manifest: Manifest) -> None:
    """Every slice file exists and has the checksum the manifest records."""
    for entry in manifest.slices:
        path = manifest.directory / entry["file"]
        if not path.exists():
            raise SplitterError(
                f"slice file '{path}' listed in {manifest.path} is missing",
                "re-run `splitter slice` to regenerate the slice set",
            )
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise SplitterError(
                f"slice file '{path}' has sha256 {actual[:12]}…, the manifest says "
                f"{entry['sha256'][:12]}… (changed or corrupt)",
                "re-run `splitter slice` to regenerate the slice set",
            )
