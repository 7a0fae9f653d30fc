"""``python -m splitter_runtime.ready``: wait until a gateway reports every stage up.

Deploy's last step (playbooks/deploy.yml): exit 0 once ready, else exit 1 naming each stage's
state, so a stage that never came up fails the deploy with its name instead of a later hang.
"""

from __future__ import annotations

import argparse
import json
import sys

from splitter_runtime.client import Client
from splitter_runtime.errors import RuntimeFailure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splitter_runtime.ready", description=__doc__)
    parser.add_argument("--address", required=True, help="the gateway's client address")
    parser.add_argument("--server-key", required=True, help="the gateway's public key file")
    parser.add_argument("--secret-key", required=True, help="a client key pair file")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    try:
        with Client(args.address, server_key=args.server_key, secret_key=args.secret_key) as c:
            status = c.wait_ready(timeout_s=args.timeout)
    except RuntimeFailure as error:
        print(f"not ready: {error.message}", file=sys.stderr)
        return 1
    print(json.dumps({"ready": True, "stages": [s["name"] for s in status["stages"]]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
