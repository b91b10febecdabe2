"""Media decoding for training, scoring and the web API: 25 fps frames and 16 kHz mono audio on one timeline.

Everything goes through PyAV and by timestamps, never by counting frames: a clip at 29.97 fps, one
with variable frame rate, or one whose video starts after its audio would otherwise pair lips with
the wrong sound, a silent label error for a sync model.

- Video is resampled to 25 fps the way ffmpeg's `fps=25` filter does it (round=near): an input frame
  at time t lands on output slot round(25 t); output slot k shows the latest input frame whose slot
  is <= k, so frames are duplicated or dropped to fill the grid.
- The timeline starts at the first 25 fps slot of the video: audio sample 0 is at the time of
  frame 0. Audio that starts earlier is trimmed, audio that starts later is left-padded with zeros.
- Every decoded audio frame is placed at its own timestamp, not after the samples before it: where
  the timestamps leave a gap it is filled with silence, where they overlap the repeated part is
  dropped (FFmpeg's `aresample=async`; syncnet_python extracts with `-async 1` for this). Files
  joined with `-c copy`, re-muxed or recorded from a stream drift by tenths of a second otherwise.
- What would lower trust in a score without stopping it lands in `Media.warnings`: a container that
  promises more than decodes (a truncated file), audio timestamps that disagree with the sample
  count by more than a frame, audio sampled below 16 kHz, channels whose mono mix blurs the voice.
- Frames are decoded again on every `Media.frames()` call and streamed; only the audio (16 kHz
  float32, 3.8 MB a minute) is held in memory.

A VidTIMIT sequence (a folder of numbered JPEG frames, 25 fps, with a separate WAV) loads the same way.
"""

import math
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from PIL import Image

from . import hyperparameters as hp
from .errors import UserError

MIN_SOURCE_FPS = 15.0  # below this, resampling to 25 fps repeats most frames and the lips look frozen
SILENCE_DBFS = -60.0
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts")  # what a folder search takes
# Audio timestamps within this of where the sample count puts a frame are taken as jitter; further
# off, the frame is moved to its timestamp. Half a video frame: finer than any offset we report.
AUDIO_TIMESTAMP_TOLERANCE = Fraction(1, 2 * hp.VIDEO_FPS)
MAX_AUDIO_PADDING = 600  # seconds of silence filled in for gaps, in all: more is a broken file, not pauses
# A container promising this much more video or audio than decodes is reported as truncated.
TRUNCATION_TOLERANCE = 0.2  # seconds
# Stereo channels less correlated than this hold different sound (two voices, music on one side,
# or one channel phase-inverted): their mono mix is a blur the expert was not trained on.
MIN_CHANNEL_CORRELATION = 0.3


class MediaLike(Protocol):
    """What scoring reads from media: a `Media`, or a live stream's chunk held in memory
    (monitor.Chunk)."""

    path: str  # a name for messages
    audio: np.ndarray  # 16 kHz mono float32 in [-1, 1], sample 0 at frame 0
    num_frames: int  # 25 fps frames
    warnings: tuple[str, ...]  # what may lower trust in its scores (optional: none when absent)

    def frames(self, gray: bool = False) -> Iterator[np.ndarray]:
        """A fresh iterator of uint8 frames at 25 fps: RGB (H, W, 3), or with gray their luma (H, W)."""
        ...


class MediaError(UserError):
    """One-line, user-facing reason a media input cannot be used."""


