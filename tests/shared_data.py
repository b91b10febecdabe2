"""The real clips in ../shared/data (research-only; never copied into the project).

Tests that need them call `shared_clip(pattern)`, which skips with the reason when they are absent.
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("SYNCNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_clip(pattern: str) -> Path:
    """The one clip under SHARED_DATA/clips matching a glob pattern, or skip the test."""
    clips = SHARED_DATA / "clips"
    if not clips.is_dir():
        pytest.skip(f"real clips not found at {clips} (set SYNCNET_DATA_DIR to run this test)")
    matches = sorted(clips.glob(pattern))
    if not matches:
        pytest.skip(f"no clip matching {pattern!r} in {clips}")
    return matches[0]
