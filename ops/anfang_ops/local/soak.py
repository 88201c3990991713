"""``anfang local soak``: the local stack under a county's kind of day, with AWS misbehaving, then an audit.

What runs (all real parts, on one machine):

- the local stack (:class:`LocalStack`): moto over HTTP, the API served on 127.0.0.1, the analyse function in
  two worker processes and the process function in one, so that either can be killed like a Lambda container;
- ``agents`` edge agents (``anfang-edge run``, one process per gateway, one site type each in turn), each with a
  simulator source making every event type, fixture images included, on a load profile: a steady rate, a
  morning peak of ``peak_factor`` × for ``peak_secs``, then nothing after ``duration_secs``. Each agent reaches
  the API through its own :class:`Uplink`, which the soak cuts for ``outage_secs`` once per gateway;
- the reference consumer (``anfang consume``'s :class:`Consumer`: release-log verification, dedupe by
  (device_id, event_id)) draining each destination queue, with a record of every raw delivery.

Faults, each on its own flag: AWS throttling and 5xx at ``aws_error_rate`` (and ``storm_rate`` during a storm)
through botocore's ``before-send`` hook (:mod:`.faults`); a function worker killed with SIGKILL while it handles
a batch (its messages come back after the visibility timeout); the API restarted (connections cut, a cold start);
an edge agent killed with SIGKILL in the middle of the flush that follows its outage, and started again.

After ``duration_secs`` the soak drains (agents' spools empty, pipeline and destination queues empty) and
reconciles. The ground truth is the agents' spools: a simulator commits its next sequence number in the same
transaction as the events it spools, and every event carries ``source_ref = "sim-<seq>"`` (police_video keeps
it), so the events made are exactly sequences ``0 … next_seq-1`` of each agent. Each must be delivered once to
each destination (after the consumer's dedupe by the pair), or be in the agent's quarantine with its reason, or
in a dead-letter queue (listed with its stage); anything else is lost. The report: a one-screen summary,
``soak.json`` and ``soak.html`` (time series: made, accepted, delivered, queue depth, latency, memory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import random
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from anfang.aws.registry import DeviceRegistry, Site
from anfang.contracts import SITE_TYPES
from anfang.contracts.destinations import DESTINATION_INFO, DESTINATIONS
from anfang_ops.consume import Consumer, ConsumerClients, ConsumerConfig
from anfang_ops.towns import load_towns

from . import faults
from .agents import EdgeAgent, provision_agent
from .faults import AwsFaults
from .pollers import SqsPoller
from .soak_report import percentiles, render_html, summary_text
from .stack import ANALYSE_FUNCTION, PROCESS_FUNCTION, LocalStack
from .uplink import Uplink

__all__ = ["Accounting", "SoakConfig", "SoakError", "account", "plan", "run_soak"]

SOAK_ENTRIES: Final = frozenset(
    {"agents", "local", "consumers", "functions.log", "faults.log", "storm", "soak.json", "soak.html"}
)
SOAK_TOWN: Final = "gaoqing-tianzhen"
#: The stack's queues whose depth the report follows.
_QUEUES: Final[dict[str, str]] = {
    "analyse": "AnalyseQueueUrl",
    "process": "ProcessQueueUrl",
    **{d: DESTINATION_INFO[d].queue_output for d in DESTINATIONS},
}
_DEAD_LETTERS: Final[dict[str, str]] = {
    "analyse": "AnalyseDeadLetterQueueUrl",
    "process": "ProcessDeadLetterQueueUrl",
    **{d: DESTINATION_INFO[d].dead_letter_output for d in DESTINATIONS},
}


class SoakError(Exception):
    """The soak cannot start (its settings, its output folder)."""


@dataclass(frozen=True)
class SoakConfig:
    """The load, the faults and the limits of one soak (``anfang local soak --help`` explains each)."""

    duration_secs: float = 600.0
    agents: int = 4
    devices_per_agent: int = 4
    rate_per_sec: float = 4.0  # the whole fleet's steady rate
    peak_factor: float = 3.0
    peak_secs: float | None = None  # None: a sixth of the duration
    images: bool = True
    outage_secs: float = 60.0  # each gateway loses its uplink once for this long (0: never)
    agent_kills: int = 1  # gateways killed with SIGKILL during the flush after their outage
    broken_every: int = 0  # every Nth event has a truncated JPEG (a broken camera): rejected with its reason
    worker_kills: int = 2
    api_restarts: int = 1
    aws_error_rate: float = 0.0
    aws_storm_secs: float = 0.0  # one storm of storm_rate AWS errors, mid-run
    storm_rate: float = 0.3
    visibility_timeout_secs: int = 20
    drain_timeout_secs: float = 600.0
    sample_secs: float = 5.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.duration_secs < 10 or self.agents < 1 or self.devices_per_agent < 1 or self.rate_per_sec <= 0:
            raise SoakError("a soak needs a duration of 10 s or more, an agent, a device and a positive rate")
        if self.agent_kills > self.agents:
            raise SoakError(f"--agent-kills {self.agent_kills} is more than the {self.agents} agents")
        if self.agent_kills and not self.outage_secs:
            raise SoakError("--agent-kills kills agents during the flush after an outage: set --outage-secs")
        if self.outage_secs > 0.6 * self.duration_secs:
            raise SoakError("an outage must fit in the first 80% of the run: at most 60% of --duration")

    @property
    def peak(self) -> tuple[float, float]:
        length = self.peak_secs if self.peak_secs is not None else self.duration_secs / 6
        start = 0.3 * self.duration_secs
        return start, min(start + length, self.duration_secs)

    def rate_steps(self) -> list[tuple[float, float]]:
        """One agent's profile: its share of the steady rate, the peak, then nothing."""
        share = self.rate_per_sec / self.agents
        start, end = self.peak
        return [(start, share * self.peak_factor), (end, share), (self.duration_secs, 0.0)]

    def planned_events(self) -> int:
        start, end = self.peak
        steady = self.duration_secs - (end - start)
        return self.agents * math.floor((steady + (end - start) * self.peak_factor) * self.rate_per_sec / self.agents)