@dataclass(frozen=True, eq=False)
class Media:
    path: str  # the video (or VidTIMIT frame folder)
    # float32 mono 16 kHz in [-1, 1]; sample 0 is at the time of frame 0. It may end before or after the frames.
    audio: np.ndarray = field(repr=False)
    num_frames: int  # 25 fps frames that frames() yields
    width: int
    height: int
    source_fps: float
    # where frames() finds the frames: the video's first 25 fps slot, or the folder's frame files
    first_slot: int = field(default=0, repr=False)
    frame_files: tuple[str, ...] = field(default=(), repr=False)
    warnings: tuple[str, ...] = ()  # why the numbers may deserve less trust (see the module docstring)

    @property
    def duration(self) -> float:
        return self.num_frames / hp.VIDEO_FPS

    def frames(self, start: int = 0, stop: int | None = None, gray: bool = False) -> Iterator[np.ndarray]:
        """RGB uint8 (H, W, 3) frames [start, stop) at 25 fps, or with `gray` their luma (H, W), which
        costs half as much to decode; re-decodes from the file each call (streaming, bounded memory)."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        if not 0 <= start <= self.num_frames:
            raise UserError(f"start={start} is outside 0..{self.num_frames}")
        if self.frame_files:
            return (_decode_image(file, gray) for file in self.frame_files[start:stop])
        return _video_frames(self.path, self.first_slot + start, max(stop - start, 0), seek=start > 0, gray=gray)


def load_media(path, audio_path=None) -> Media:
    """Open a video (or a VidTIMIT frame folder) with its audio, or with the audio of `audio_path`
    placed so that its first sample is at the video's first frame."""
    path = Path(path)
    if path.is_dir():
        return _load_frame_folder(path, audio_path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video track")
        if is_still_image(container):
            raise MediaError(f"{path}: a still image, not a video")
        video = container.streams.video[0]
        own_audio = container.streams.audio[0] if container.streams.audio else None
        if audio_path is None and own_audio is None:
            raise MediaError(f"{path}: has no audio track")
        audio_decoder = _AudioDecoder() if audio_path is None else None
        streams = [video] if audio_decoder is None else [video, own_audio]

        # One pass: decode the first video frame (where the timeline starts, the frame size), read
        # the other video packets' timestamps only (where it ends), decode the audio.
        first_frame, end_time, num_packets = None, None, 0
        with _translate_errors(path):
            for packet in container.demux(streams):
                if packet.stream.type == "audio":
                    audio_decoder.add(packet)
                    continue
                ends = packet_end(packet)
                if ends is not None:
                    num_packets += 1
                    end_time = ends if end_time is None else max(end_time, ends)
                if first_frame is None:
                    first_frame = next(iter(packet.decode()), None)
        if first_frame is None or end_time is None:
            raise MediaError(f"{path}: no decodable video frames")

        start_time = first_frame.pts * first_frame.time_base
        source_fps = float(video.average_rate or num_packets / max(end_time - start_time, Fraction(1, 1000)))
        first_slot = _slot(start_time)
        num_frames = _slot(end_time) - first_slot
        warnings = _truncation_warnings(video, float(end_time), own_audio, audio_decoder)

    _check_frames(path, num_frames, source_fps)
    if audio_decoder is None:
        audio, audio_warnings = _decode_audio(audio_path)
    else:
        audio_warnings = audio_decoder.warnings()
        audio = _place_at(audio_decoder.samples(), audio_decoder.start_time, start_time=Fraction(first_slot, hp.VIDEO_FPS))
    return Media(
        str(path),
        audio,
        num_frames,
        first_frame.width,
        first_frame.height,
        source_fps,
        first_slot=first_slot,
        warnings=tuple(warnings + audio_warnings),
    )


def load_audio(path) -> np.ndarray:
    """Any file with an audio stream (wav, mp3, m4a, the audio of a video) -> 16 kHz mono float32 in [-1, 1],
    from its first sample, each decoded frame at its timestamp."""
    return _decode_audio(path)[0]


def _decode_audio(path) -> tuple[np.ndarray, list[str]]:
    """`load_audio`'s samples and the warnings about them."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio track")
        decoder = _AudioDecoder()
        with _translate_errors(path):
            for packet in container.demux(container.streams.audio[0]):
                decoder.add(packet)
    return decoder.samples(), decoder.warnings()


def is_silent(audio: np.ndarray) -> bool:
    """True when the audio's RMS level is below -60 dBFS (or there is no audio at all)."""
    if audio.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return rms < 10 ** (SILENCE_DBFS / 20)


def time_slot(seconds) -> int:
    """The 25 fps output slot of a timestamp, rounded half up as ffmpeg's fps filter does (round=near)."""
    return math.floor(Fraction(seconds) * hp.VIDEO_FPS + Fraction(1, 2))


_slot = time_slot


def to_array(frame: av.VideoFrame, gray: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3), or with `gray` the luma (H, W) in full range [0, 255].

    The luma of 8-bit YUV video is its Y plane, read as it is (range-expanded for limited-range
    video): 3x cheaper than converting to RGB and back, and than swscale's own "gray" conversion."""
    if not gray:
        return frame.to_ndarray(format="rgb24")
    if frame.format.name not in _YUV_8BIT:
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]
    if frame.format.name.startswith("yuvj") or frame.color_range == 2:  # already full range (JPEG)
        return luma.copy()
    return np.asarray(Image.fromarray(luma).point(_LIMITED_TO_FULL_RANGE))


