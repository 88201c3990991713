"""Session-wide test wiring: the IAM call recorder (``tests/iam``) hooks every boto3 client of the run."""

from tests.iam.plugin import (  # noqa: F401 - pytest finds hooks and fixtures by name in a conftest
    _iam_recorder_active,
    iam_recorder,
    iam_report_sink,
    iam_run_is_complete,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_deselected,
    pytest_runtest_logstart,
    pytest_terminal_summary,
    pytest_unconfigure,
)
