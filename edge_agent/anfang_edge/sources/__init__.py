"""Sources: where events come from (nouns). Each spools events and acknowledges only after the commit.

>>> source = build_source(config.sources[0], spool)
>>> threading.Thread(target=source.run, args=(stop,)).start()
"""

from __future__ import annotations

import threading
from typing import Protocol

from ..config import (
    Gat1400SourceConfig,
    HttpSourceConfig,
    SimulatorSourceConfig,
    SourceConfig,
    WatchDirSourceConfig,
)
from ..spool import Spool
from .gat1400 import Gat1400Source
from .http import HttpSource
from .simulator import Simulator
from .watch_dir import WatchDir

__all__ = ["Source", "build_source"]


class Source(Protocol):
    """A producer of events: ``run`` until ``stop`` is set, spooling what it receives."""

    name: str

    def run(self, stop: threading.Event) -> None:
        """Produce until ``stop`` is set."""
        ...


def build_source(config: SourceConfig, spool: Spool, *, index: int = 0) -> Source:
    """The source described by ``config``."""
    if isinstance(config, SimulatorSourceConfig):
        return Simulator(config, spool, name=f"simulator{index}")
    if isinstance(config, WatchDirSourceConfig):
        return WatchDir(config, spool, name=f"watch_dir{index}")
    if isinstance(config, HttpSourceConfig):
        return HttpSource(config, spool, name=f"http{index}")
    if isinstance(config, Gat1400SourceConfig):
        return Gat1400Source(config, spool, name=f"gat1400{index}")
    raise TypeError(f"unknown source {config!r}")
