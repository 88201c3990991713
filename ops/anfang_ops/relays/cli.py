"""The ``anfang relay`` commands (wired into ``anfang_ops.cli`` as one subcommand group).

    anfang relay gat1400 --config FILE    police_video queue → the police view library, until SIGTERM
    anfang relay https --config FILE      gov_cloud queue → the county data platform, until SIGTERM
    anfang relay status --config FILE     the outbox: pending, failing, oldest, counters (JSON)

A relay error (bad configuration, unreadable key, outbox that does not open) exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from .config import Gat1400RelayConfig, HttpsRelayConfig, load_gat1400_config, load_https_config
from .errors import RelayConfigError, RelayError
from .outbox import Outbox

__all__ = ["add_relay_commands"]


def _run(kind: str, config_path: Path) -> int:
    from .wiring import build_gat1400_relay, build_https_relay  # noqa: PLC0415 - boto3 on first use

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    relay = (
        build_gat1400_relay(load_gat1400_config(config_path))
        if kind == "gat1400"
        else build_https_relay(load_https_config(config_path))
    )
    logging.getLogger("anfang_ops.relays").info("%s started; outbox %s", relay.name, relay.outbox.path)
    try:
        relay.run(stop)
    finally:
        relay.outbox.close()
    return 0


def _config_of(path: Path) -> Gat1400RelayConfig | HttpsRelayConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RelayConfigError(f"cannot read {path}: {exc}") from exc
    upstream: Any = raw.get("upstream")
    upstream = upstream if isinstance(upstream, dict) else {}
    kind = raw.get("relay") or ("gat1400" if "device_id" in upstream else "https")
    return load_gat1400_config(path) if kind == "gat1400" else load_https_config(path)


def _status(config_path: Path) -> int:
    config = _config_of(config_path)
    if not config.outbox_path.exists():
        raise RelayConfigError(f"no outbox at {config.outbox_path} (has the relay run?)")
    with Outbox(config.outbox_path) as outbox:
        stats = outbox.stats().as_dict(time.time())
        failing = [
            {"device_id": r.device_id, "event_id": r.event_id, "attempts": r.attempts, "last_error": r.last_error}
            for r in outbox.pending(limit=20)
            if r.attempts
        ]
    print(json.dumps({"relay": config.relay, **stats, "failing_records": failing}, ensure_ascii=False, indent=2))
    return 0


def _command(args: argparse.Namespace) -> int:
    try:
        if args.action == "status":
            return _status(Path(args.config))
        return _run(args.action, Path(args.config))
    except RelayError as exc:
        print(f"anfang relay {args.action}: {exc}", file=sys.stderr)
        return 2


def add_relay_commands(sub: Any) -> None:
    """Add ``relay gat1400|https|status`` to the ``anfang`` parser."""
    relay = sub.add_parser("relay", help="carry destination records into non-AWS networks (docs/relays.md)")
    actions = relay.add_subparsers(dest="action", required=True)
    for name, text in (
        ("gat1400", "police_video records → the police view library (GA/T 1400 cascade), until SIGTERM"),
        ("https", "gov_cloud records → the county data platform (signed HTTPS), until SIGTERM"),
        ("status", "the relay's outbox: pending, failing, counters (JSON)"),
    ):
        command = actions.add_parser(name, help=text)
        command.add_argument("--config", required=True, help="the relay's TOML file")
        command.set_defaults(run=_command)
