"""`syncnet monitor`: the lip sync of a live stream (or a file), chunk by chunk, while it plays.

    syncnet monitor SOURCE [--chunk 4] [--json] [--model NAME_OR_PATH] [--min-confidence C]
                           [--window 8] [--timeout 10] [--retries 5]

SOURCE is a file, an HLS playlist (.m3u8) or any URL FFmpeg opens (rtmp://, rtsp://, srt://, ...).

- A thread reads: PyAV decodes the stream and places it on video.py's timeline, the one `syncnet
  score` reads a file on - each frame in its 25 fps slot (`video.FrameGrid`, ffmpeg's fps=25
  round=near), each audio frame at its own timestamp, resampled to 16 kHz mono
  (`video.AudioTimeline`: gaps silent, overlaps dropped) - so a file scored whole and the same file
  streamed see the same frames against the same sound. It cuts the stream into chunks of --chunk
  seconds. The main thread scores each chunk with `scoring.score_media` - the faces, crops, towers,
  offset search and `offsets.Verdict` of `syncnet score`, with the model's calibration - on the
  chunk's frames held in memory, while the next chunk is read. At most three chunks of frames are
  held (one scored, one waiting, one filling), whatever the stream's length. When the scoring falls
  behind a live stream, the waiting chunk is dropped for the newer one (counted in the summary).
- One line (or JSON object) per chunk: stream time, offset, LSE-D, LSE-C, verdict and
  `verdict_reason`, and a rolling offset: the confidence-weighted median offset of the last --window
  chunks whose verdict was in sync or out of sync. The verdict: "in sync" is `syncnet score`'s
  (`offsets.Verdict`); a chunk not in sync is "out of sync" when its offset beats chance for the
  chunk's evidence (`calibration.offset_beats_chance`: the bar scales as 1 / sqrt(windows)), else "low
  confidence"; "silent" (video.is_silent) and "not scored" (no face, ...) chunks count for nothing.
- A URL that stalls (no data for --timeout seconds: make it longer than an HLS segment), breaks, or
  ends while live, is opened again after 1, 2, 4, ... seconds, at most --retries times in a row;
  then the monitor gives up with a one-line error (exit 1). The end of a file or of a finished
  stream (a VOD playlist) ends the monitor; so does Ctrl-C. Both print a summary and exit 0.
"""

import contextlib
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from . import hyperparameters as hp
from .background import ReadAhead
from .errors import UserError

DEFAULT_CHUNK_SECONDS = 4.0
DEFAULT_TIMEOUT = 10.0  # s without data before a stream counts as stalled
DEFAULT_RETRIES = 5
DEFAULT_WINDOW = 8  # chunks in the rolling offset
MAX_REWIND_SECONDS = 30  # HLS restarts up to 3 segments back: a stream no further behind has the same clock
FIRST_RETRY_DELAY = 1.0  # s, doubled at every failed attempt
MAX_RETRY_DELAY = 30.0

# Verdicts, one per chunk
IN_SYNC = "in sync"
OUT_OF_SYNC = "out of sync"
LOW_CONFIDENCE = "low confidence"  # an offset, but not a reliable one: counts for nothing
SILENT = "silent"
NOT_SCORED = "not scored"  # no face, too short, ...: `error` says why


class StreamError(UserError):
    """The source cannot be read (any more): one line, for the user."""


@dataclass(eq=False)
class Chunk:
    """A stretch of the stream in memory: a video.MediaLike, what `scoring.score_media` reads."""

    path: str  # a name for messages: the source and the stretch
    start: float  # stream seconds of the first frame, from the first frame the monitor saw
    video_frames: list = field(repr=False)  # av.VideoFrame at 25 fps, in the decoder's pixel format
    audio: np.ndarray = field(repr=False)  # 16 kHz mono float32, sample 0 at the first frame
    received: float = 0.0  # time.monotonic() when the chunk was complete
    live: bool = False  # from a live stream (one with no known duration)
    warnings: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.video_frames)

    @property
    def duration(self) -> float:
        return self.num_frames / hp.VIDEO_FPS

    def frames(self, gray: bool = False) -> Iterator[np.ndarray]:
        from .video import to_array

        return (to_array(frame, gray) for frame in self.video_frames)


# --- Reading ----------------------------------------------------------------------------------