# 8-bit pixel formats whose first plane is the full-resolution luma
_YUV_8BIT = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}
# limited-range luma (16..235) -> 0..255
_LIMITED_TO_FULL_RANGE = [min(max(round((value - 16) * 255 / 219), 0), 255) for value in range(256)]


def _video_frames(path, first_slot: int, count: int, seek: bool, gray: bool = False) -> Iterator[np.ndarray]:
    """RGB (or luma) frames for the 25 fps slots [first_slot, first_slot + count), exactly `count` of them:
    each slot shows the latest frame due at or before it, and the last frame repeats if the
    video ends early."""
    end_slot = first_slot + count
    grid = FrameGrid()
    for slot, frame in _timed_frames(path, first_slot, seek):
        for shown_slot, shown in grid.add(slot, frame):
            if shown_slot >= end_slot:
                return
            if shown_slot >= first_slot:
                yield to_array(shown, gray)
        if grid.next_slot >= end_slot:
            return
    if grid.shown is None:
        raise MediaError(f"{path}: no decodable video frames")
    for shown_slot, shown in grid.finish(end_slot):
        if shown_slot >= first_slot:
            yield to_array(shown, gray)


class FrameGrid:
    """Frames timed by their 25 fps slot in, one frame per slot out (ffmpeg's `fps=25`, round=near):
    slot k shows the latest frame due at or before it, so frames are repeated or dropped to fill the
    grid. The one grid for files (`Media.frames`) and streams (monitor)."""

    def __init__(self):
        self.shown = None  # the frame the next slots show, until a later one is due
        self.next_slot = None  # the first slot not handed out yet

    def add(self, slot: int, frame) -> Iterator[tuple[int, object]]:
        """`frame` is due at `slot`: (slot, frame) for the slots before it, which show the previous
        frame (a frame due at a slot already handed out, from non-monotonic timestamps, just
        replaces the previous one, as in ffmpeg)."""
        if self.shown is not None:
            for earlier in range(self.next_slot, slot):
                yield earlier, self.shown
        self.next_slot = slot if self.shown is None else max(self.next_slot, slot)
        self.shown = frame

    def finish(self, end_slot: int) -> Iterator[tuple[int, object]]:
        """The last frame in every slot up to `end_slot` (the end of the video's last frame)."""
        if self.shown is not None:
            for slot in range(self.next_slot, end_slot):
                yield slot, self.shown
            self.next_slot = max(self.next_slot, end_slot)


def frame_slot(frame) -> int | None:
    """The 25 fps slot a decoded frame is due at (None for a frame without a timestamp)."""
    return None if frame.pts is None else _slot(frame.pts * frame.time_base)


def packet_end(packet) -> Fraction | None:
    """When a video packet's frame ends (seconds), None for one without a timestamp or outside the
    edit list: the latest of these is where a video ends on the 25 fps grid."""
    if packet.pts is None or packet.is_discard:
        return None
    return (packet.pts + packet.duration) * packet.time_base


def _timed_frames(path, first_slot: int, seek: bool) -> Iterator[tuple[int, av.VideoFrame]]:
    """(slot, frame) for the video's frames in order, starting at or before `first_slot`: after a
    seek to the keyframe before it, or from the start when asked not to seek or the seek fails or
    lands too late."""
    for seeking in (True, False) if seek else (False,):
        with _open(path) as container, _translate_errors(path):
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            if seeking and not _seek_before(container, video, first_slot):
                continue
            timed = ((frame_slot(frame), frame) for frame in _decodable_frames(container, video) if frame.pts is not None)
            first = next(timed, None)
            if first is None or (seeking and first[0] > first_slot):
                continue
            yield first
            yield from timed
            return


def _decodable_frames(container, video) -> Iterator[av.VideoFrame]:
    """The video's frames, past packets that do not decode (a cut-off last packet, a damaged one):
    the frame before one shows in its slots, as in a player."""
    for packet in container.demux(video):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            continue


def _seek_before(container, video, slot: int) -> bool:
    """Seek to the keyframe at or before the time of `slot`; False if the container refuses."""
    try:
        container.seek(int(Fraction(slot, hp.VIDEO_FPS) / video.time_base), stream=video)
    except av.FFmpegError:  # e.g. some MP4s whose index does not cover the target
        return False
    return True


