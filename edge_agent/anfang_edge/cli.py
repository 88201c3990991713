"""``anfang-edge``: keys, run, status, spool, watch-dir and config commands.

Bad input exits non-zero with one readable line on stderr (``anfang-edge: error: ...``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from anfang.contracts import key_id_for, public_key_to_pem, public_key_to_text

from . import __version__
from .agent import Agent
from .config import DEFAULT_CONFIG_PATH, AgentConfig, SimulatorSourceConfig, WatchDirSourceConfig, load_config
from .errors import AgentError
from .keyfile import read_private_key, write_new_private_key
from .sources.simulator import FixtureImages
from .sources.watch_dir import purge_done
from .spool import Spool

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_ERROR = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one readable line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"anfang-edge: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="anfang-edge", description="anfang edge agent")
    parser.add_argument("--version", action="version", version=f"anfang-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"default {DEFAULT_CONFIG_PATH}")
        return p

    keys = sub.add_parser("keys", help="key pairs").add_subparsers(dest="keys_command", required=True)
    gen = keys.add_parser("gen", help="generate an Ed25519 key pair; prints the public key and key id to register")
    gen.add_argument("--out", type=Path, required=True, help="where to write the private key (PKCS#8 PEM, 0600)")
    gen.add_argument("--force", action="store_true", help="replace an existing key file")
    gen.add_argument("--json", action="store_true")
    show = keys.add_parser("show", help="print the public key and key id of an existing private key")
    show.add_argument("key_file", type=Path)
    show.add_argument("--json", action="store_true")

    with_config(sub.add_parser("run", help="run the agent until SIGTERM"))
    status = with_config(sub.add_parser("status", help="spool depth, oldest age, last success, counters"))
    status.add_argument("--json", action="store_true")

    spool = sub.add_parser("spool", help="inspect and repair the spool").add_subparsers(
        dest="spool_command", required=True
    )
    ls = with_config(spool.add_parser("ls", help="list pending (or quarantined) events"))
    ls.add_argument("--quarantine", action="store_true")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    retry = with_config(spool.add_parser("retry", help="move quarantined events back to the outbox"))
    retry.add_argument("event_ids", nargs="*", help="only these events (default: all)")
    purge = with_config(spool.add_parser("purge", help="delete the quarantine"))
    purge.add_argument(
        "--older-than-hours", type=float, help="only events quarantined longer ago (default: the whole quarantine)"
    )
    purge.add_argument("--all", action="store_true", help="also delete every undelivered event (needs --yes)")
    purge.add_argument("--yes", action="store_true")

    watch = sub.add_parser("watch-dir", help="watch_dir folders").add_subparsers(dest="watch_command", required=True)
    done = with_config(watch.add_parser("purge", help="delete spooled files from done/ past done_retention_hours"))
    done.add_argument("--older-than-hours", type=float, help="instead of done_retention_hours (0: everything)")

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command", required=True)
    with_config(config.add_parser("check", help="validate the config file and the key it names"))
    return parser


def _open_spool(config: AgentConfig, *, readonly: bool = False) -> Spool:
    if not config.spool_path.exists():
        raise AgentError(f"no spool at {config.spool_path} (has the agent run yet?)")
    return Spool(
        config.spool_path,
        max_bytes=config.spool_max_bytes,
        when_full=config.when_full,
        readonly=readonly,
        allowed_devices=config.key_devices,
    )


def _print_key(key_file: Path, as_json: bool) -> None:
    public = read_private_key(key_file).public_key()
    info = {"key_id": key_id_for(public), "public_key": public_key_to_text(public), "private_key_file": str(key_file)}
    if as_json:
        print(json.dumps(info, indent=2))
        return
    print(f"key_id:      {info['key_id']}")
    print(f"public_key:  {info['public_key']}")
    print(f"private_key: {key_file} (keep it secret; mode 0600)")
    print("Register the public key for this site's devices, then set key_id in agent.toml.")
    print(public_key_to_pem(public), end="")


def _cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with _open_spool(config, readonly=True) as spool:
        stats = spool.stats().as_dict(time.time())
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    age = stats["oldest_age_secs"]
    print(f"spool:        {stats['depth']} events, {stats['bytes']} of {stats['max_bytes']} bytes")
    print(f"oldest:       {'-' if age is None else f'{age:.0f}s ago'}")
    print(f"quarantined:  {stats['quarantined']}")
    print(f"last success: {stats['last_success_at'] or 'never'}")
    print(f"last error:   {stats['last_error'] or '-'}")
    width = max([24, *(len(name) + 2 for name in stats["counters"])])  # gat1400 deviation names run long
    for name, value in stats["counters"].items():
        print(f"  {name:<{width}}{value}")
    return 0


def _cmd_spool(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.spool_command == "ls":
        with _open_spool(config, readonly=True) as spool:
            rows: list[dict[str, object]]
            if args.quarantine:
                rows = [
                    {
                        "event_id": q.event_id,
                        "device_id": q.device_id,
                        "event_type": q.event_type,
                        "code": q.code,
                        "reason": q.reason,
                    }
                    for q in spool.quarantined(args.limit)
                ]
            else:
                rows = [
                    {
                        "event_id": p.event_id,
                        "device_id": p.device_id,
                        "event_type": p.event_type,
                        "attempts": p.attempts,
                        "bytes": len(p.body),
                    }
                    for p in spool.pending(args.limit)
                ]
        if args.json:
            print(json.dumps(rows, indent=2, ensure_ascii=False))
        else:
            for row in rows:
                print("  ".join(str(v) for v in row.values()))
        return 0
    if args.spool_command == "retry":
        with _open_spool(config) as spool:
            moved = spool.retry_quarantined(args.event_ids or None)
        print(f"{moved} events moved back to the outbox")
        return 0
    if args.all and not args.yes:
        raise AgentError("spool purge --all deletes undelivered events; add --yes to confirm")
    if args.older_than_hours is not None and (args.older_than_hours < 0 or args.all):
        raise AgentError("--older-than-hours must be >= 0 and cannot be combined with --all")
    older_than = None if args.older_than_hours is None else time.time() - args.older_than_hours * 3600
    with _open_spool(config) as spool:
        deleted = spool.purge(outbox=args.all, older_than=older_than)
    print(f"{deleted} events deleted")
    return 0


def _cmd_watch_dir(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    folders = [s for s in config.sources if isinstance(s, WatchDirSourceConfig)]
    if not folders:
        raise AgentError(f"{args.config} has no watch_dir source")
    if args.older_than_hours is not None and args.older_than_hours < 0:
        raise AgentError("--older-than-hours must be >= 0")
    for source in folders:
        hours = source.done_retention_hours if args.older_than_hours is None else args.older_than_hours
        deleted = purge_done(source.path / "done", older_than=time.time() - hours * 3600)
        print(f"{source.path / 'done'}: {deleted} files deleted")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    return Agent(config).run()


def _cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    key = read_private_key(config.resolve_private_key_file())
    for source in config.sources:
        if isinstance(source, SimulatorSourceConfig) and source.images:
            if source.fixtures_dir is None:
                raise AgentError("simulator.images needs fixtures_dir (no fixtures found next to the repository)")
            FixtureImages(source.fixtures_dir)
    derived = key_id_for(key.public_key())
    if derived != config.key_id:
        raise AgentError(f"key_id {config.key_id} does not match the private key (its key id is {derived})")
    if config.key_device_ids is None:
        warning = "key_device_ids is not set; events are not checked against the key"
        print(f"anfang-edge: warning: {warning}", file=sys.stderr)
    print(f"{args.config}: ok ({len(config.sources)} sources, api {config.api_url})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anfang-edge``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "keys":
            if args.keys_command == "gen":
                write_new_private_key(args.out, force=args.force)
                _print_key(args.out, args.json)
            else:
                _print_key(args.key_file, args.json)
            return 0
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "status":
            return _cmd_status(args)
        if args.command == "spool":
            return _cmd_spool(args)
        if args.command == "watch-dir":
            return _cmd_watch_dir(args)
        return _cmd_config_check(args)
    except AgentError as exc:
        print(f"anfang-edge: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except sqlite3.Error as exc:
        print(f"anfang-edge: error: spool: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
