"""The agent's private key on disk: PKCS#8 PEM, mode 0600 (a key its group or others can read is refused).

>>> key = read_private_key(Path("/etc/anfang-edge/anfang-edge.key"))
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anfang.contracts import generate_private_key, load_private_key, private_key_to_pem

from .errors import KeyFileError

__all__ = ["read_private_key", "write_new_private_key"]


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the Ed25519 private key at ``path``; raises ``KeyFileError`` with a readable reason.

    Like ssh, a key file that its group or others may read or write is refused: the key may already be out.
    """
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(
                    f"private key {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o});"
                    f" chmod 600 it (and consider it leaked: generate a new key)"
                )
            pem = handle.read()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    try:
        return load_private_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted Ed25519 PKCS#8 PEM key") from exc


def write_new_private_key(path: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """Generate a key and write it to ``path`` (0600, never world-readable, even for a moment)."""
    key = generate_private_key()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} exists; use --force to replace it") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_to_pem(key))
        handle.flush()
        os.fsync(handle.fileno())
    return key