def read_chunks(
    source: str,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    on_retry=None,
) -> Iterator[Chunk]:
    """Chunks of `source` as they arrive, across reconnections.

    A local file is read once: its end is the end, an error in it is final. A URL that fails to
    open, stalls for `timeout` s, breaks, or - when it is live (no known duration) - ends, is opened
    again after 1, 2, 4, ... s; `retries` failures in a row raise StreamError. on_retry(message)
    hears about every reconnection. See `_Clock` for how a reconnected stream's time follows on.
    """
    if chunk_seconds < 1:
        raise UserError(f"--chunk must be at least 1 second, got {chunk_seconds}")
    chunk_frames = round(chunk_seconds * hp.VIDEO_FPS)
    is_file = "://" not in source
    clock, failures, last_received = _Clock(), 0, time.monotonic()
    while True:
        try:
            unread = time.monotonic() - last_received  # how long the stream went unread, if it restarts its clock
            for chunk in _read_connection(source, chunk_frames, clock, unread, timeout, is_file):
                failures, last_received = 0, chunk.received
                yield chunk
            return
        except StreamError as error:
            if is_file or failures >= retries:
                tried = "" if is_file else f" (gave up after {failures} {'retry' if failures == 1 else 'retries'})"
                raise StreamError(f"{error}{tried}") from None
            delay = min(FIRST_RETRY_DELAY * 2**failures, MAX_RETRY_DELAY)
            failures += 1
            if on_retry:
                on_retry(f"{error}; reconnecting in {delay:g} s ({failures}/{retries})")
            time.sleep(delay)


@dataclass
class _Clock:
    """Stream time across connections: stream seconds = (25 fps slot - origin) / 25.

    A reconnected stream whose timestamps carry on (HLS, whose segments keep their timestamps; a
    VOD URL read again from its start) keeps the clock, and the frames it repeats - up to the end of
    the last chunk handed out - are skipped. One whose timestamps start again, more than
    MAX_REWIND_SECONDS back (RTSP starts every session at 0), gets a new origin: its stream time
    follows on from the last chunk after the time the stream went unread.
    """

    origin: int | None = None  # the slot at stream time 0
    resume: int | None = None  # the slot after the last chunk handed out

    def first_slot_to_keep(self, first_slot: int, unread: float) -> int:
        """Place a connection's first frame on the clock; frames before the slot returned are skipped."""
        if self.resume is None:  # nothing handed out yet: the clock starts here
            self.origin = first_slot
            return first_slot
        if first_slot < self.resume - MAX_REWIND_SECONDS * hp.VIDEO_FPS:  # the source's clock started again
            self.origin = first_slot - (self.resume - self.origin) - round(unread * hp.VIDEO_FPS)
            self.resume = first_slot
        return max(first_slot, self.resume)

    def seconds(self, slot: int) -> float:
        return (slot - self.origin) / hp.VIDEO_FPS