@dataclass(frozen=True)
class Action:
    at: float  # seconds after the start
    kind: str  # outage, kill_worker, restart_api
    target: str = ""


def plan(config: SoakConfig) -> list[Action]:
    """When each fault happens: spread over the run, none in the first or last tenth."""
    d = config.duration_secs
    actions = []
    if config.outage_secs:
        span = 0.7 * d - config.outage_secs
        for index in range(config.agents):
            at = 0.1 * d + span * (index / max(1, config.agents - 1) if config.agents > 1 else 0.5)
            actions.append(Action(at, "outage", str(index)))
    functions = (ANALYSE_FUNCTION, PROCESS_FUNCTION)
    for k in range(config.worker_kills):
        actions.append(Action(d * (0.1 + 0.8 * (k + 0.5) / config.worker_kills), "kill_worker", functions[k % 2]))
    if config.aws_storm_secs:
        actions.append(Action(0.5 * d, "storm"))
    for k in range(config.api_restarts):
        actions.append(Action(d * (0.15 + 0.7 * (k + 0.5) / config.api_restarts), "restart_api"))
    return sorted(actions, key=lambda a: a.at)


@dataclass
class _Arrival:
    destination: str
    key: tuple[str, str]
    arrived: float  # unix seconds
    captured: float
    received: float
    queued_secs: float  # SNS publish → drained


@dataclass
class _Run:
    """What the soak observed while it ran (shared by its threads; lists are appended under the GIL)."""

    started: float
    arrivals: list[_Arrival] = field(default_factory=list)
    raw: dict[str, Counter[tuple[str, str]]] = field(default_factory=lambda: {d: Counter() for d in DESTINATIONS})
    records: dict[str, dict[tuple[str, str], int | None]] = field(default_factory=lambda: {d: {} for d in DESTINATIONS})
    unverified: Counter[str] = field(default_factory=Counter)
    series: list[dict[str, Any]] = field(default_factory=list)
    happenings: list[dict[str, Any]] = field(default_factory=list)
    peak_rss: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def note(self, kind: str, **detail: Any) -> None:
        self.happenings.append({"t": round(time.time() - self.started, 1), "kind": kind, **detail})


def _fresh_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    strangers = sorted(p.name for p in out.iterdir() if p.name not in SOAK_ENTRIES)
    if strangers:
        raise SoakError(f"{out} holds {', '.join(strangers[:3])}, which the soak did not write; choose another --out")
    for path in out.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _seq_of(record: dict[str, Any]) -> int | None:
    ref = record.get("source_ref")
    if isinstance(ref, str) and ref.startswith("sim-") and ref[4:].isdigit():
        return int(ref[4:])
    return None


