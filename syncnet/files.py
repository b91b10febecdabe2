"""Writing outputs: checked before the work (a bad destination fails in a second, naming the user's
path, not after an hour with the name of a temporary file), then written atomically - into a
temporary file beside the target, renamed into place, so the target is always either the old file
or the complete new one. Writes that belong together can hold Ctrl-C back until all are done."""

import contextlib
import os
import signal
import tempfile
import threading
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


@contextlib.contextmanager
def uninterrupted():
    """Hold Ctrl-C (SIGINT) back until the block ends, then deliver it: for writes that belong
    together - a checkpoint, and the state that says which epoch it is - which a KeyboardInterrupt
    halfway would leave half-written or disagreeing. Outside the main thread, where Python handles
    no signals, it holds nothing back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        signal.raise_signal(signal.SIGINT)  # to the handler there was: KeyboardInterrupt, as a rule
