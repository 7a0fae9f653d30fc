"""CURVE keys: one keypair per process of a deployment, stored as ZeroMQ certificate files.

``<name>.key`` holds the public key (safe to copy anywhere), ``<name>.key_secret`` the pair
(mode 0600, stays on its device). These are the files ``zmq.auth`` reads and writes, so
Ansible can distribute them as plain files.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.auth

from splitter_runtime.errors import ConfigError


def generate(directory: str | Path, names: list[str], *, overwrite: bool = False) -> list[Path]:
    """Create ``<name>.key`` / ``<name>.key_secret`` for each name; return the public key paths."""
    if not zmq.has("curve"):
        raise ConfigError(
            "this libzmq has no CURVE support", "install a pyzmq wheel (it bundles libsodium)"
        )
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        pub, sec = d / f"{name}.key", d / f"{name}.key_secret"
        if (pub.exists() or sec.exists()) and not overwrite:
            raise ConfigError(
                f"key files for {name!r} already exist in {d}",
                "pick another directory, or pass overwrite=True / --force to replace them",
            )
        public, secret = zmq.curve_keypair()
        _write(pub, public, None, f"public key of {name}")
        _write(sec, public, secret, f"secret key of {name}: keep it on its device")
        os.chmod(sec, 0o600)
        out.append(pub)
    return out


def _write(path: Path, public: bytes, secret: bytes | None, what: str) -> None:
    lines = [
        f"#   ****  {what}  ****",
        "#   ZeroMQ CURVE certificate written by splitter-runtime",
        "metadata",
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    path.write_text("\n".join(lines) + "\n")


def load_public(path: str | Path) -> bytes:
    """The z85 public key in a ``.key`` or ``.key_secret`` file."""
    public, _ = _load(path)
    return public


def load_pair(path: str | Path) -> tuple[bytes, bytes]:
    """The (public, secret) z85 pair in a ``.key_secret`` file."""
    public, secret = _load(path)
    if not secret:
        raise ConfigError(
            f"{path} holds no secret key",
            "point the config at the <name>.key_secret file, not <name>.key",
        )
    return public, secret


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"key file {p} does not exist", "generate keys with `splitter keys`")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except Exception as exc:  # zmq raises ValueError / OSError with little context
        raise ConfigError(f"{p} is not a ZeroMQ certificate ({exc})", "regenerate it") from None
    if not public or len(public) != 40:
        raise ConfigError(f"{p} has no valid public key", "regenerate it with `splitter keys`")
    return public, secret