def _read_connection(source, chunk_frames, clock: _Clock, unread: float, timeout: float, is_file: bool) -> Iterator[Chunk]:
    """One connection's chunks, timed by `clock`; the stream went unread for `unread` s before it.

    The timeline is video.py's, as `syncnet score` reads a file: each frame goes to its 25 fps slot
    (`video.frame_slot`, `video.FrameGrid`), each audio frame to its timestamp (`video.AudioTimeline`),
    and the video ends where its last packet ends (`video.packet_end`)."""
    import av

    from .video import (
        AudioTimeline,
        FrameGrid,
        MediaError,
        check_exists,
        ffmpeg_reason,
        frame_slot,
        is_still_image,
        packet_end,
        time_slot,
        unreadable,
    )

    def failed(error) -> str:
        return unreadable(source, error) if is_file else f"{source}: cannot read (FFmpeg: {ffmpeg_reason(error)})"

    if is_file:
        try:
            check_exists(source)
        except MediaError as error:
            raise StreamError(str(error)) from None
    try:
        container = av.open(source, timeout=(timeout, timeout))
    except av.FFmpegError as error:
        raise StreamError(unreadable(source, error) if is_file else f"{source}: cannot open (FFmpeg: {ffmpeg_reason(error)})") from None
    with container:
        if not container.streams.video:
            raise StreamError(f"{source}: has no video track")
        if is_still_image(container):
            raise StreamError(f"{source}: a still image, not a video")
        if not container.streams.audio:
            raise StreamError(f"{source}: has no audio track")
        live = not is_file and container.duration is None
        video, audio = container.streams.video[0], container.streams.audio[0]
        video.thread_type = "AUTO"
        grid, timeline = FrameGrid(), AudioTimeline()
        keep_from, video_end = None, None  # the first slot this connection hands out; where its video ends
        frames, complete = [], deque()  # complete: (first slot, frames) of chunks whose audio may still be coming

        def chunks_ready(end_of_stream=False):
            """Complete chunks whose audio has arrived: all of them at the end of the stream, and
            the oldest as soon as another is complete (audio that lags that far is not coming)."""
            while complete and (end_of_stream or len(complete) > 1 or (timeline.end or 0) >= _sample(complete[0][0] + len(complete[0][1]))):
                first, held = complete.popleft()
                end = first + len(held)
                start = clock.seconds(first)
                audio_samples = timeline.take(_sample(first), _sample(end))
                clock.resume = end
                name = f"{source} [{start:.1f}-{clock.seconds(end):.1f} s]"
                yield Chunk(name, start, held, audio_samples, time.monotonic(), live, tuple(timeline.warnings()))

        def add(slotted):
            nonlocal keep_from, frames
            for slot, frame in slotted:
                if keep_from is None:
                    keep_from = clock.first_slot_to_keep(slot, unread)
                if slot < keep_from:
                    continue
                frames.append((slot, frame))
                if len(frames) == chunk_frames:
                    complete.append((frames[0][0], [shown for _, shown in frames]))
                    frames = []

        try:
            for packet in container.demux(video, audio):
                if packet.stream is audio:
                    timeline.add(packet)
                else:
                    ends = packet_end(packet)
                    if ends is not None:
                        video_end = ends if video_end is None else max(video_end, ends)
                    try:
                        decoded = packet.decode()
                    except av.InvalidDataError:  # one damaged packet (live streams have them): skip it, not the stream
                        continue
                    for frame in decoded:
                        slot = frame_slot(frame)
                        if slot is not None:
                            add(grid.add(slot, frame))
                yield from chunks_ready()
            timeline.finish()
            if video_end is not None:
                add(grid.finish(time_slot(video_end)))
        except av.ExitError:  # PyAV's read time-out interrupted FFmpeg ("Immediate exit requested")
            raise StreamError(f"{source}: no data for {timeout:g} s") from None
        except av.FFmpegError as error:
            raise StreamError(failed(error)) from None
        except MediaError as error:  # the audio timestamps leave too much unfilled
            raise StreamError(f"{source}: {error}") from None
        if grid.shown is None:
            raise StreamError(f"{source}: no decodable video frames")
        if live:  # a live stream does not end: it stalled or stopped (the part-filled chunk comes again, or is lost)
            yield from chunks_ready(end_of_stream=True)
            raise StreamError(f"{source}: the live stream stopped")
        if len(frames) >= chunk_frames / 2:  # the last, shorter chunk, when it is worth scoring
            complete.append((frames[0][0], [shown for _, shown in frames]))
        yield from chunks_ready(end_of_stream=True)


def _sample(slot: int) -> int:
    """The audio sample at the time of a 25 fps slot."""
    return slot * hp.SAMPLES_PER_FRAME


# --- Scoring ----------------------------------------------------------------------------------


@dataclass
class ChunkReport:
    chunk: int  # 0, 1, ...
    start: float  # stream seconds
    end: float
    verdict: str
    offset_frames: int | None = None  # > 0: the audio leads (scoring's convention)
    offset_ms: float | None = None
    min_dist: float | None = None  # LSE-D
    confidence: float | None = None  # LSE-C
    sync_probability: float | None = None
    tampered: float | None = None  # P(tampered) from the model's calibration; None without one
    windows: int | None = None  # 5-frame windows the chunk's face was scored on: its evidence
    verdict_reason: str = ""  # the figures that decided the verdict (offsets.Verdict's, and the offset's evidence)
    rolling_offset_frames: int | None = None  # confidence-weighted median over the recent reliable chunks
    lag: float = 0.0  # s from the chunk's last frame arriving to this report
    score_seconds: float = 0.0  # s spent scoring it
    error: str | None = None
    warnings: list = field(default_factory=list)

    def line(self) -> str:
        where = f"{self.start:7.1f}-{self.end:.1f} s".ljust(16)
        if self.offset_frames is None:
            numbers = f"{'':44}"
        else:
            numbers = (
                f"offset {self.offset_frames:+3d} frames ({self.offset_ms:+5.0f} ms)  "
                f"LSE-D {self.min_dist:5.2f}  LSE-C {self.confidence:5.2f}"
            )
        rolling = "-" if self.rolling_offset_frames is None else f"{self.rolling_offset_frames:+d}"
        line = f"{where}  {numbers}  {self.verdict:<14}  rolling {rolling:>3}  lag {self.lag:4.1f} s"
        return line + (f"  ({self.verdict_reason})" if self.verdict_reason else "")


