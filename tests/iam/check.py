"""Check the recorded calls against the roles: denied requests, grants no test used, calls not evaluated.

>>> report = check(recorder, Roles(ROOT))
>>> report.denied       # each a request some function made that its role does not allow
[]
>>> print(report.text())
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .actions import UNMAPPED
from .policy import Grant, RenderedRole, Roles, base_arn, implied
from .recorder import Call, Recorder

__all__ = ["Denied", "Report", "check"]


@dataclass(frozen=True, order=True)
class Denied:
    function: str
    action: str
    resource: str
    operation: str  # the API operation that needed it, e.g. "dynamodb.TransactWriteItems"
    test: str


@dataclass
class Report:
    calls: Counter[str] = field(default_factory=Counter)  # per function
    operations: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    denied: list[Denied] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    foreign: Counter[str] = field(default_factory=Counter)  # requests on resources no deployment of the template has
    used: set[Grant] = field(default_factory=set)
    granted: set[Grant] = field(default_factory=set)
    managed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    deployments: int = 0
    complete: bool = False  # a complete run judges unused grants; a partial one only lists them
    explanations: dict[Grant, str] = field(default_factory=dict)  # why an unused grant stays

    @property
    def unused(self) -> list[Grant]:
        return sorted(self.granted - self.used)

    def text(self) -> str:
        lines = [f"IAM coverage: {sum(self.calls.values())} calls recorded over {self.deployments} deployments"]
        for function in sorted(self.calls):
            ops = ", ".join(f"{op} {n}" for op, n in sorted(self.operations[function].items()))
            lines.append(f"  {function}: {self.calls[function]} calls ({ops})")
        for function, managed in sorted(self.managed.items()):
            lines.append(f"  {function}: managed policies, not evaluated (Lambda's own): {', '.join(managed)}")
        if self.denied:
            lines.append("denied (the role does not allow them), one example each:")
            groups: dict[tuple[str, str, str], list[Denied]] = defaultdict(list)
            for d in self.denied:
                groups[(d.function, d.action, d.operation)].append(d)
            for (function, action, operation), found in sorted(groups.items()):
                example = found[0]
                lines.append(f"  {function}: {action} ({operation}) x{len(found)}, e.g. on {example.resource}")
                lines.append(f"      in {example.test or '(a fixture)'}")
        if self.unmapped:
            lines.append("operations the checker does not know (add them to tests/iam/actions.py):")
            lines.extend(f"  {u}" for u in self.unmapped)
        if self.foreign:
            lines.append("requests on resources the template does not define (made by a test's own setup):")
            lines.extend(f"  {k}: {n}" for k, n in sorted(self.foreign.items()))
        unused = self.unused
        judged = "each must be explained" if self.complete else "listed only: a partial run"
        lines.append(f"granted but not exercised by any test: {len(unused)} ({judged})")
        for g in unused:
            why = self.explanations.get(g, "not explained")
            lines.append(f"  {g.function}: {g.action} on {g.resource} ({g.policy}): {why}")
        return "\n".join(lines)


def check(recorder: Recorder, roles: Roles) -> Report:
    """Evaluate every recorded call against the role of its function in the deployment that owns its resource."""
    report = Report(deployments=len(recorder.deployments))
    rendered: list[tuple[dict[str, RenderedRole], dict[str, str]]] = []
    owners: dict[str, list[int]] = defaultdict(list)  # base resource ARN -> indexes into ``rendered``
    by_region: dict[str, list[int]] = defaultdict(list)
    for deployment in recorder.deployments:
        index = len(rendered)
        function_roles, keys = roles.render(deployment)
        rendered.append((function_roles, keys))
        by_region[deployment.region].append(index)
        for role in function_roles.values():
            report.granted.update(role.grants())
            report.managed[role.function] = role.managed
            for statement in role.statements:
                for _, resource in statement.resources:
                    if "*" not in resource:
                        owners[base_arn(resource)].append(index)
        for resource in keys:
            owners[resource].append(index)

    seen: set[tuple[str, str, str, str, str]] = set()
    for call in list(recorder.calls):
        report.calls[call.function] += 1
        report.operations[call.function][f"{call.service}.{call.operation}"] += 1
        _check_call(call, rendered, owners, by_region, report, seen)
    report.denied.sort()
    report.unmapped = sorted(set(report.unmapped))
    return report


def _check_call(
    call: Call,
    rendered: list[tuple[dict[str, RenderedRole], dict[str, str]]],
    owners: dict[str, list[int]],
    by_region: dict[str, list[int]],
    report: Report,
    seen: set[tuple[str, str, str, str, str]],
) -> None:
    direct = [r for r in call.requests if r[0] != UNMAPPED]
    report.unmapped.extend(resource for action, resource in call.requests if action == UNMAPPED)
    candidates = sorted({i for _, resource in direct for i in owners.get(base_arn(resource), [])})
    if not candidates:
        for action, _ in direct:
            report.foreign[f"{call.function} {action}"] += 1
        return
    keys: dict[str, str] = {}
    for index in candidates:
        keys.update(rendered[index][1])
    wanted = direct + implied(call.service, call.operation, direct, keys)
    for action, resource in wanted:
        memo = (call.function, action, resource, call.region, call.operation)
        if memo in seen:
            continue
        seen.add(memo)
        grants = [
            grant
            for index in candidates
            if call.function in rendered[index][0]
            for grant in rendered[index][0][call.function].allowing(action, resource)
        ]
        if grants:
            report.used.update(grants)
        else:
            report.denied.append(Denied(call.function, action, resource, f"{call.service}.{call.operation}", call.test))