class _AudioDecoder:
    """Decoded audio frames as one 16 kHz mono float32 track, each frame at its own timestamp.

    A frame further than AUDIO_TIMESTAMP_TOLERANCE from where the samples before it end is moved to
    its timestamp: silence fills a gap, the output samples an overlap would repeat are dropped. The
    resampler holds a few samples back between frames, so a correction lands up to about a
    millisecond from the exact frame boundary: far below a video frame (40 ms)."""

    def __init__(self):
        self.resampler, self.input_format = None, None  # a new resampler when the input format changes
        self.chunks = []
        self.untimed = Fraction(0)  # seconds of frames without timestamps before the first timed one
        self.start_time = None  # seconds, of the first sample
        self.next_time = None  # where the samples so far end on the timestamps' timeline
        self.to_drop = 0  # output samples still to drop for an overlap
        self.correction = Fraction(0)  # net seconds padded (> 0) or dropped (< 0) so far
        self.largest_correction = Fraction(0)
        self.padded = Fraction(0)  # seconds of silence filled in
        self.undecodable = 0  # packets
        self.source_rate, self.channels = None, 1
        self.channel_products = np.zeros((2, 2))  # sums of L*L, L*R, R*R over a stereo track
        self.channel_sums, self.channel_samples = np.zeros(2), 0  # for their means (u8 audio is centred on 128)

    def add(self, packet):
        """Decode an audio packet; one that does not decode (a damaged or cut-off packet) is
        counted and skipped, and the timestamps of the frames after it leave its time silent."""
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            self.undecodable += 1
            return
        for frame in frames:
            self.source_rate = self.source_rate or frame.sample_rate
            self.channels = max(self.channels, frame.layout.nb_channels)
            if frame.layout.nb_channels == 2:
                self._add_channel_products(frame)
            duration = Fraction(frame.samples, frame.sample_rate)
            if frame.pts is not None:
                self._place(frame.pts * frame.time_base, duration)
            elif self.next_time is not None:
                self.next_time += duration
            else:
                self.untimed += duration
            self._keep(self._resampler_for(frame).resample(frame))

    def _resampler_for(self, frame) -> av.AudioResampler:
        """The resampler for this frame's format, rate and layout: a joined file may change them
        mid-stream, and a resampler takes one; the old one is flushed first."""
        input_format = (frame.format.name, frame.layout.name, frame.sample_rate)
        if input_format != self.input_format:
            if self.resampler is not None:
                self._keep(self.resampler.resample(None))
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=hp.AUDIO_SAMPLE_RATE)
            self.input_format = input_format
        return self.resampler

    def _place(self, time, duration):
        if self.start_time is None:  # frames without timestamps before it are taken as running up to it
            self.start_time, self.next_time = time - self.untimed, time
        drift = time - self.next_time  # > 0: a gap before this frame, < 0: it overlaps the last
        if drift > AUDIO_TIMESTAMP_TOLERANCE:
            self.padded += drift
            if self.padded > MAX_AUDIO_PADDING:
                raise MediaError(f"the audio timestamps leave more than {MAX_AUDIO_PADDING} s of gaps: a broken file")
            self.chunks.append(np.zeros(round(drift * hp.AUDIO_SAMPLE_RATE), np.float32))
        elif drift < -AUDIO_TIMESTAMP_TOLERANCE:
            self.to_drop += round(min(-drift, duration) * hp.AUDIO_SAMPLE_RATE)
        else:
            drift = Fraction(0)
        if drift:
            self.correction += drift if drift > 0 else -min(-drift, duration)
            self.largest_correction = max(self.largest_correction, abs(self.correction))
            self.next_time = max(self.next_time, time + duration)
        else:
            self.next_time += duration

    def _add_channel_products(self, frame):
        samples = frame.to_ndarray().astype(np.float64)
        if not frame.format.is_planar:  # interleaved L R L R ...
            samples = samples.reshape(-1, 2).T
        self.channel_products += samples @ samples.T
        self.channel_sums += samples.sum(axis=1)
        self.channel_samples += samples.shape[1]

    def _keep(self, resampled_frames):
        for resampled in resampled_frames:
            samples = resampled.to_ndarray()[0]
            dropped = min(self.to_drop, len(samples))
            self.to_drop -= dropped
            self.chunks.append(samples[dropped:])

    def samples(self) -> np.ndarray:
        """All the samples (those not popped yet), the resampler flushed: the end of the audio."""
        return self.pop_samples(flush=True)

    def pop_samples(self, flush: bool = False) -> np.ndarray:
        """The samples decoded since the last call, clipped to [-1, 1], and let go; `flush`: the
        resampler's last held-back samples too (at the end of the audio)."""
        if flush and self.resampler is not None:
            self._keep(self.resampler.resample(None))
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.chunks = []
        return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)

    def warnings(self) -> list[str]:
        """What about this audio may lower the scores' confidence, one sentence each."""
        found = []
        if self.undecodable:
            packets = "1 audio packet" if self.undecodable == 1 else f"{self.undecodable} audio packets"
            found.append(f"{packets} did not decode (a damaged or truncated file?): their time is silent")
        if self.largest_correction > Fraction(1, hp.VIDEO_FPS):
            found.append(
                f"the audio timestamps and its sample count disagree by up to {float(self.largest_correction):.2f} s "
                "(gaps or overlaps in the audio stream, as in joined or re-muxed files): each audio frame "
                "was placed at its timestamp"
            )
        if self.source_rate and self.source_rate < hp.AUDIO_SAMPLE_RATE:
            found.append(
                f"the audio is sampled at {self.source_rate} Hz: above {self.source_rate // 2} Hz the MFCC the "
                f"expert reads (up to {hp.AUDIO_SAMPLE_RATE // 2} Hz) is empty, so expect lower confidence"
            )
        if self.channels > 2:
            found.append(
                f"{self.channels}-channel audio was mixed down to mono: music and effects in the other channels may lower confidence"
            )
        mean = self.channel_sums / max(self.channel_samples, 1)
        covariance = self.channel_products - self.channel_samples * np.outer(mean, mean)
        left, cross, right = covariance[0, 0], covariance[0, 1], covariance[1, 1]
        if self.channels == 2 and left > 0 and right > 0:
            correlation = cross / np.sqrt(left * right)
            if correlation < MIN_CHANNEL_CORRELATION:
                found.append(
                    f"the two audio channels differ (correlation {correlation:.2f}): their mono mix, which is "
                    "scored, may blend two sounds or cancel out, so expect lower confidence"
                )
        return found