class RollingOffset:
    """The stream's offset so far: the median of the last `window` reliable chunks' offsets, each
    weighted by its confidence (LSE-C). Only chunks that were in sync or out of sync count."""

    def __init__(self, window: int = DEFAULT_WINDOW):
        self.recent = deque(maxlen=window)  # (offset, confidence)

    def add(self, offset_frames: int, confidence: float):
        self.recent.append((offset_frames, confidence))

    @property
    def offset_frames(self) -> int | None:
        if not self.recent:
            return None
        offsets, weights = zip(*sorted(self.recent))
        cumulative = np.cumsum(weights)
        return int(offsets[int(np.searchsorted(cumulative, cumulative[-1] / 2))])


def score_chunk(
    chunk: Chunk, index: int, model, rolling: RollingOffset, *, vshift: int = hp.VSHIFT, min_confidence: float | None = None
) -> ChunkReport:
    """Score one chunk as `syncnet score` scores a file - the same `offsets.Verdict`, with the
    model's calibration - give it a verdict, feed the rolling offset.

    in sync: the Verdict's (offset within a frame of 0, P(tampered) < 0.5; without a calibration
    LSE-C above the bar). Otherwise out of sync when the offset beats chance (`offset_evidence`),
    low confidence when it does not. verdict_reason: the Verdict's reason, and for a chunk not in
    sync the offset's evidence (`calibration.offset_beats_chance`: the bar scales as 1 / sqrt(windows))."""
    from .calibration import offset_beats_chance
    from .offsets import IN_SYNC_MIN_CONFIDENCE
    from .scoring import score_media
    from .video import is_silent

    began = time.monotonic()
    report = ChunkReport(index, round(chunk.start, 3), round(chunk.start + chunk.duration, 3), SILENT)
    if is_silent(chunk.audio):
        report.verdict_reason = "the audio is silent"
    else:
        bar = IN_SYNC_MIN_CONFIDENCE if min_confidence is None else min_confidence
        result = score_media(chunk, model, vshift=vshift, min_confidence=bar)
        if result.status != "ok":
            report.verdict, report.error = NOT_SCORED, result.error.removeprefix(f"{chunk.path}: ")
            report.verdict_reason = report.error
        else:
            best = result.best
            report.offset_frames = result.offset_frames
            report.offset_ms = 1000.0 * result.offset_seconds
            report.min_dist, report.confidence = result.min_dist, result.confidence
            report.sync_probability, report.tampered = result.sync_probability, result.tampered
            report.windows = best.num_frames - model.family.window_frames
            calibration = model.calibration  # score_media's verdict is the model's own
            reliable, evidence = offset_beats_chance(
                result.confidence,
                report.windows,
                calibrated=calibration is not None,
                bar=min_confidence,
                placeholder=IN_SYNC_MIN_CONFIDENCE,
                chance=None if calibration is None else calibration.chance_confidence,
            )
            if result.in_sync:
                report.verdict, report.verdict_reason = IN_SYNC, result.verdict_reason
            else:
                report.verdict = OUT_OF_SYNC if reliable else LOW_CONFIDENCE
                report.verdict_reason = f"{result.verdict_reason}; offset {'beats' if reliable else 'does not beat'} chance: {evidence}"
            if report.verdict != LOW_CONFIDENCE:
                rolling.add(result.offset_frames, result.confidence)
            report.warnings = list(result.warnings)
    report.rolling_offset_frames = rolling.offset_frames
    now = time.monotonic()
    report.score_seconds, report.lag = round(now - began, 3), round(now - chunk.received, 3)
    return report


