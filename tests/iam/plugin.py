"""pytest wiring of the IAM call recorder: installed for the whole session, the coverage test ordered last.

``tests/conftest.py`` imports these hooks. The recorder is installed at configure time, before any test module
imports boto3 clients, so every client made in the session is hooked; ``tests/contract/test_iam_coverage.py``
is moved to the end of the run so it checks what the functional and local-stack tests recorded before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

from .check import Report
from .recorder import Recorder

ROOT: Final = Path(__file__).resolve().parents[2]
COVERAGE_MODULE: Final = "test_iam_coverage.py"
# Test folders whose tests drive the functions' own code; a run that leaves one out cannot judge unused grants.
RECORDING_FOLDERS: Final = ("tests/functional/api", "tests/functional/pipeline", "tests/integration/local")

_recorder_key = pytest.StashKey[Recorder]()
_report_key = pytest.StashKey[Report]()
_complete_key = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    recorder = Recorder(ROOT)
    recorder.install()
    config.stash[_recorder_key] = recorder
    config.stash[_complete_key] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder = config.stash.get(_recorder_key, None)
    if recorder is not None:
        recorder.uninstall()


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[_complete_key] = False


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.path.name == COVERAGE_MODULE]
    if last:
        items[:] = [item for item in items if item.path.name != COVERAGE_MODULE] + last
    collected = {str(item.path.relative_to(ROOT)) for item in items if item.path.is_relative_to(ROOT)}
    every_folder = all(any(path.startswith(folder + "/") for path in collected) for folder in RECORDING_FOLDERS)
    filtered = bool(config.option.keyword or config.option.markexpr)
    if filtered or not every_folder:
        config.stash[_complete_key] = False


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    recorder = _active
    if recorder is not None:
        recorder.current_test = nodeid


_active: Recorder | None = None


@pytest.fixture(scope="session", autouse=True)
def _iam_recorder_active(pytestconfig: pytest.Config) -> Iterator[None]:
    global _active  # noqa: PLW0603 - pytest's logstart hook gets no config to find the recorder on
    _active = pytestconfig.stash[_recorder_key]
    yield
    _active = None


@pytest.fixture(scope="session")
def iam_recorder(pytestconfig: pytest.Config) -> Recorder:
    """What the session recorded so far (the coverage test runs last)."""
    return pytestconfig.stash[_recorder_key]


@pytest.fixture(scope="session")
def iam_run_is_complete(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> bool:
    """True when every recording test folder ran unfiltered and nothing failed before the coverage test."""
    return pytestconfig.stash[_complete_key] and request.session.testsfailed == 0


@pytest.fixture(scope="session")
def iam_report_sink(pytestconfig: pytest.Config) -> Callable[[Report], None]:
    """The coverage test hands its report here; the terminal summary prints it."""

    def publish(report: Report) -> None:
        pytestconfig.stash[_report_key] = report

    return publish


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(_report_key, None)
    if report is not None:
        terminalreporter.write_sep("-", "IAM coverage")
        terminalreporter.write_line(report.text())
