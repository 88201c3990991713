from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .receiver import EdgeReceiver
from .support import KeyPair, make_key


@pytest.fixture
def key(tmp_path: Path) -> KeyPair:
    return make_key(tmp_path)


@pytest.fixture
def receiver(key: KeyPair) -> Iterator[EdgeReceiver]:
    with EdgeReceiver([key.private_key.public_key()]) as server:
        yield server
