"""The ``anfang`` command line (stdlib argparse), for ops and consumers of a town stack.

    anfang towns render [--check]                    infra/towns/*.toml → samconfig.toml
    anfang decrypt [-i records.ndjson] [-o out]      replace encrypted envelopes by their values
    anfang dlq redrive --stack-name S <queue>        move a dead-letter queue back to its source
    anfang local up [--state-dir DIR]                the local stack, until SIGINT/SIGTERM

Commands that talk to a stack read its outputs through CloudFormation (``--stack-name``); boto3's usual
configuration applies, and ``AWS_ENDPOINT_URL`` points it at the local stack. Bad input exits non-zero
with one readable line on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A failure to report as one line, with exit status 2."""


def _client(name: str) -> Any:
    import boto3  # noqa: PLC0415 - only the cloud extra has it; keep ``anfang --help`` importable without it

    return boto3.client(name)  # botocore honours AWS_ENDPOINT_URL (the local stack) by itself


def _outputs(stack_name: str) -> dict[str, str]:
    from anfang.stackinfo import StackNotFoundError, stack_outputs  # noqa: PLC0415

    try:
        return stack_outputs(_client("cloudformation"), stack_name)
    except StackNotFoundError as exc:
        raise CliError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------- commands


def _towns_render(args: argparse.Namespace) -> int:
    from anfang.towns import TownConfigError, load_towns, render_samconfig  # noqa: PLC0415

    try:
        text = render_samconfig(load_towns(Path(args.towns_dir)))
    except TownConfigError as exc:
        raise CliError(str(exc)) from exc
    output = Path(args.output)
    if args.check:
        if not output.exists() or output.read_text(encoding="utf-8") != text:
            raise CliError(f"{output} is stale; run `anfang towns render`")
        return 0
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    from anfang.decrypt import DecryptError, decrypt_lines  # noqa: PLC0415 - needs the cloud extra

    source: TextIO = sys.stdin if args.input == "-" else Path(args.input).open(encoding="utf-8")  # noqa: SIM115
    sink: TextIO = sys.stdout if args.output == "-" else Path(args.output).open("w", encoding="utf-8")  # noqa: SIM115
    try:
        for line in decrypt_lines(source, kms=args.kms or _client("kms")):
            sink.write(line + "\n")
    except DecryptError as exc:
        raise CliError(str(exc)) from exc
    finally:
        if source is not sys.stdin:
            source.close()
        if sink is not sys.stdout:
            sink.close()
    return 0


def _dlq_redrive(args: argparse.Namespace) -> int:
    from anfang.redrive import redrive  # noqa: PLC0415
    from anfang.stackinfo import DLQ_OUTPUTS  # noqa: PLC0415

    dlq_key, target_key = DLQ_OUTPUTS[args.queue]
    outputs = _outputs(args.stack_name)
    moved = redrive(_client("sqs"), outputs[dlq_key], outputs[target_key], max_messages=args.max_messages)
    print(f"moved {moved} messages from the {args.queue} dead-letter queue back to its queue")
    return 0


def _local_up(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from anfang.local import LocalStack  # noqa: PLC0415 - needs the dev extra (moto server)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stack = LocalStack(Path(args.root), Path(args.state_dir), aws_port=args.aws_port, api_port=args.api_port)
    info = stack.start()
    try:
        print(f"local stack {info.stack_name} (town {info.town}) is up")
        print(f"  api:  {info.api_url}")
        print(f"  aws:  {info.aws_endpoint_url}  (export AWS_ENDPOINT_URL={info.aws_endpoint_url})")
        print(f"  info: {stack.stack_json}")
        sys.stdout.flush()
        stop.wait()
    finally:
        stack.stop()
    print("local stack stopped")
    return 0


# ---------------------------------------------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="anfang", description="anfang: operate a town stack")
    sub = root.add_subparsers(dest="command", required=True)

    towns = sub.add_parser("towns", help="per-town deployment settings").add_subparsers(dest="action", required=True)
    render = towns.add_parser("render", help="write samconfig.toml from infra/towns/*.toml")
    render.add_argument("--towns-dir", default="infra/towns")
    render.add_argument("--output", default="samconfig.toml")
    render.add_argument("--check", action="store_true", help="fail if the file differs instead of writing it")
    render.set_defaults(run=_towns_render)

    decrypt = sub.add_parser("decrypt", help="replace encrypted envelopes in NDJSON records by their values")
    decrypt.add_argument("--input", "-i", default="-", help="NDJSON records (default: stdin)")
    decrypt.add_argument("--output", "-o", default="-", help="where to write (default: stdout)")
    decrypt.set_defaults(run=_decrypt)

    dlq = sub.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="action", required=True)
    redrive = dlq.add_parser("redrive", help="move a dead-letter queue's messages back to its source queue")
    redrive.add_argument("--stack-name", required=True)
    redrive.add_argument("queue", choices=["analyse", "process", "gov_cloud", "police_video"])
    redrive.add_argument("--max-messages", type=int, default=None)
    redrive.set_defaults(run=_dlq_redrive)

    local = sub.add_parser("local", help="the local stack").add_subparsers(dest="action", required=True)
    up = local.add_parser("up", help="start the local stack and run until SIGINT/SIGTERM")
    up.add_argument("--root", default=".", help="the repository (template.yaml, functions/, infra/towns/)")
    up.add_argument("--state-dir", default=".anfang/local")
    up.add_argument("--aws-port", type=int, default=0, help="moto server port (default: a free one)")
    up.add_argument("--api-port", type=int, default=0, help="API port (default: a free one)")
    up.set_defaults(run=_local_up)
    return root


def main(argv: list[str] | None = None, *, kms: Any | None = None) -> int:
    """Entry point of ``anfang``; ``kms`` may be injected (tests, embedding)."""
    args = parser().parse_args(argv)
    args.kms = kms
    run: Command = args.run
    try:
        return run(args)
    except CliError as exc:
        print(f"anfang {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
