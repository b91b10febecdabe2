"""Where the benches find real clips: ../shared/data/clips (or $SYNCNET_DATA_DIR/clips), never
copied into the project."""

import os
import sys
from pathlib import Path

SHARED_CLIPS = Path(os.environ.get("SYNCNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "clips"


def find_clip(glob_or_path: str) -> Path:
    """A path as given, or the first shared clip matching a glob; exits with the reason when neither is there."""
    if Path(glob_or_path).is_file():
        return Path(glob_or_path)
    matches = [] if Path(glob_or_path).is_absolute() else sorted(SHARED_CLIPS.glob(glob_or_path))
    if not matches:
        sys.exit(f"no clip {glob_or_path} (set SYNCNET_DATA_DIR or pass a path)")
    return matches[0]