class AudioTimeline:
    """A stream's audio as `load_media` places a file's (`_AudioDecoder`: each frame at its timestamp,
    gaps silent, overlaps dropped), read piece by piece: 16 kHz mono samples by their position on
    the stream's clock (sample n at n / 16000 s). Only the samples not taken yet are held."""

    def __init__(self):
        self.decoder = _AudioDecoder()
        self.pieces = deque()  # (first sample, float32 array), in order, contiguous
        self.end = None  # one past the last sample; None before the first

    def add(self, packet):
        self.decoder.add(packet)
        self._collect(self.decoder.pop_samples())

    def finish(self):
        """The end of the audio: the resampler's held-back samples."""
        self._collect(self.decoder.pop_samples(flush=True))

    def _collect(self, samples):
        if not len(samples):
            return
        if self.end is None:  # the decoder's samples run on from its first frame's timestamp
            self.end = round(Fraction(self.decoder.start_time or 0) * hp.AUDIO_SAMPLE_RATE)
        self.pieces.append((self.end, samples))
        self.end += len(samples)

    def take(self, begin: int, end: int) -> np.ndarray:
        """Samples [begin, end), zeros where there are none; everything before `end` is let go."""
        out = np.zeros(end - begin, np.float32)
        for position, samples in self.pieces:
            low, high = max(position, begin), min(position + len(samples), end)
            if low < high:
                out[low - begin : high - begin] = samples[low - position : high - position]
        while self.pieces and self.pieces[0][0] + len(self.pieces[0][1]) <= end:
            self.pieces.popleft()
        return out

    def warnings(self) -> list[str]:
        return self.decoder.warnings()


def _place_at(audio: np.ndarray, audio_start, start_time) -> np.ndarray:
    """Shift audio that begins at `audio_start` seconds onto a timeline beginning at `start_time`."""
    offset = round((Fraction(audio_start or 0) - start_time) * hp.AUDIO_SAMPLE_RATE)
    if offset >= 0:  # audio starts after the video: silence until it does
        return np.concatenate([np.zeros(offset, np.float32), audio])
    return audio[-offset:]


def is_frame_folder(folder) -> bool:
    """A VidTIMIT sequence - a folder of numbered JPEG frames - is one video, not a folder of videos."""
    return bool(_frame_files(Path(folder)))


def _frame_files(folder: Path) -> list[Path]:
    """The folder's frames named 001, 002, ... (or 001.jpg, ...), in number order."""
    numbered = (file for file in folder.iterdir() if re.fullmatch(r"\d+(\.jpe?g)?", file.name, re.IGNORECASE))
    return sorted(numbered, key=lambda file: int(file.name.split(".")[0]))


