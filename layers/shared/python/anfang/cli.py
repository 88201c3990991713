"""The ``anfang`` command line (stdlib argparse). Subcommands arrive with their issues; this one has:

    anfang decrypt [--input records.ndjson] [--output plain.ndjson]

reads NDJSON destination records (stdin by default) and writes them with every encrypted envelope replaced
by its value. KMS comes from boto3's usual configuration; ``AWS_ENDPOINT_URL`` points it at a local stack.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main"]


def _kms() -> Any:
    import boto3  # noqa: PLC0415 - only the cloud extra has it; keep ``anfang --help`` importable without it

    endpoint = os.environ.get("AWS_ENDPOINT_URL_KMS") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("kms", endpoint_url=endpoint) if endpoint else boto3.client("kms")


def _decrypt(args: argparse.Namespace, kms: Any | None) -> int:
    from anfang.decrypt import DecryptError, decrypt_lines  # noqa: PLC0415 - needs the cloud extra

    source: TextIO = sys.stdin if args.input == "-" else Path(args.input).open(encoding="utf-8")  # noqa: SIM115
    sink: TextIO = sys.stdout if args.output == "-" else Path(args.output).open("w", encoding="utf-8")  # noqa: SIM115
    try:
        for line in decrypt_lines(source, kms=kms or _kms()):
            sink.write(line + "\n")
    except DecryptError as exc:
        print(f"anfang decrypt: {exc}", file=sys.stderr)
        return 2
    finally:
        if source is not sys.stdin:
            source.close()
        if sink is not sys.stdout:
            sink.close()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="anfang", description="anfang command line")
    sub = root.add_subparsers(dest="command", required=True)
    decrypt = sub.add_parser("decrypt", help="replace encrypted envelopes in NDJSON records by their values")
    decrypt.add_argument("--input", "-i", default="-", help="NDJSON records (default: stdin)")
    decrypt.add_argument("--output", "-o", default="-", help="where to write (default: stdout)")
    return root


def main(argv: list[str] | None = None, *, kms: Any | None = None) -> int:
    """Entry point of ``anfang``; ``kms`` may be injected (tests, embedding)."""
    args = parser().parse_args(argv)
    if args.command == "decrypt":
        return _decrypt(args, kms)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
