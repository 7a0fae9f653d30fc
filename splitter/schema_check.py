"""Validate a file's data against its JSON Schema with an error a person can act on.

The message names the file, the field (as a path like ``slices[3].sha256``) and what
was expected, instead of jsonschema's multi-line dump.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from splitter.errors import SplitterError


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The packaged schema ``splitter/schemas/<name>.schema.json``."""
    text = resources.files("splitter").joinpath("schemas", f"{name}.schema.json").read_text()
    return json.loads(text)


def field_path(parts: Any) -> str:
    """``['slices', 3, 'sha256']`` → ``slices[3].sha256``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate(data: Any, schema_name: str, source: Path | str) -> None:
    """Raise SplitterError naming file, field and expectation if ``data`` breaks the schema."""
    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return
    version = load_schema(schema_name).get("properties", {}).get("schema_version", {})
    raise SplitterError(
        f"{source}: field '{field_path(error.absolute_path)}' is invalid: {error.message}",
        f"fix or regenerate the file (a {schema_name} file with schema_version "
        f"{version.get('const', '?')} is expected)",
    )
