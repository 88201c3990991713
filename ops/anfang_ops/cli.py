"""The ``anfang`` command line (stdlib argparse), for ops and consumers of a town stack.

    anfang towns render [--check]                    infra/towns/*.toml → samconfig.toml
    anfang towns new --code C --name N               a new town file (then samconfig.toml rendered)
    anfang devices register|revoke|list|retire --stack-name S    the device registry
    anfang devices silent --stack-name S [--notify]  devices silent past their threshold; --notify reports them
    anfang devices import devices.csv --stack-name S [--dry-run]    bulk registration, reported per row
    anfang sites update --stack-name S --site-id X [--name N] [--site-type T]
    anfang partners register|list|revoke --stack-name S   the health commission's key
    anfang decrypt [-i records.ndjson] [-o out]      replace encrypted envelopes by their values
    anfang dlq redrive --stack-name S <queue>        move a dead-letter queue back to its source
    anfang consume --stack-name S --destination D --out DIR [--decrypt] [--images]
                                                     the reference consumer: verified, deduplicated NDJSON
    anfang replay --stack-name S --destination D --since T --until T [--event-type E] [--max-records N] [--dry-run]
                                                     re-publish archived records of a time range, unchanged
    anfang audit verify --stack-name S [--destination D] [--records FILE] [--complete]
                                                     check the release log's chain and signatures, and records
    anfang status --stack-name S [--json]            the dashboard's numbers: totals and sparklines
    anfang local up [--town CODE|FILE]               the local stack, until SIGINT/SIGTERM
    anfang local demo [--events N] [--devices M]     the whole job locally, with a summary and a report
    anfang local soak [--duration 30m] [--aws-error-rate R] [--worker-kills N] ...
                                                     sustained load and faults, then every event accounted for
    anfang relay gat1400|https|status --config FILE  relays into non-AWS networks (docs/relays.md)

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
#: Key ids are base64url and may start with "-", which argparse would read as an option: say how to pass one.
_KEY_ID_HELP = "the key id; write --key-id=K (a base64url key id may start with '-')"


class CliError(Exception):
    """A failure to report as one line, with exit status 2."""


def _client(name: str) -> Any:
    import boto3  # noqa: PLC0415 - only the cloud extra has it; keep ``anfang --help`` importable without it

    return boto3.client(name)  # botocore honours AWS_ENDPOINT_URL (the local stack) by itself


def _outputs(stack_name: str) -> dict[str, str]:
    from anfang_ops.stackinfo import StackNotFoundError, stack_outputs  # noqa: PLC0415

    try:
        return stack_outputs(_client("cloudformation"), stack_name)
    except StackNotFoundError as exc:
        raise CliError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------- commands


def _towns_render(args: argparse.Namespace) -> int:
    from anfang_ops.towns import TownConfigError, load_towns, render_samconfig  # noqa: PLC0415

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


def _towns_new(args: argparse.Namespace) -> int:
    from anfang_ops.towns import TownConfigError, load_towns, render_samconfig, write_town  # noqa: PLC0415

    towns_dir = Path(args.towns_dir)
    try:
        if args.dry_run:
            print(f"would write a town file for {args.code} ({args.name}) in {towns_dir} and render {args.output}")
            return 0
        path = write_town(
            towns_dir,
            code=args.code,
            name=args.name,
            name_zh=args.name_zh,
            env=args.env,
            region=args.region,
            health_codes=not args.no_health_codes,
        )
        Path(args.output).write_text(render_samconfig(load_towns(towns_dir)), encoding="utf-8")
    except TownConfigError as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {path} and {args.output}")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    from anfang_ops.decrypt import DecryptError, decrypt_lines  # noqa: PLC0415 - needs the cloud extra

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


def _audit_verify(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
    import time  # noqa: PLC0415

    from anfang.aws.release_log import ReleaseLog, ReleaseLogError  # noqa: PLC0415
    from anfang.contracts.destinations import DESTINATIONS  # noqa: PLC0415
    from anfang_ops.audit import AuditReport, KmsPublicKeys, Verifier, parse_entries  # noqa: PLC0415

    outputs = _outputs(args.stack_name)
    for name in ("ReleaseLogTableName", "ReleaseSigningKeyArn"):
        if name not in outputs:
            raise CliError(f"stack {args.stack_name} has no output {name} (deployed before the release log?)")
    kms = args.kms or _client("kms")
    verifier = Verifier(KmsPublicKeys(kms), trusted_key_ids=frozenset({outputs["ReleaseSigningKeyArn"]}))
    log = ReleaseLog(_client("dynamodb"), outputs["ReleaseLogTableName"])
    destinations = [args.destination] if args.destination else list(DESTINATIONS)
    started = time.perf_counter()
    report = AuditReport()
    try:
        for destination in destinations:
            verifier.verify_chain(parse_entries(log.entry_texts(destination)), report)
            if not report.ok:
                break
            print(f"{destination}: chain of {verifier.last_seq(destination)} entries verified")
    except ReleaseLogError as exc:
        raise CliError(str(exc)) from exc
    if report.ok and args.records:
        try:
            with Path(args.records).open(encoding="utf-8") as source:
                records = [json.loads(line) for line in source if line.strip()]
        except (OSError, ValueError) as exc:
            raise CliError(f"{args.records}: {exc}") from exc
        verifier.verify_records(records, report, complete=args.complete)
    elapsed = max(time.perf_counter() - started, 1e-9)
    print(f"entries {report.entries}, records {report.records}, {report.records / elapsed:.0f} records/s")
    if not report.ok:
        print(f"FIRST BREAK: {report.first_break}")
        return 1
    print("verified")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from anfang.aws.archive import RecordArchive  # noqa: PLC0415
    from anfang.aws.batch import sns_sender  # noqa: PLC0415
    from anfang.contracts.destinations import DESTINATION_INFO  # noqa: PLC0415
    from anfang_ops.replay import Replayer, ReplayError, ReplayRange, replay_range  # noqa: PLC0415

    info = DESTINATION_INFO[args.destination]
    if args.max_records is not None and args.max_records < 1:
        raise CliError("--max-records must be at least 1")
    outputs = _outputs(args.stack_name)
    for name in ("ArchiveBucketName", info.topic_output):
        if name not in outputs:
            raise CliError(f"stack {args.stack_name} has no output {name} (deployed before the archive?)")
    try:
        since, until = replay_range(args.since, args.until)
    except ReplayError as exc:
        raise CliError(str(exc)) from exc
    scope = ReplayRange(
        destination=args.destination,
        since=since,
        until=until,
        event_types=frozenset(args.event_type or ()),
        max_records=args.max_records,
        dry_run=args.dry_run,
    )

    def progress(counts: Any) -> None:
        print(f"read {counts['read']}, matched {counts['matched']}, published {counts['published']}", file=sys.stderr)

    replayer = Replayer(
        RecordArchive(_client("s3"), outputs["ArchiveBucketName"]),
        sns_sender(_client("sns"), outputs[info.topic_output]),
        progress=progress,
    )
    try:
        counts = replayer.run(scope)
    except ReplayError as exc:
        raise CliError(str(exc)) from exc
    mode = " (dry run: nothing published)" if args.dry_run else ""
    capped = f"; stopped at --max-records {args.max_records}" if counts["capped"] else ""
    print(
        f"read {counts['read']}, matched {counts['matched']}, published {counts['published']}, "
        f"failed {counts['failed']}, duplicates {counts['duplicates']}{capped}{mode}"
    )
    return 1 if counts["failed"] else 0


def _consume(args: argparse.Namespace) -> int:
    from anfang.contracts.destinations import DESTINATION_INFO  # noqa: PLC0415
    from anfang_ops.consume import ConsumeError, Consumer, ConsumerClients, ConsumerConfig  # noqa: PLC0415

    outputs = _outputs(args.stack_name)
    queue_output = DESTINATION_INFO[args.destination].queue_output
    for name in (queue_output, "ReleaseLogTableName", "ReleaseSigningKeyArn"):
        if name not in outputs:
            raise CliError(f"stack {args.stack_name} has no output {name}")
    clients = ConsumerClients(
        sqs=_client("sqs"),
        s3=_client("s3"),
        kms=args.kms or _client("kms"),
        dynamodb=_client("dynamodb"),
        queue_url=outputs[queue_output],
        log_table=outputs["ReleaseLogTableName"],
        signing_key_arn=outputs["ReleaseSigningKeyArn"],
    )
    config = ConsumerConfig(
        out_dir=Path(args.out),
        destination=args.destination,
        decrypt=args.decrypt,
        images=args.images,
        wait_time_secs=args.wait_secs,
        max_messages=args.max_messages,
        exit_when_idle=args.exit_when_idle,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    def progress(counts: Any) -> None:
        print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)

    try:
        consumer = Consumer(config, clients)
        try:
            counts = consumer.run(stop, progress)
        finally:
            consumer.close()
    except (ConsumeError, OSError) as exc:
        raise CliError(str(exc)) from exc
    print("done: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())), flush=True)
    return 0


def _registry(stack_name: str) -> Any:
    from anfang.aws.registry import DeviceRegistry  # noqa: PLC0415

    outputs = _outputs(stack_name)
    return DeviceRegistry(
        _client("dynamodb"), outputs["DevicesTableName"], town_code=outputs["TownCode"], cache_ttl_secs=0
    )


def _public_key_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the public key file {path}: {exc}") from exc


def _devices_register(args: argparse.Namespace) -> int:
    from anfang.aws.registry import RegistryError, Site  # noqa: PLC0415
    from anfang.contracts import key_id_for, load_public_key  # noqa: PLC0415

    registry = _registry(args.stack_name)
    try:
        public_key = load_public_key(_public_key_text(args.public_key))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    key_id = key_id_for(public_key)
    try:
        if registry.device(args.device_id) is None:
            registry.register_device(args.device_id, Site(args.site_id, args.site_type, args.site_name))
        if registry.resolve(key_id) is None:
            registry.add_key(public_key, role="device", device_ids=[args.device_id])
        else:
            registry.bind(key_id, args.device_id)
    except RegistryError as exc:
        raise CliError(f"{exc.code.value}: {exc.detail}") from exc
    print(key_id)
    return 0


def _devices_revoke(args: argparse.Namespace) -> int:
    from anfang.aws.registry import RegistryError  # noqa: PLC0415

    try:
        _registry(args.stack_name).revoke_key(args.key_id)
    except RegistryError as exc:
        raise CliError(f"{exc.code.value}: {exc.detail}") from exc
    print(f"revoked {args.key_id}")
    return 0


def _survey(stack_name: str) -> Any:
    """The device watch's view of the stack now: every registered, non-retired device's state (two Scans)."""
    from anfang.aws.last_seen import LastSeenTable  # noqa: PLC0415
    from anfang.pipeline.settings import DEFAULT_SILENT_DEVICE_THRESHOLDS, SiteThresholds  # noqa: PLC0415
    from anfang.pipeline.watch import DeviceWatch  # noqa: PLC0415

    outputs = _outputs(stack_name)
    if "LastSeenTableName" not in outputs:
        raise CliError(f"stack {stack_name} has no last-seen table; deploy the current template")
    try:
        thresholds = SiteThresholds.parse(outputs.get("SilentThresholds", DEFAULT_SILENT_DEVICE_THRESHOLDS))
    except ValueError as exc:
        raise CliError(f"the stack's SilentDeviceThresholds: {exc}") from exc
    watch = DeviceWatch(
        registry=_registry(stack_name),
        activity=LastSeenTable(_client("dynamodb"), outputs["LastSeenTableName"]),
        thresholds=thresholds,
    )
    return watch.survey()


def _notify(stack_name: str) -> Any:
    """Run the device watch from here, as its schedule would: report every silence not reported yet."""
    import boto3  # noqa: PLC0415

    from anfang.aws.environment import SettingsError  # noqa: PLC0415
    from anfang.pipeline.settings import DeviceWatchSettings  # noqa: PLC0415
    from anfang.pipeline.watch_wiring import build_watch  # noqa: PLC0415

    outputs = _outputs(stack_name)
    names = {
        "TOWN_CODE": "TownCode",
        "DEVICES_TABLE_NAME": "DevicesTableName",
        "LAST_SEEN_TABLE_NAME": "LastSeenTableName",
        "POLICE_VIDEO_TOPIC_ARN": "PoliceVideoTopicArn",
        "PSEUDONYM_SECRET_ARN": "PseudonymSecretArn",
        "RAW_IMAGE_BUCKET_NAME": "RawImageBucketName",
        "IMAGE_BUCKET_NAME": "ImageBucketName",
        "SILENT_DEVICE_THRESHOLDS": "SilentThresholds",
    }
    missing = sorted(output for output in names.values() if output not in outputs)
    if missing:
        raise CliError(f"stack {stack_name} lacks the outputs {', '.join(missing)}; deploy the current template")
    try:
        watch = build_watch(
            DeviceWatchSettings.from_env({variable: outputs[output] for variable, output in names.items()}),
            session=boto3.session.Session(),
        )
    except SettingsError as exc:
        raise CliError(str(exc)) from exc
    return watch.run()


def _ago(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _when(epoch: int | None) -> str:
    import datetime as dt  # noqa: PLC0415

    return "never" if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _devices_list(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    registry = _registry(args.stack_name)
    # a stack deployed before issue 19 has no last-seen table: its devices are listed without a state
    survey = _survey(args.stack_name) if "LastSeenTableName" in _outputs(args.stack_name) else None
    states = {state.device.device_id: state for state in survey.devices} if survey is not None else {}
    rows = []
    for device in registry.devices():
        keys = [{"key_id": k.key_id, "status": k.status} for k in registry.keys_of(device.device_id)]
        site = {"site_id": device.site.site_id, "site_type": device.site.site_type, "name": device.site.name}
        state = states.get(device.device_id)
        if device.retired_at is not None:
            status, seen = "retired", None
        elif state is None:  # no last-seen table, or registered since the survey read the registry
            status, seen = "unknown", None
        else:
            status, seen = ("silent" if state.silent else "online"), _when(state.last_seen_at)
        rows.append({"device_id": device.device_id, "site": site, "keys": keys, "state": status, "last_seen": seen})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))  # the online rate: the share of "online" rows
        return 0
    for row in rows:
        shown = ", ".join(f"{k['key_id']} ({k['status']})" for k in row["keys"]) or "no keys"
        site = row["site"]
        seen = f"last seen {row['last_seen']}" if row["last_seen"] else ""
        print(
            f"{row['device_id']}  {site['site_type']:<22} {site['site_id']}  {site['name']}  {row['state']:<7} {seen}"
            f"  keys: {shown}"
        )
    if survey is not None:
        online, rate = len(survey.devices) - len(survey.silent), survey.online_rate
        shown_rate = f"{rate:.0%}" if rate is not None else "n/a"
        print(f"online rate: {shown_rate} ({online} of {len(survey.devices)} registered devices not silent)")
    return 0


def _devices_silent(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    result = _notify(args.stack_name) if args.notify else _survey(args.stack_name)
    silent = result.silent
    reported_now = set(result.reported)
    rows = [
        {
            "device_id": s.device.device_id,
            "site_id": s.device.site.site_id,
            "site_type": s.device.site.site_type,
            "last_seen": _when(s.last_seen_at),
            "silent_secs": s.silent_secs,
            "threshold_secs": s.silent_after_secs,
            "reported_event_id": s.reported.event_id if s.reported is not None else None,
            "reported_now": s.device.device_id in reported_now,
        }
        for s in silent
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        if row["reported_now"]:
            reported = "reported now"
        elif row["reported_event_id"]:
            reported = f"reported {row['reported_event_id']}"
        else:
            reported = "not reported yet"
        print(
            f"{row['device_id']}  {row['site_type']:<22} {row['site_id']}  last seen {row['last_seen']}  "
            f"silent {_ago(row['silent_secs'])} (threshold {_ago(row['threshold_secs'])})  {reported}"
        )
    print(f"{len(rows)} silent device(s)" + (f", {len(reported_now)} reported now" if args.notify else ""))
    if args.notify and result.failed:
        raise CliError(f"{len(result.failed)} offline record(s) could not be published; run again")
    return 0


def _devices_import(args: argparse.Namespace) -> int:
    from anfang_ops.fleet import FleetError, import_devices  # noqa: PLC0415

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.file}: {exc}") from exc
    try:
        results = import_devices(_registry(args.stack_name), text, dry_run=args.dry_run)
    except FleetError as exc:
        raise CliError(f"{args.file}: {exc}") from exc
    for result in results:
        print(result)
    failed = sum(1 for r in results if not r.ok)
    changed = sum(1 for r in results if r.ok and r.actions)
    mode = " (dry run: nothing written)" if args.dry_run else ""
    print(f"{len(results)} rows: {changed} changed, {len(results) - changed - failed} unchanged, {failed} failed{mode}")
    return 1 if failed else 0


def _devices_retire(args: argparse.Namespace) -> int:
    from anfang.aws.registry import RegistryError  # noqa: PLC0415

    registry = _registry(args.stack_name)
    record = registry.device(args.device_id)
    if record is None:
        raise CliError(f"device {args.device_id} is not registered")
    if args.dry_run:
        keys = [k.key_id for k in registry.keys_of(args.device_id) if args.device_id in k.device_ids]
        print(f"would retire {args.device_id} (site {record.site.site_id}) and unbind {len(keys)} key(s)")
        return 0
    try:
        retired = registry.retire_device(args.device_id)
    except RegistryError as exc:
        raise CliError(f"{exc.code.value}: {exc.detail}") from exc
    print(f"retired {args.device_id} at {retired.retired_at:%Y-%m-%d %H:%M:%S}Z; no key may send for it")
    return 0


def _sites_update(args: argparse.Namespace) -> int:
    from anfang.aws.registry import RegistryError  # noqa: PLC0415

    if args.name is None and args.site_type is None:
        raise CliError("give --name and/or --site-type")
    registry = _registry(args.stack_name)
    if args.dry_run:
        devices = [d for d in registry.devices() if d.site.site_id == args.site_id]
        if not devices:
            raise CliError(f"no device is registered at site {args.site_id}")
        print(f"would update site {args.site_id} on {len(devices)} device(s)")
        return 0
    try:
        updated = registry.update_site(args.site_id, name=args.name, site_type=args.site_type)
    except RegistryError as exc:
        raise CliError(f"{exc.code.value}: {exc.detail}") from exc
    site = updated[0].site
    print(f"site {site.site_id}: {site.site_type}, {site.name!r} on {len(updated)} device(s)")
    return 0


def _partners_list(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    partners = _registry(args.stack_name).partners()
    if args.json:
        rows = [
            {
                "key_id": p.key_id,
                "role": p.role,
                "name": p.name,
                "status": p.status,
                "registered_at": p.registered_at.isoformat() if p.registered_at else None,
                "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None,
            }
            for p in partners
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for p in partners:
        print(f"{p.key_id}  {p.role:<18} {p.status:<8} {p.name}")
    return 0


def _partners_revoke(args: argparse.Namespace) -> int:
    from anfang.aws.registry import RegistryError  # noqa: PLC0415

    registry = _registry(args.stack_name)
    key = registry.resolve(args.key_id)
    if key is None:
        raise CliError(f"no key {args.key_id}")
    if key.role == "device":
        raise CliError(f"{args.key_id} is a device key; use `anfang devices revoke`")
    if args.dry_run:
        print(f"would revoke the {key.role} key {args.key_id} ({key.status})")
        return 0
    try:
        registry.revoke_key(args.key_id)
    except RegistryError as exc:
        raise CliError(f"{exc.code.value}: {exc.detail}") from exc
    print(f"revoked {args.key_id}")
    return 0


def _partners_register(args: argparse.Namespace) -> int:
    from anfang.aws.registry import RegistryError  # noqa: PLC0415
    from anfang.contracts import load_public_key  # noqa: PLC0415

    try:
        public_key = load_public_key(_public_key_text(args.public_key))
        info = _registry(args.stack_name).add_key(public_key, role="health_commission", name=args.name)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    except RegistryError as exc:
        raise CliError(f"{exc.code.value}: {exc.detail}") from exc
    print(info.key_id)
    return 0


def _dlq_redrive(args: argparse.Namespace) -> int:
    from anfang_ops.redrive import redrive  # noqa: PLC0415
    from anfang_ops.stackinfo import DLQ_OUTPUTS  # noqa: PLC0415

    dlq_key, target_key = DLQ_OUTPUTS[args.queue]
    outputs = _outputs(args.stack_name)
    moved = redrive(_client("sqs"), outputs[dlq_key], outputs[target_key], max_messages=args.max_messages)
    print(f"moved {moved} messages from the {args.queue} dead-letter queue back to its queue")
    return 0


def _status(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415
    from dataclasses import asdict  # noqa: PLC0415

    from anfang_ops.stackinfo import StackNotFoundError  # noqa: PLC0415
    from anfang_ops.status import collect, render  # noqa: PLC0415

    if not 5 <= args.minutes <= 1440:
        raise CliError("--minutes must be between 5 and 1440")
    try:
        panels = collect(
            _client("cloudwatch"), _client("sqs"), _client("cloudformation"), args.stack_name, minutes=args.minutes
        )
    except StackNotFoundError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps([asdict(panel) for panel in panels], ensure_ascii=False, indent=2))
    else:
        print(render(panels, minutes=args.minutes))
    return 0


def _local_up(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from anfang_ops.local import LocalStack  # noqa: PLC0415 - needs the dev extra (moto server)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from anfang_ops.towns import TownConfigError, find_town  # noqa: PLC0415

    try:
        town = find_town(Path(args.root) / "infra" / "towns", args.town)
    except TownConfigError as exc:
        raise CliError(str(exc)) from exc
    stack = LocalStack(
        Path(args.root),
        Path(args.state_dir),
        town=town,
        aws_port=args.aws_port,
        api_port=args.api_port,
        schedule_interval_max_secs=args.schedule_interval_secs,
    )
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


def _local_demo(args: argparse.Namespace) -> int:
    from anfang_ops.local.demo import DemoError, run_demo  # noqa: PLC0415 - needs the dev extra (moto server)

    try:
        result = run_demo(
            Path(args.root).resolve(),
            Path(args.out),
            events=args.events,
            devices=args.devices,
            timeout_secs=args.timeout,
        )
    except DemoError as exc:
        raise CliError(str(exc)) from exc
    print(result.summary())
    print(f"records: {args.out}/gov_cloud.ndjson, {args.out}/police_video.ndjson; report: {args.out}/report.html")
    print(f"function logs: {args.out}/functions.log")
    return 0 if result.ok else 1


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m`` or ``1h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90, 90s, 30m, 1h)") from None


def _local_soak(args: argparse.Namespace) -> int:
    from anfang_ops.local.soak import SoakConfig, SoakError, run_soak  # noqa: PLC0415 - needs the dev extra

    # SIGTERM unwinds like Ctrl-C, so the agents, the workers and the local stack are stopped, not orphaned
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        config = SoakConfig(
            duration_secs=args.duration,
            agents=args.agents,
            devices_per_agent=args.devices_per_agent,
            rate_per_sec=args.rate,
            peak_factor=args.peak_factor,
            images=args.images,
            outage_secs=args.outage,
            agent_kills=args.agent_kills,
            broken_every=args.broken_every,
            worker_kills=args.worker_kills,
            api_restarts=args.api_restarts,
            aws_error_rate=args.aws_error_rate,
            aws_storm_secs=args.aws_storm,
            drain_timeout_secs=args.drain_timeout,
            sample_secs=args.sample,
            seed=args.seed,
        )
        report = run_soak(Path(args.root).resolve(), Path(args.out), config, stream=sys.stdout)
    except SoakError as exc:
        raise CliError(str(exc)) from exc
    except KeyboardInterrupt:
        print("anfang local soak: interrupted; agents, workers and the local stack stopped", file=sys.stderr)
        return 130
    print(f"report: {args.out}/soak.html, {args.out}/soak.json; function logs: {args.out}/functions.log")
    return 0 if report["ok"] else 1


# ---------------------------------------------------------------------------------------------------- parser


def _add_towns(sub: Any) -> None:
    towns = sub.add_parser("towns", help="per-town deployment settings").add_subparsers(dest="action", required=True)
    render = towns.add_parser("render", help="write samconfig.toml from infra/towns/*.toml")
    render.add_argument("--towns-dir", default="infra/towns")
    render.add_argument("--output", default="samconfig.toml")
    render.add_argument("--check", action="store_true", help="fail if the file differs instead of writing it")
    render.set_defaults(run=_towns_render)
    new = towns.add_parser("new", help="write infra/towns/<name>.toml for a new town and render samconfig.toml")
    new.add_argument("--code", required=True, help="the township's 9-digit division code, or the 8-digit town code")
    new.add_argument("--name", required=True, help="the town's name in Latin letters (tags, dashboards, file name)")
    new.add_argument("--name-zh", default=None, help="the town's own name, e.g. 青城镇")
    new.add_argument("--env", default=None, help="file and config-environment name (default: from --name)")
    new.add_argument("--region", default="cn-north-1")
    new.add_argument("--no-health-codes", action="store_true", help="a town without the health-code feature")
    new.add_argument("--towns-dir", default="infra/towns")
    new.add_argument("--output", default="samconfig.toml")
    new.add_argument("--dry-run", action="store_true")
    new.set_defaults(run=_towns_new)


def _add_registry(sub: Any) -> None:
    from anfang.contracts import SITE_TYPES  # noqa: PLC0415

    devices = sub.add_parser("devices", help="the device registry").add_subparsers(dest="action", required=True)
    register = devices.add_parser(
        "register", help="register a device and bind a key to it (a gateway key: once per device); prints the key id"
    )
    register.add_argument("--stack-name", required=True)
    register.add_argument("--device-id", required=True, help="20-digit GB/T 28181 device id in the town")
    register.add_argument("--public-key", required=True, help="file with the Ed25519 public key (PEM or base64url)")
    register.add_argument("--site-id", required=True)
    register.add_argument("--site-type", required=True, choices=SITE_TYPES)
    register.add_argument("--site-name", required=True)
    register.set_defaults(run=_devices_register)
    revoke = devices.add_parser("revoke", help="revoke a key (kept for audit)")
    revoke.add_argument("--stack-name", required=True)
    revoke.add_argument("--key-id", required=True, help=_KEY_ID_HELP)
    revoke.set_defaults(run=_devices_revoke)
    listing = devices.add_parser("list", help="registered devices, their sites, keys, last seen and the online rate")
    listing.add_argument("--stack-name", required=True)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_devices_list)
    silent = devices.add_parser("silent", help="registered devices silent past their site type's threshold")
    silent.add_argument("--stack-name", required=True)
    silent.add_argument("--json", action="store_true")
    silent.add_argument(
        "--notify",
        action="store_true",
        help="run the device watch now: send the police a device_status offline record for each silence not sent",
    )
    silent.set_defaults(run=_devices_silent)
    bulk = devices.add_parser("import", help="register devices and bind keys from a CSV file, reporting per row")
    bulk.add_argument("file", help="CSV with the header device_id,site_id,site_type,site_name,public_key")
    bulk.add_argument("--stack-name", required=True)
    bulk.add_argument("--dry-run", action="store_true", help="check every row and say what would change")
    bulk.set_defaults(run=_devices_import)
    retire = devices.add_parser("retire", help="retire a device: its keys may no longer send for it")
    retire.add_argument("--stack-name", required=True)
    retire.add_argument("--device-id", required=True)
    retire.add_argument("--dry-run", action="store_true")
    retire.set_defaults(run=_devices_retire)


def _add_sites_and_partners(sub: Any) -> None:
    from anfang.contracts import SITE_TYPES  # noqa: PLC0415

    sites = sub.add_parser("sites", help="sites of the device registry").add_subparsers(dest="action", required=True)
    update = sites.add_parser("update", help="rename a site or change its type on every device at it")
    update.add_argument("--stack-name", required=True)
    update.add_argument("--site-id", required=True)
    update.add_argument("--name", default=None)
    update.add_argument("--site-type", default=None, choices=SITE_TYPES)
    update.add_argument("--dry-run", action="store_true")
    update.set_defaults(run=_sites_update)

    partners = sub.add_parser("partners", help="partner keys").add_subparsers(dest="action", required=True)
    partner = partners.add_parser("register", help="register the health commission's key; prints the key id")
    partner.add_argument("--stack-name", required=True)
    partner.add_argument("--public-key", required=True)
    partner.add_argument("--name", required=True, help="e.g. the county health commission")
    partner.set_defaults(run=_partners_register)
    plist = partners.add_parser("list", help="partner keys, active and revoked")
    plist.add_argument("--stack-name", required=True)
    plist.add_argument("--json", action="store_true")
    plist.set_defaults(run=_partners_list)
    prevoke = partners.add_parser("revoke", help="revoke a partner key (kept for audit)")
    prevoke.add_argument("--stack-name", required=True)
    prevoke.add_argument("--key-id", required=True, help=_KEY_ID_HELP)
    prevoke.add_argument("--dry-run", action="store_true")
    prevoke.set_defaults(run=_partners_revoke)


def _add_consumers(sub: Any) -> None:
    from anfang_ops.stackinfo import DLQ_OUTPUTS  # noqa: PLC0415

    decrypt = sub.add_parser("decrypt", help="replace encrypted envelopes in NDJSON records by their values")
    decrypt.add_argument("--input", "-i", default="-", help="NDJSON records (default: stdin)")
    decrypt.add_argument("--output", "-o", default="-", help="where to write (default: stdout)")
    decrypt.set_defaults(run=_decrypt)

    dlq = sub.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="action", required=True)
    redrive = dlq.add_parser("redrive", help="move a dead-letter queue's messages back to its source queue")
    redrive.add_argument("--stack-name", required=True)
    redrive.add_argument("queue", choices=list(DLQ_OUTPUTS))
    redrive.add_argument("--max-messages", type=int, default=None)
    redrive.set_defaults(run=_dlq_redrive)


def _add_consume(sub: Any) -> None:
    consume = sub.add_parser("consume", help="the reference consumer: drain a destination queue, verified")
    consume.add_argument("--stack-name", required=True)
    consume.add_argument("--destination", choices=["gov_cloud", "police_video"], required=True)
    consume.add_argument("--out", required=True, help="folder of records.ndjson, images/ and state.sqlite3")
    consume.add_argument("--decrypt", action="store_true", help="decrypt the police fields (kms:Decrypt)")
    consume.add_argument("--images", action="store_true", help="download the images the records reference")
    consume.add_argument("--wait-secs", type=int, default=20, help="SQS long-poll wait (0-20)")
    consume.add_argument("--max-messages", type=int, default=None, help="stop after receiving this many")
    consume.add_argument("--exit-when-idle", action="store_true", help="stop at the first empty poll")
    consume.set_defaults(run=_consume)


def _add_audit(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the release log").add_subparsers(dest="action", required=True)
    verify = audit.add_parser("verify", help="check the chain, the signatures and records; report the first break")
    verify.add_argument("--stack-name", required=True)
    verify.add_argument("--destination", choices=["gov_cloud", "police_video"], default=None)
    verify.add_argument("--records", default=None, help="NDJSON records (received or archived) to check")
    verify.add_argument(
        "--complete", action="store_true", help="the records are every release of their entries: report a drop"
    )
    verify.set_defaults(run=_audit_verify)


def _add_replay(sub: Any) -> None:
    replay = sub.add_parser("replay", help="re-publish archived records of a time range to a destination's topic")
    replay.add_argument("--stack-name", required=True)
    replay.add_argument("--destination", choices=["gov_cloud", "police_video"], required=True)
    replay.add_argument("--since", required=True, help="records received at or after (RFC 3339 with a zone)")
    replay.add_argument("--until", required=True, help="records received before (RFC 3339 with a zone)")
    replay.add_argument("--event-type", action="append", default=None, help="only this event type (repeatable)")
    replay.add_argument("--max-records", type=int, default=10000, help="publish at most this many (default 10000)")
    replay.add_argument("--dry-run", action="store_true", help="read and count, publish nothing")
    replay.set_defaults(run=_replay)


def _add_status(sub: Any) -> None:
    status = sub.add_parser("status", help="the town dashboard's numbers in the terminal")
    status.add_argument("--stack-name", required=True)
    status.add_argument("--minutes", type=int, default=60, help="how far back (5-minute points)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)


def _add_local(sub: Any) -> None:
    local = sub.add_parser("local", help="the local stack").add_subparsers(dest="action", required=True)
    up = local.add_parser("up", help="start the local stack and run until SIGINT/SIGTERM")
    up.add_argument("--root", default=".", help="the repository (template.yaml, functions/, infra/towns/)")
    up.add_argument(
        "--town", default=None, help="a town file, or a town's name or code in infra/towns/ (default: the first)"
    )
    up.add_argument("--state-dir", default=".anfang/local")
    up.add_argument("--aws-port", type=int, default=0, help="moto server port (default: a free one)")
    up.add_argument("--api-port", type=int, default=0, help="API port (default: a free one)")
    up.add_argument(
        "--schedule-interval-secs",
        type=float,
        default=60,
        help="run scheduled functions (the device watch) at most this far apart (default 60; the template's is 300)",
    )
    up.set_defaults(run=_local_up)
    demo = local.add_parser("demo", help="run the whole system locally with simulated sites and report")
    demo.add_argument("--root", default=".", help="the repository (template.yaml, functions/, infra/towns/)")
    demo.add_argument("--out", default=".anfang/demo", help="records, agent state and report.html")
    demo.add_argument("--events", type=int, default=300)
    demo.add_argument("--devices", type=int, default=4)
    demo.add_argument("--timeout", type=float, default=170.0, help="seconds to wait for delivery")
    demo.set_defaults(run=_local_demo)
    soak = local.add_parser(
        "soak", help="sustained load from edge agents with injected faults, then reconcile every event"
    )
    soak.add_argument("--root", default=".", help="the repository (template.yaml, functions/, infra/towns/)")
    soak.add_argument("--out", default=".anfang/soak", help="soak.json, soak.html, agents' state, consumers' output")
    soak.add_argument("--duration", type=_duration, default=600.0, help="load time (90, 90s, 30m); then it drains")
    soak.add_argument("--agents", type=int, default=4, help="edge agents (gateways), one process each")
    soak.add_argument("--devices-per-agent", type=int, default=4)
    soak.add_argument("--rate", type=float, default=4.0, help="steady events/s of the whole fleet")
    soak.add_argument("--peak-factor", type=float, default=3.0, help="the morning peak's rate × the steady one")
    soak.add_argument("--images", action=argparse.BooleanOptionalAction, default=True, help="fixture JPEGs")
    soak.add_argument("--outage", type=_duration, default=60.0, help="each gateway's uplink outage (0: none)")
    soak.add_argument("--agent-kills", type=int, default=1, help="agents killed -9 during the flush after it")
    soak.add_argument("--worker-kills", type=int, default=2, help="function workers killed -9 mid-batch")
    soak.add_argument("--api-restarts", type=int, default=1)
    soak.add_argument("--aws-error-rate", type=float, default=0.0, help="share of AWS requests throttled or 5xx")
    soak.add_argument("--aws-storm", type=_duration, default=0.0, help="one mid-run storm of 30%% AWS errors")
    soak.add_argument("--broken-every", type=int, default=0, help="every Nth event from a broken camera (0: none)")
    soak.add_argument("--drain-timeout", type=_duration, default=600.0)
    soak.add_argument("--sample", type=float, default=5.0, help="seconds between time-series points")
    soak.add_argument("--seed", type=int, default=1)
    soak.set_defaults(run=_local_soak)


def _add_relays(sub: Any) -> None:
    from anfang_ops.relays.cli import add_relay_commands  # noqa: PLC0415 - the relay group lives with the relays

    add_relay_commands(sub)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="anfang", description="anfang: operate a town stack")
    sub = root.add_subparsers(dest="command", required=True)
    _add_towns(sub)
    _add_registry(sub)
    _add_sites_and_partners(sub)
    _add_consumers(sub)
    _add_audit(sub)
    _add_consume(sub)
    _add_replay(sub)
    _add_status(sub)
    _add_local(sub)
    _add_relays(sub)
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
    except Exception as exc:
        # botocore's own failures (no region, no credentials, endpoint unreachable) are the user's to fix: one line
        if type(exc).__module__.startswith("botocore."):
            print(f"anfang {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
