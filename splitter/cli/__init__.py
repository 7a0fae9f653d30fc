"""The `splitter` command: a thin face over the library.

Each subcommand lives in its own module and registers itself on :data:`app`; importing
the module is what makes the command appear in ``splitter --help``.
"""

from __future__ import annotations

from splitter.cli import (
    benchmark_cmd,  # noqa: F401  (registers `benchmark`)
    configure_cmd,  # noqa: F401  (registers `configure`)
    deploy_cmd,  # noqa: F401  (registers `deploy`)
    facts_cmd,  # noqa: F401  (registers `facts`)
    keys_cmd,  # noqa: F401  (registers `keys`)
    lab_cmd,  # noqa: F401  (registers `lab`)
    predict_cmd,  # noqa: F401  (registers `predict`)
    run_local_cmd,  # noqa: F401  (registers `run-local`)
    slice_cmd,  # noqa: F401  (registers `slice`)
    status_cmd,  # noqa: F401  (registers `status`)
    undo_cmd,  # noqa: F401  (registers `undo`)
)
from splitter.cli.app import app, main

__all__ = ["app", "main"]
