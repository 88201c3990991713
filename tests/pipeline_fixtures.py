"""Shared test data of the pipeline tests: the real fixture images and small JPEG helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(os.environ.get("ANFANG_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
IMAGES = FIXTURES / "images"


def image_bytes(name: str) -> bytes:
    """The bytes of a fixture image (the test is skipped when the shared fixtures are absent)."""
    path = IMAGES / name
    if not path.exists():
        pytest.skip(f"fixture image {path} is not available")
    return path.read_bytes()