def _ts(value: Any) -> float:
    return dt.datetime.fromisoformat(str(value)).timestamp() if value else 0.0


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set of a process in MiB, from /proc (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0.0, 0.0
    values = {line.split(":")[0]: line.split()[1] for line in text.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    return int(values.get("VmRSS", 0)) / 1024, int(values.get("VmHWM", 0)) / 1024


class _Soak:
    def __init__(self, root: Path, out: Path, config: SoakConfig, stream: Any) -> None:
        self.root = root
        self.out = out
        self.config = config
        self.stream = stream
        self.stop = threading.Event()
        self.agents: list[EdgeAgent] = []
        self.uplinks: list[Uplink] = []
        self.run_state = _Run(started=time.time())
        self.device_agent: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------- the run

    def run(self) -> dict[str, Any]:
        import boto3  # noqa: PLC0415 - the local stack needs the dev extra

        config = self.config
        fixtures = self.root.parent / "shared" / "fixtures" / "images"
        towns = load_towns(self.root / "infra" / "towns")
        town = next((t for t in towns if t.env == SOAK_TOWN), towns[0])
        aws = AwsFaults(
            rate=config.aws_error_rate,
            storm_flag=str(self.out / "storm") if config.aws_storm_secs else None,
            storm_rate=config.storm_rate,
            log=str(self.out / "faults.log"),
            seed=config.seed,
        )
        stack = LocalStack(
            self.root,
            self.out / "local",
            town=town,
            analyse_workers=2,
            process_workers=1,
            visibility_timeout_max_secs=config.visibility_timeout_secs,
            aws_faults=aws,  # the functions' clients get them; the soak's own are exempt
        )
        with stack:
            assert stack.info is not None
            session = faults.exempt(boto3.session.Session(region_name=stack.info.region))

            def client(name: str) -> Any:
                return session.client(name, endpoint_url=stack.info.aws_endpoint_url)  # type: ignore[union-attr]

            outputs = stack.info.outputs
            registry = DeviceRegistry(
                client("dynamodb"), outputs["DevicesTableName"], town_code=stack.info.town, cache_ttl_secs=0
            )
            host, _, port = stack.info.api_url.removeprefix("http://").partition(":")
            started = time.time() + 3  # the profile's time zero: the agents are up by then
            self.run_state.started = started
            start, end = config.peak
            for index in range(config.agents):
                uplink = Uplink(host, int(port))
                self.uplinks.append(uplink)
                self.agents.append(self._provision(registry, stack.town.town.code, index, uplink, fixtures, started))
            self.stream.write(
                f"anfang local soak: {config.agents} agents × {config.devices_per_agent} devices, "
                f"{config.rate_per_sec:g} events/s (peak ×{config.peak_factor:g} at {start:.0f}–{end:.0f} s), "
                f"{config.duration_secs:.0f} s, about {config.planned_events()} events\n"
            )
            for agent in self.agents:
                agent.start()
            self.run_state.note("agents started", agents=len(self.agents))
            threads = [
                threading.Thread(target=self._consume, args=(d, client, outputs), name=f"consume-{d}")
                for d in DESTINATIONS
            ]
            threads.append(threading.Thread(target=self._sample, args=(stack, client("sqs")), name="sampler"))
            threads.append(threading.Thread(target=self._faults, args=(stack,), name="faults"))
            for thread in threads:
                thread.start()
            try:
                drained = self._drain(stack, client("sqs"))
            finally:
                self.stop.set()
                for thread in threads:
                    thread.join(timeout=60)
                for agent in self.agents:
                    agent.stop()
                for uplink in self.uplinks:
                    uplink.close()
            report = self._reconcile(stack, client("sqs"), drained, aws)
        (self.out / "soak.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (self.out / "soak.html").write_text(render_html(report), encoding="utf-8")
        return report

    def _provision(
        self, registry: DeviceRegistry, town: str, index: int, uplink: Uplink, fixtures: Path, started: float
    ) -> EdgeAgent:
        config = self.config
        prefix = f"{town}{index + 50:02d}1320"  # soak sites take unit numbers 50 up, apart from the demo's
        site = Site(
            site_id=f"soak-{index + 1:02d}", site_type=SITE_TYPES[index % len(SITE_TYPES)], name=f"soak {index + 1}"
        )
        device_ids = [f"{prefix}{serial:06d}" for serial in range(1, config.devices_per_agent + 1)]
        for device_id in device_ids:
            self.device_agent[device_id] = index
        steps = ", ".join(f"[{after!r}, {rate!r}]" for after, rate in config.rate_steps())
        source = (
            f'type = "simulator"\ndevices = {config.devices_per_agent}\ndevice_id_prefix = "{prefix}"\n'
            f"rate_per_sec = {config.rate_per_sec / config.agents!r}\nrate_steps = [{steps}]\n"
            f"started_at = {started:.3f}\nseed = {config.seed * 100 + index}\n"
            f'images = {"true" if config.images else "false"}\nfixtures_dir = "{fixtures}"\n'
            + (f"broken_every = {config.broken_every}\n" if config.broken_every else "")
        )
        # batches of 20 make a backlog several requests long, so that a flush has a middle to be killed in
        settings = "batch_max_events = 20\nlinger_ms = 200\nretry_initial_ms = 200\nretry_max_secs = 5\n"
        return provision_agent(
            registry,
            site,
            device_ids,
            self.out / "agents" / site.site_id,
            api_url=uplink.url,
            source=source,
            settings=settings,
        )

    # -------------------------------------------------------------------------------------------- consumers

    def _consume(self, destination: str, client: Callable[[str], Any], outputs: dict[str, str]) -> None:
        sqs = client("sqs")
        url = outputs[DESTINATION_INFO[destination].queue_output]  # type: ignore[index]
        consumer = Consumer(
            ConsumerConfig(out_dir=self.out / "consumers" / destination, destination=destination),
            ConsumerClients(
                sqs=sqs,
                s3=client("s3"),
                kms=client("kms"),
                dynamodb=client("dynamodb"),
                queue_url=url,
                log_table=outputs["ReleaseLogTableName"],
                signing_key_arn=outputs["ReleaseSigningKeyArn"],
            ),
        )
        state = self.run_state
        try:
            while not self.stop.is_set():
                try:
                    messages = sqs.receive_message(
                        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, AttributeNames=["SentTimestamp"]
                    ).get("Messages", [])
                    if not messages:
                        continue
                    now = time.time()
                    before = consumer.stats.counts["rejected_unverified"]
                    done = consumer.handle(messages)  # verified against the release log, deduped by the pair
                    state.unverified[destination] += consumer.stats.counts["rejected_unverified"] - before
                    for message in done:
                        record = json.loads(message["Body"])
                        key = (str(record.get("device_id")), str(record.get("event_id")))
                        state.raw[destination][key] += 1
                        if key in state.records[destination]:
                            continue
                        sent = int(message.get("Attributes", {}).get("SentTimestamp", now * 1000)) / 1000
                        state.records[destination][key] = _seq_of(record)
                        state.arrivals.append(
                            _Arrival(
                                destination,
                                key,
                                now,
                                _ts(record.get("captured_at")),
                                _ts(record.get("received_at")),
                                max(0.0, now - sent),
                            )
                        )
                    if done:
                        sqs.delete_message_batch(
                            QueueUrl=url,
                            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                        )
                except Exception as exc:  # the consumer must outlive one bad round; what failed is reported
                    state.problems.append(f"{destination} consumer: {type(exc).__name__}: {exc}"[:300])
                    self.stop.wait(1)
        finally:
            consumer.close()

    # ---------------------------------------------------------------------------------------------- sampling

    def _processes(self, stack: LocalStack) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {"stack and soak": [os.getpid()]}
        for name, pool in stack.pools.items():
            groups[f"{name} worker"] = pool.pids()
        groups["edge agent"] = [a.process.pid for a in self.agents if a.process is not None]
        return groups

    def _sample(self, stack: LocalStack, sqs: Any) -> None:
        state = self.run_state
        last_arrival = 0
        next_line = 30.0
        while not self.stop.wait(self.config.sample_secs):
            with contextlib.suppress(Exception):
                spools = [a.spool_state() for a in self.agents]
                depths = {}
                for name, output in _QUEUES.items():
                    attributes = sqs.get_queue_attributes(
                        QueueUrl=stack.info.outputs[output],  # type: ignore[union-attr]
                        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                    )["Attributes"]
                    depths[name] = int(attributes["ApproximateNumberOfMessages"]) + int(
                        attributes["ApproximateNumberOfMessagesNotVisible"]
                    )
                arrivals = state.arrivals[last_arrival:]
                last_arrival += len(arrivals)
                latency = [a.arrived - a.captured for a in arrivals if a.captured]
                rss = {}
                for group, pids in self._processes(stack).items():
                    current = [_rss_mb(pid) for pid in pids]
                    rss[group] = round(sum(now for now, _ in current), 1)  # the group's total
                    # a group's peak is that of its largest process (each is a container or a gateway)
                    state.peak_rss[group] = max([state.peak_rss.get(group, 0.0), *(max(c) for c in current)])
                point: dict[str, Any] = {
                    "t": round(time.time() - state.started, 1),
                    "made": sum(s.next_seq for s in spools),
                    "accepted": sum(s.counters.get("sent", 0) for s in spools),
                    "spooled": sum(s.depth for s in spools),
                    **{f"delivered_{d}": len(state.records[d]) for d in DESTINATIONS},
                    "queues": depths,
                    "latency": percentiles(latency),
                    "rss_mb": rss,
                }
                state.series.append(point)
                if point["t"] >= next_line:  # a line now and then, so a long soak shows it is alive
                    next_line = point["t"] + 60
                    self.stream.write(
                        f"  {point['t']:>6.0f} s  made {point['made']}  accepted {point['accepted']}  "
                        + "  ".join(f"{d} {point[f'delivered_{d}']}" for d in DESTINATIONS)
                        + f"  spooled {point['spooled']}  queued {sum(depths.values())}\n"
                    )
                    self.stream.flush()

    # ------------------------------------------------------------------------------------------------ faults

    def _faults(self, stack: LocalStack) -> None:
        state = self.run_state
        for action in plan(self.config):
            if self.stop.wait(max(0.0, state.started + action.at - time.time())):
                return
            try:
                if action.kind == "outage":
                    threading.Thread(target=self._outage, args=(int(action.target),), daemon=True).start()
                elif action.kind == "kill_worker":
                    self._kill_worker(stack, action.target)
                elif action.kind == "storm":
                    threading.Thread(target=self._storm, daemon=True).start()
                elif action.kind == "restart_api":
                    stack.restart_api(down_secs=2.0)
                    state.note("API restarted", down_secs=2.0)
            except Exception as exc:
                state.problems.append(f"fault {action.kind} failed: {type(exc).__name__}: {exc}"[:300])

    def _storm(self) -> None:
        flag = self.out / "storm"
        flag.touch()
        self.run_state.note("AWS error storm", rate=self.config.storm_rate, secs=self.config.aws_storm_secs)
        try:
            self.stop.wait(self.config.aws_storm_secs)
        finally:
            flag.unlink(missing_ok=True)
            self.run_state.note("AWS error storm over")

    def _outage(self, index: int) -> None:
        agent, uplink, state = self.agents[index], self.uplinks[index], self.run_state
        uplink.cut()
        state.note("uplink cut", agent=agent.name, secs=self.config.outage_secs)
        if self.stop.wait(self.config.outage_secs):
            uplink.restore()
            return
        backlog = agent.spool_state().depth
        uplink.restore()
        state.note("uplink restored", agent=agent.name, backlog=backlog)
        if index >= self.config.agent_kills:
            return
        # kill -9 mid-flush: while a batch of the backlog is on its way (the uplink has carried part of a
        # request, nothing of it acknowledged yet) or once some batches are acknowledged and more remain
        flushed_from = uplink.bytes_up
        deadline = time.time() + 20
        depth = backlog
        while time.time() < deadline and not self.stop.is_set():
            depth = agent.spool_state().depth
            if uplink.bytes_up - flushed_from >= 16_384 or 0 < depth < backlog or depth == 0:
                break
            time.sleep(0.005)
        agent.kill()
        state.note(
            "edge agent killed (SIGKILL)",
            agent=agent.name,
            backlog=backlog,
            left_in_spool=depth,
            bytes_sent_of_flush=uplink.bytes_up - flushed_from,
        )
        agent.start()

    def _kill_worker(self, stack: LocalStack, function: str) -> None:
        pool = stack.pools[function]
        deadline = time.time() + 30
        while time.time() < deadline and not self.stop.is_set():
            busy = pool.busy_pids()
            if busy:
                pid = random.Random(self.config.seed).choice(busy)
                os.kill(pid, 9)
                self.run_state.note("worker killed (SIGKILL) mid-batch", function=function, pid=pid)
                return
            time.sleep(0.01)
        self.run_state.note("worker kill skipped: no busy worker within 30 s", function=function)

    # --------------------------------------------------------------------------------------------- draining

    def _drain(self, stack: LocalStack, sqs: Any) -> bool:
        """Wait for the run's end, then until spools and queues are empty; False when the drain timed out."""
        state, config = self.run_state, self.config
        self.stop.wait(max(0.0, state.started + config.duration_secs - time.time()))
        self.stream.write(f"  load done after {time.time() - state.started:.0f} s; draining\n")
        deadline = time.time() + config.drain_timeout_secs
        quiet_since: float | None = None
        made = -1
        while time.time() < deadline:
            spools = [a.spool_state() for a in self.agents]
            now_made = sum(s.next_seq for s in spools)
            busy = sum(s.depth for s in spools) + (now_made != made)  # still spooling, or still making
            made = now_made
            for output in _QUEUES.values():
                attributes = sqs.get_queue_attributes(
                    QueueUrl=stack.info.outputs[output],  # type: ignore[union-attr]
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                busy += int(attributes["ApproximateNumberOfMessages"])
                busy += int(attributes["ApproximateNumberOfMessagesNotVisible"])
            if busy == 0:
                quiet_since = quiet_since or time.time()
                if time.time() - quiet_since >= 3:
                    return True
            else:
                quiet_since = None
            time.sleep(1)
        return False

    # ------------------------------------------------------------------------------------------- reconciling

    def _reconcile(self, stack: LocalStack, sqs: Any, drained: bool, aws: AwsFaults) -> dict[str, Any]:
        state, config = self.run_state, self.config
        spools = [a.spool_state(quarantine=True) for a in self.agents]
        made = {a.name: s.next_seq for a, s in zip(self.agents, spools, strict=True)}
        rejected: list[dict[str, Any]] = []
        rejected_seqs: set[tuple[int, int]] = set()
        for i, s in enumerate(spools):
            for device_id, event_id, code, reason, body in s.quarantined:
                seq = _seq_of(json.loads(body)) if body else None
                rejected.append({"device_id": device_id, "event_id": event_id, "code": code, "reason": reason})
                if seq is not None:
                    rejected_seqs.add((i, seq))
        dead = self._dead_letters(stack, sqs)
        totals: dict[str, Any] = {"made": sum(made.values()), "planned": config.planned_events()}
        accounting = account([s.next_seq for s in spools], rejected_seqs, state.records, self.device_agent, dead)
        state.problems.extend(accounting.problems)
        totals["delivered"] = {d: len(state.records[d]) for d in DESTINATIONS}
        totals["lost"] = {d: len(missing) for d, missing in accounting.lost.items()}
        lost = {
            d: [{"agent": self.agents[i].name, "seq": seq} for i, seq in missing[:100]]
            for d, missing in accounting.lost.items()
        }
        delivered = totals["delivered"]
        totals["accepted"] = sum(s.counters.get("sent", 0) for s in spools)
        totals["duplicate_at_api"] = sum(s.counters.get("duplicate_at_api", 0) for s in spools)
        totals["rejected"] = len(rejected)
        totals["rejected_by_code"] = dict(Counter(r["code"] for r in rejected).most_common())
        totals["dead_lettered"] = len(dead)
        totals["raw_duplicates"] = {d: sum(n - 1 for n in state.raw[d].values() if n > 1) for d in DESTINATIONS}
        totals["duplicates_after_dedupe"] = self._written_twice()
        totals["unverified"] = dict(state.unverified)
        if any(totals["lost"].values()):
            state.problems.append(f"lost: {totals['lost']}")
        if any(totals["duplicates_after_dedupe"].values()):
            state.problems.append(f"duplicated after dedupe: {totals['duplicates_after_dedupe']}")
        if not drained:
            state.problems.append("the drain timed out: something was still in a spool or queue")
        injected = faults.injected(self.out / "faults.log")
        timings = _stage_latency(state.arrivals, stack)
        first = min((a.captured for a in state.arrivals if a.captured), default=state.started)
        last = max((a.arrived for a in state.arrivals), default=state.started)
        both = min(delivered.values()) if delivered else 0
        return {
            "config": asdict(config),
            "started_at": dt.datetime.fromtimestamp(state.started, dt.UTC).isoformat(),
            "elapsed_secs": round(time.time() - state.started, 1),
            "ok": not state.problems,
            "problems": state.problems,
            "totals": totals,
            "made_per_agent": made,
            "throughput": {
                "delivered_per_sec": round(both / max(1.0, last - first), 2),
                "window_secs": round(last - first, 1),
                # while the load ran (from a fifth of the way in, past the start-up): what the stack held
                "delivered_per_sec_under_load": _slope(state.series, 0.2 * config.duration_secs, config.duration_secs),
                "offered_per_sec_under_load": _slope(
                    state.series, 0.2 * config.duration_secs, config.duration_secs, key="made"
                ),
            },
            "latency_secs": timings,
            "peak_rss_mb": {k: round(v, 1) for k, v in sorted(state.peak_rss.items())},
            "faults": {
                "aws": dict(Counter(f"{service} {code}" for _, service, _, code in injected).most_common()),
                "aws_total": len(injected),
                "aws_settings": {"rate": aws.rate, "storm_secs": config.aws_storm_secs, "storm_rate": aws.storm_rate},
                "lost_worker_batches": sum(p.lost_batches for p in stack.pollers if isinstance(p, SqsPoller)),
                # what reached our code past botocore's retries: messages a function failed, retried by SQS
                "messages_failed_and_retried": dict(
                    sum(
                        (Counter({p.function.name: p.failed_items}) for p in stack.pollers if isinstance(p, SqsPoller)),
                        Counter(),
                    )
                ),
                "workers_replaced": {name: pool.replaced for name, pool in stack.pools.items()},
            },
            "happenings": state.happenings,
            "rejected": rejected[:100],
            "dead_letters": dead[:100],
            "lost": lost,
            "series": state.series,
        }

    def _dead_letters(self, stack: LocalStack, sqs: Any) -> list[dict[str, Any]]:
        """Every message in a dead-letter queue, with its stage and whether the event arrived anyway."""
        out = []
        for stage, output in _DEAD_LETTERS.items():
            url = stack.info.outputs[output]  # type: ignore[union-attr]
            seen: set[str] = set()
            while True:
                messages = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=300,
                    AttributeNames=["ApproximateReceiveCount"],
                ).get("Messages", [])
                fresh = [m for m in messages if m["MessageId"] not in seen]
                if not fresh:
                    break
                for message in fresh:
                    seen.add(message["MessageId"])
                    try:
                        body = json.loads(message["Body"])
                    except ValueError:
                        body = {}
                    key = (str(body.get("device_id")), str(body.get("event_id")))
                    arrived = [d for d in DESTINATIONS if key in self.run_state.records[d]]
                    out.append(
                        {
                            "stage": stage,
                            "device_id": key[0],
                            "event_id": key[1],
                            "seq": _seq_of(body),
                            "receive_count": int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
                            "delivered_anyway_to": arrived,
                        }
                    )
        return out

    def _written_twice(self) -> dict[str, int]:
        """Pairs the reference consumer wrote more than once (its dedupe failing): must be 0."""
        twice: dict[str, int] = {}
        for destination in DESTINATIONS:
            path = self.out / "consumers" / destination / "records.ndjson"
            keys: Counter[tuple[str, str]] = Counter()
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    record = json.loads(line)
                    keys[(record["device_id"], record["event_id"])] += 1
            twice[destination] = sum(n - 1 for n in keys.values() if n > 1)
        return twice


@dataclass(frozen=True)
class Accounting:
    """Per destination, the (agent, seq) of every event neither delivered, rejected nor dead-lettered; and what
    does not add up (a record of no event the soak made)."""

    lost: dict[str, list[tuple[int, int]]]
    problems: list[str]


def account(
    made: Sequence[int],
    rejected: set[tuple[int, int]],
    records: Mapping[str, Mapping[tuple[str, str], int | None]],
    device_agent: Mapping[str, int],
    dead: Sequence[Mapping[str, Any]],
) -> Accounting:
    """Reconcile what the agents made with what each destination got.

    ``made[i]`` is agent i's next sequence number (it made ``0 … made[i]-1``); ``rejected`` the (agent, seq) in
    the agents' quarantines; ``records[destination]`` maps each delivered (device_id, event_id) to the ``seq`` of
    its ``source_ref`` when the destination keeps it (police_video), else None; ``dead`` the dead letters with
    ``device_id``, ``event_id`` and ``seq`` (None when their body does not say). A record of a destination that
    drops ``source_ref`` is matched through the pair another destination (or a dead letter) named.
    """
    expected = {(i, seq) for i, count in enumerate(made) for seq in range(count)}
    pair_seq: dict[tuple[str, str], tuple[int, int]] = {}
    for got in records.values():
        for key, seq in got.items():
            if seq is not None and key[0] in device_agent:
                pair_seq[key] = (device_agent[key[0]], seq)
    dead_seqs = set()
    for letter in dead:
        key = (str(letter["device_id"]), str(letter["event_id"]))
        if letter.get("seq") is not None and key[0] in device_agent:
            pair_seq.setdefault(key, (device_agent[key[0]], int(letter["seq"])))
        if key in pair_seq:
            dead_seqs.add(pair_seq[key])
    lost: dict[str, list[tuple[int, int]]] = {}
    problems = []
    for destination, got in records.items():
        strangers = [key for key in got if key not in pair_seq]
        if strangers:
            problems.append(
                f"{destination} received {len(strangers)} record(s) matching no event made (no police record or "
                "dead letter names their pair)"
            )
        delivered = {pair_seq[key] for key in got if key in pair_seq}
        lost[destination] = sorted(expected - delivered - rejected - dead_seqs)
    return Accounting(lost, problems)


def _slope(series: list[dict[str, Any]], start: float, end: float, *, key: str = "") -> float | None:
    """Events per second between two times of the series (delivered to both destinations, or ``key``)."""

    def value(point: dict[str, Any]) -> float:
        if key:
            return float(point[key])
        return float(min(point[f"delivered_{d}"] for d in DESTINATIONS))

    window = [p for p in series if start <= p["t"] <= end]
    if len(window) < 2 or window[-1]["t"] <= window[0]["t"]:
        return None
    return round((value(window[-1]) - value(window[0])) / float(window[-1]["t"] - window[0]["t"]), 2)


def _stage_latency(arrivals: list[_Arrival], stack: LocalStack) -> dict[str, dict[str, float | None]]:
    """p50/p95/p99/max per stage: edge → API (spool and uplink, outages included), analyse and process (queue
    wait + invocation, summed over retries), delivery (SNS publish → drained), and end to end."""
    delivered = {a.key for a in arrivals}
    spent: dict[str, dict[tuple[str, str], float]] = {"analyse": {}, "process": {}}
    for timing in list(stack.timings):
        stage = {ANALYSE_FUNCTION: "analyse", PROCESS_FUNCTION: "process"}.get(timing.function)
        if stage is not None and timing.key in delivered:
            spent[stage][timing.key] = spent[stage].get(timing.key, 0.0) + timing.queued_secs + timing.run_secs
    last: dict[tuple[str, str], float] = defaultdict(float)
    for a in arrivals:
        last[a.key] = max(last[a.key], a.arrived - a.captured)
    return {
        "edge → API": percentiles([a.received - a.captured for a in arrivals if a.destination == "police_video"]),
        "analyse (events with images)": percentiles(list(spent["analyse"].values())),
        "process": percentiles(list(spent["process"].values())),
        "delivery": percentiles([a.queued_secs for a in arrivals]),
        "end to end": percentiles(list(last.values())),
    }


def run_soak(root: Path, out: Path, config: SoakConfig, *, stream: Any = sys.stderr) -> dict[str, Any]:
    """Run one soak (see the module docstring); the report, also written to ``out``."""
    out = out.resolve()  # the agents read their config's paths relative to the config's own folder
    _fresh_out(out)
    with (
        (out / "functions.log").open("w", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        report = _Soak(root.resolve(), out, config, stream).run()
    stream.write(summary_text(report) + "\n")
    return report
