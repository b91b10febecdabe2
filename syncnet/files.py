"""Writing outputs atomically: into a temporary file beside the target, renamed into place, so the
target is always either the old file or the complete new one."""

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path beside `path` (same suffix, so writers that go by it pick the same
    format). When the block ends, it replaces `path` with the permissions of a newly created file
    (mkstemp's own are owner-only); when the block raises, it is removed."""
    path = Path(path)
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
