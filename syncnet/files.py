"""Writing outputs: checked before the work (a bad destination fails in a second, naming the user's
path, not after an hour with the name of a temporary file), then written atomically - into a
temporary file beside the target, renamed into place, so the target is always either the old file
or the complete new one."""

import contextlib
import os
import tempfile
from pathlib import Path


def check_writable(path) -> Path:
    """Raise, naming `path`, unless a file can be written there: its folder exists and is
    writable, and `path` is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; name a file to write")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such folder (for {path})")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{path.parent}: cannot write into this folder (for {path})")
    return path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside `path` (same suffix, so writers that go by it pick the same
    format). When the block ends, it replaces `path` with the permissions of a newly created file
    (mkstemp's own are owner-only); when the block raises, it is removed."""
    path = check_writable(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        yield temporary
        umask = os.umask(0)  # reading the umask means setting it; put it straight back
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