def _load_frame_folder(folder: Path, audio_path) -> Media:
    """A VidTIMIT sequence: frames named 001, 002, ... (or 001.jpg, ...) at 25 fps, plus a WAV."""
    frame_files = _frame_files(folder)
    if not frame_files:
        raise MediaError(f"{folder}: a folder, but with no numbered JPEG frames (001, 002, ... or 001.jpg, ...)")
    if audio_path is None:
        wavs = sorted(folder.glob("*.wav"))
        if len(wavs) != 1:
            raise MediaError(f"{folder}: has no audio track (pass the WAV; the folder holds {len(wavs)} .wav files, not 1)")
        audio_path = wavs[0]
    _check_frames(folder, len(frame_files), hp.VIDEO_FPS)
    height, width = _decode_image(frame_files[0]).shape[:2]
    audio = load_audio(audio_path)
    return Media(str(folder), audio, len(frame_files), width, height, float(hp.VIDEO_FPS), frame_files=tuple(map(str, frame_files)))


def _truncation_warnings(video, video_end: float, audio, audio_decoder) -> list[str]:
    """What the container's header promises of the video (and its own audio) beyond what decoded."""
    found = []
    promised = _promised_end(video)
    if promised is not None and promised - video_end > TRUNCATION_TOLERANCE:
        found.append(
            f"the file promises {promised:.2f} s of video but only {video_end:.2f} s decode (a truncated or "
            "damaged file?): scored what decodes"
        )
    if audio_decoder is not None and audio_decoder.next_time is not None:
        promised, audio_end = _promised_end(audio), float(audio_decoder.next_time)
        if promised is not None and promised - audio_end > TRUNCATION_TOLERANCE:
            found.append(
                f"the file promises {promised:.2f} s of audio but only {audio_end:.2f} s decode (a truncated or "
                "damaged file?): scored what decodes"
            )
    return found


def _promised_end(stream) -> float | None:
    """When the container's header says a stream ends (seconds), or None when it does not say."""
    if stream.duration is None or stream.time_base is None:
        return None
    return float((stream.duration + (stream.start_time or 0)) * stream.time_base)


def is_still_image(container) -> bool:
    """A still image (png, jpeg, ...): FFmpeg opens it as a one-frame video."""
    name = container.format.name
    return name == "image2" or name.endswith("_pipe")  # png_pipe, jpeg_pipe, webp_pipe, ...


def _decode_image(file, gray: bool = False) -> np.ndarray:
    with _open(file) as container, _translate_errors(file):
        for frame in container.decode(video=0):
            return to_array(frame, gray)
    raise MediaError(f"{file}: not an image")


def _check_frames(path, num_frames: int, source_fps: float):
    if source_fps < MIN_SOURCE_FPS:
        raise MediaError(
            f"{path}: {source_fps:.3g} fps is too low (need at least {MIN_SOURCE_FPS:g}): "
            f"repeating frames to reach {hp.VIDEO_FPS} fps would make the lips look frozen"
        )
    if num_frames < hp.WINDOW_FRAMES:
        raise MediaError(f"{path}: only {num_frames} frames at {hp.VIDEO_FPS} fps; need at least {hp.WINDOW_FRAMES}")


def check_exists(path):
    """A MediaError naming `path` when there is nothing there: cheap, so commands call it before
    loading a model."""
    if not Path(path).exists():
        raise MediaError(f"{path}: no such file")


def _open(path):
    check_exists(path)
    with _translate_errors(path):
        container = av.open(str(path))
    if container.format.name == "tty":  # FFmpeg reads any .txt as ANSI-art video
        container.close()
        raise MediaError(f"{path}: not a media file")
    return container


@contextmanager
def _translate_errors(path):
    """Turns PyAV's errors into a MediaError naming the file (one line)."""
    try:
        yield
    except av.FFmpegError as error:
        raise MediaError(unreadable(path, error)) from error


def unreadable(path, error: av.FFmpegError) -> str:
    """The one line for a file FFmpeg cannot read (scoring a file and monitoring it say the same)."""
    return f"{path}: not a media file, or corrupt or truncated (FFmpeg: {ffmpeg_reason(error)})"


def ffmpeg_reason(error: av.FFmpegError) -> str:
    return (getattr(error, "strerror", None) or str(error)).splitlines()[0]
