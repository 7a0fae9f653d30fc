"""The command-line shell shared by the stage and the gateway: arguments, logging, signals.

Both serve until SIGTERM/SIGINT, then drain; a configuration problem is one line on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from splitter_runtime.errors import RuntimeFailure


def serve_from_command_line(
    prog: str, description: str, build: Callable[[str], Any], argv: list[str] | None
) -> int:
    """Parse ``--config``/``--log-level``, ``build(config_path)`` a server and run it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="path of this service's YAML config")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        server = build(args.config)
        signal.signal(signal.SIGTERM, server.request_stop)
        signal.signal(signal.SIGINT, server.request_stop)
        code = server.run()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already: exit cleanly
        return code
    except RuntimeFailure as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
