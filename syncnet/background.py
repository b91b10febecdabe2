"""Running an iterator in a background thread, a few items ahead of its consumer."""

import atexit
import queue
import threading
import weakref
from collections.abc import Callable, Iterator

# How long the interpreter's exit waits for a producer to finish the item it is making (a frame
# decoded, a face detected: milliseconds; a live stream's read: up to its network timeout).
EXIT_WAIT_SECONDS = 5.0

# The producers that have not ended, stopped and waited for when the interpreter exits (below).
_running = weakref.WeakSet()


class ReadAhead:
    """Iterates over `items` produced by a daemon thread, at most `depth` items ahead; the
    producer's exception is raised here. Leaving the loop early? Call `stop()` (or use it as a
    context manager, which does), and the producer ends at its next item.

    `replaces_waiting(item)`: when True for a new item, it replaces the item waiting to be
    consumed (counted in `dropped`) instead of waiting for room: a live stream stays near its live
    edge when the consumer falls behind (with depth 1).
    """

    _END = object()

    def __init__(
        self, items: Iterator, depth: int = 1, replaces_waiting: Callable[[object], bool] | None = None, name: str = "syncnet-read-ahead"
    ):
        self.waiting = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.dropped = 0
        self.replaces_waiting = replaces_waiting
        self.thread = threading.Thread(target=self._produce, args=(items,), name=name, daemon=True)
        _running.add(self)
        self.thread.start()

    def _produce(self, items):
        try:
            for item in items:
                if self.replaces_waiting is not None and self.replaces_waiting(item):
                    try:
                        self.waiting.get_nowait()  # only this thread puts, so the put below cannot block
                        self.dropped += 1
                    except queue.Empty:
                        pass
                if not self._hand_over(item):
                    return
            self._hand_over(self._END)
        except BaseException as error:  # the consumer raises it
            self._hand_over(error)
        finally:
            if hasattr(items, "close"):  # a generator left early closes what it opened (files, decoders)
                items.close()

    def _hand_over(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.waiting.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def stop(self):
        """Let the producer end (at its next item)."""
        self.stopped.set()

    def join(self, timeout: float | None = None):
        """Wait for the producer to have ended (after `stop()` or its last item)."""
        self.thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __iter__(self) -> Iterator:
        """The items, until they end or `stop()` is called (checked every 0.2 s)."""
        while not self.stopped.is_set():
            try:
                item = self.waiting.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


# Producers still running when the interpreter exits - a consumer interrupted by Ctrl-C leaves its
# generator, and with it the `with ReadAhead` that would stop the producer, to be collected later -
# are stopped and waited for here, before finalization. A daemon thread left inside dlib or FFmpeg
# would be ended by finalization as it takes the GIL back, unwinding C++ frames that cannot be
# unwound: the process then aborts ("terminate called without an active exception", exit -6).
@atexit.register
def _stop_running_at_exit():
    for read_ahead in list(_running):
        read_ahead.stop()
    for read_ahead in list(_running):
        read_ahead.join(EXIT_WAIT_SECONDS)
