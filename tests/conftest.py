"""Shared fixtures: real models saved once per session, quiet TensorFlow."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory):
    """Save example models lazily: ``model_files('resnet50')`` → path of its .keras file."""
    from splitter.examples import write_example_model

    root = tmp_path_factory.mktemp("models")
    cache: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = write_example_model(root / f"{kind}.keras", kind)
        return cache[kind]

    return get
