"""The local stack's worker processes (the analyse function's containers): isolated, parallel, output kept."""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import pytest

from anfang_ops.local.deploy import LocalFunction
from anfang_ops.local.runtime import WorkerError, WorkerLost, WorkerPool

HANDLER = """
import json, logging, os, time

def lambda_handler(event, context):
    print(json.dumps({"pid": os.getpid(), "fn": context.function_name}))
    logging.getLogger("handler").warning("a warning on stderr")
    if event.get("fail"):
        raise ValueError("bad batch")
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "batchItemFailures": []}
"""


@pytest.fixture
def pool(tmp_path: Path) -> WorkerPool:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "handler.py").write_text(HANDLER, encoding="utf-8")
    function = LocalFunction("AnalyseFunction", "fn", "handler.lambda_handler", 30, 512, {})
    workers = WorkerPool(tmp_path, function, workers=2, region="cn-north-1")
    yield workers
    workers.close()


def test_invocations_run_in_worker_processes_in_parallel_and_their_output_reaches_the_parent(pool: WorkerPool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # GIVEN two pollers invoking at once, each batch taking 1.5 s in the handler
    pool({"sleep": 0}, None)  # spawn cost out of the timing
    pool({"sleep": 0}, None)
    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), ThreadPoolExecutor(2) as threads:
        answers = list(threads.map(lambda _: pool({"sleep": 1.5}, None), range(2)))
    elapsed = time.monotonic() - started
    # THEN they ran in two other processes at the same time, and what the handler printed is in our stdout
    pids = {answer["pid"] for answer in answers}
    assert len(pids) == 2 and os.getpid() not in pids
    assert elapsed < 2.9, elapsed
    assert out.getvalue().count('"fn": "AnalyseFunction"') == 2
    assert out.getvalue().count("a warning on stderr") == 2  # stderr too, as Lambda logs both


def test_a_handler_that_raises_fails_its_batch_with_its_output_kept(pool: WorkerPool) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(WorkerError, match="ValueError: bad batch"):
        pool({"fail": True}, None)
    assert '"fn": "AnalyseFunction"' in out.getvalue()
    # AND the worker survives for the next batch
    assert pool({"sleep": 0}, None)["batchItemFailures"] == []


def test_a_worker_killed_mid_invocation_loses_only_its_batch_and_is_replaced(pool: WorkerPool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pids_before = set(pool.pids())
    with contextlib.redirect_stdout(io.StringIO()), ThreadPoolExecutor(2) as threads:
        # GIVEN two batches in flight, one in each container
        doomed = threads.submit(pool, {"sleep": 3}, None)
        deadline = time.monotonic() + 10
        while not pool.busy_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = pool.busy_pids()[0]
        survivor = threads.submit(pool, {"sleep": 1}, None)
        time.sleep(0.2)
        # WHEN the busy one is killed with SIGKILL, as Lambda loses a container
        os.kill(victim, 9)
        # THEN its invocation raises WorkerLost (nothing about its batch is known), the other one finishes
        with pytest.raises(WorkerLost, match="died mid-invocation"):
            doomed.result(timeout=60)
        assert survivor.result(timeout=60)["pid"] != victim
    # AND a new container took the dead one's place: same size, a new process, which answers
    assert pool.replaced == 1
    assert len(pool.pids()) == 2 and victim not in pool.pids() and set(pool.pids()) != pids_before
    answers = {pool({"sleep": 0}, None)["pid"] for _ in range(4)}
    assert victim not in answers


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in state  # exited, not yet reaped


def test_workers_do_not_outlive_a_killed_local_stack(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "handler.py").write_text(HANDLER, encoding="utf-8")
    host = f"""
import time
from pathlib import Path
from anfang_ops.local.deploy import LocalFunction
from anfang_ops.local.runtime import WorkerPool
function = LocalFunction("AnalyseFunction", "fn", "handler.lambda_handler", 30, 512, {{}})
pool = WorkerPool(Path({str(tmp_path)!r}), function, workers=2, region="cn-north-1")
print(" ".join(map(str, pool.pids())), flush=True)
time.sleep(120)
"""
    # GIVEN a process hosting two workers, WHEN it is killed with SIGKILL (no chance to shut its pool down)
    stack = subprocess.Popen([sys.executable, "-c", host], stdout=subprocess.PIPE, text=True)
    assert stack.stdout is not None
    workers = [int(pid) for pid in stack.stdout.readline().split()]
    assert len(workers) == 2 and not any(_gone(pid) for pid in workers)
    stack.kill()
    stack.wait(timeout=30)
    # THEN its workers exit on their own within seconds instead of idling on as orphans
    deadline = time.monotonic() + 15
    while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_gone(pid) for pid in workers)