def summary(reports: list, *, dropped: int, wall_seconds: float, interrupted: bool) -> dict:
    counts = {verdict: 0 for verdict in (IN_SYNC, OUT_OF_SYNC, LOW_CONFIDENCE, SILENT, NOT_SCORED)}
    for report in reports:
        counts[report.verdict] += 1
    scored_seconds = sum(report.end - report.start for report in reports)
    lags = [report.lag for report in reports]
    return {
        "summary": True,
        "chunks": len(reports),
        "verdicts": counts,
        "dropped": dropped,  # live chunks skipped because scoring fell behind
        "stream_seconds": round(scored_seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "rolling_offset_frames": reports[-1].rolling_offset_frames if reports else None,
        "mean_lag": round(float(np.mean(lags)), 3) if lags else None,
        "max_lag": round(max(lags), 3) if lags else None,
        # scoring time / stream time: under 1 keeps up with a live stream
        "real_time_factor": round(sum(report.score_seconds for report in reports) / scored_seconds, 3) if reports else None,
        "interrupted": interrupted,
    }


def summary_line(numbers: dict) -> str:
    counts = ", ".join(f"{count} {verdict}" for verdict, count in numbers["verdicts"].items() if count)
    rolling = numbers["rolling_offset_frames"]
    line = (
        f"summary: {numbers['chunks']} chunks, {numbers['stream_seconds']:.1f} s of stream"
        f"{' (interrupted)' if numbers['interrupted'] else ''}: {counts or 'nothing scored'}; "
        f"offset {'unknown' if rolling is None else f'{rolling:+d} frames ({1000 * rolling / hp.VIDEO_FPS:+.0f} ms)'}"
    )
    if numbers["chunks"]:
        line += (
            f"; lag mean {numbers['mean_lag']:.1f} s, max {numbers['max_lag']:.1f} s; "
            f"scoring takes {numbers['real_time_factor']:.2f} x real time"
        )
    if numbers["dropped"]:
        line += f"; {numbers['dropped']} chunks skipped to keep up"
    return line


# --- Command line -----------------------------------------------------------------------------


def configure_parser(parser):
    parser.add_argument("source", metavar="SOURCE", help="a video file, an HLS playlist (.m3u8), or an rtmp/rtsp/srt/http URL")
    parser.add_argument("--chunk", type=float, default=DEFAULT_CHUNK_SECONDS, help="seconds scored at a time (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="one JSON object per chunk, and a summary object, on stdout")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH", help="a .keras SyncNet (default: the shipped expert)")
    parser.add_argument("--vshift", type=int, default=hp.VSHIFT, help="search offsets -N..N frames (default %(default)s)")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="LSE-C a chunk not in sync needs for its offset to count (default: the chance bar for the chunk's "
        "length with a calibrated model, scoring's placeholder bar without one)",
    )
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="reliable chunks in the rolling offset (default %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds without data before reconnecting (default %(default)s)"
    )
    parser.add_argument(
        "--retries", type=int, default=DEFAULT_RETRIES, help="reconnections in a row before giving up (default %(default)s)"
    )


@contextlib.contextmanager
def stop_on_interrupt(chunks: ReadAhead):
    """Within the block, Ctrl-C stops `chunks` after the chunk being scored (a second one raises
    KeyboardInterrupt); yields the Event that tells whether it was pressed.

    A flag rather than the default KeyboardInterrupt, which can land anywhere inside the scoring
    (TensorFlow, dlib, PyAV calls): in the test suite, under load, a Ctrl-C sent while a chunk was
    being scored was now and then lost and the monitor ran to the end of the stream. With the flag
    the chunk being scored finishes, is reported, and the monitor ends.
    """
    pressed = threading.Event()

    def on_interrupt(signum, frame):
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()
        chunks.stop()

    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    try:
        yield pressed
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


def run_command(args) -> int:
    from .loading import load_model

    if args.window < 1 or args.retries < 0 or args.timeout <= 0:
        raise UserError("--window must be >= 1, --retries >= 0 and --timeout > 0")

    def emit(text):
        print(text, flush=True)

    def on_retry(message):
        print(f"syncnet monitor: {message}", file=sys.stderr, flush=True)

    model = load_model(args.model)  # first: a chunk's lag should not include it
    # one chunk ahead of the scoring; when the scoring falls behind a live stream, the waiting chunk
    # is replaced by the newer one (counted in `dropped`): reports stay near the live edge instead of
    # lagging more and more. A file or a VOD waits for the scoring instead.
    chunks = ReadAhead(
        read_chunks(args.source, args.chunk, timeout=args.timeout, retries=args.retries, on_retry=on_retry),
        replaces_waiting=lambda chunk: chunk.live,
        name="syncnet-monitor-reader",
    )
    rolling, reports, began = RollingOffset(args.window), [], time.monotonic()
    failure = None
    with stop_on_interrupt(chunks) as interrupted:
        try:
            for chunk in chunks:
                report = score_chunk(chunk, len(reports), model, rolling, vshift=args.vshift, min_confidence=args.min_confidence)
                reports.append(report)
                emit(json.dumps(asdict(report)) if args.json else report.line())
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once
            pass
        except StreamError as error:  # the stream is gone: say what was seen, then why it ended
            failure = error
        finally:
            chunks.stop()
    numbers = summary(reports, dropped=chunks.dropped, wall_seconds=time.monotonic() - began, interrupted=interrupted.is_set())
    emit(json.dumps(numbers) if args.json else summary_line(numbers))
    if failure:
        raise failure
    return 0
