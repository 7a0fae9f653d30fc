"""Device side of splitter: stage services, gateway and client wired with ZeroMQ.

Depends only on numpy, pyzmq, pyyaml and (lazily) an inference backend, so a device can
install it alone. It never imports the controller package ``splitter``.
"""

from __future__ import annotations

__version__ = "0.1.0"
