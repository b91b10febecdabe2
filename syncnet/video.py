"""Media decoding for training, scoring and the web API: 25 fps frames and 16 kHz mono audio on one timeline.

Everything goes through PyAV and by timestamps, never by counting frames: a clip at 29.97 fps, one
with variable frame rate, or one whose video starts after its audio would otherwise pair lips with
the wrong sound, a silent label error for a sync model.

- Video is resampled to 25 fps the way ffmpeg's `fps=25` filter does it (round=near): an input frame
  at time t lands on output slot round(25 t); output slot k shows the latest input frame whose slot
  is <= k, so frames are duplicated or dropped to fill the grid.
- The timeline starts at the first 25 fps slot of the video: audio sample 0 is at the time of
  frame 0. Audio that starts earlier is trimmed, audio that starts later is left-padded with zeros.
- Frames are decoded again on every `Media.frames()` call and streamed; only the audio (16 kHz
  float32, 3.8 MB a minute) is held in memory.

A VidTIMIT sequence (a folder of numbered JPEG frames, 25 fps, with a separate WAV) loads the same way.
"""

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import Image

from . import hyperparameters as hp

MIN_SOURCE_FPS = 15.0  # below this, resampling to 25 fps repeats most frames and the lips look frozen
SILENCE_DBFS = -60.0


class MediaError(ValueError):
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

    @property
    def duration(self) -> float:
        return self.num_frames / hp.VIDEO_FPS

    def frames(self, start: int = 0, stop: int | None = None, gray: bool = False) -> Iterator[np.ndarray]:
        """RGB uint8 (H, W, 3) frames [start, stop) at 25 fps, or with `gray` their luma (H, W), which
        costs half as much to decode; re-decodes from the file each call (streaming, bounded memory)."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        if not 0 <= start <= self.num_frames:
            raise ValueError(f"start={start} is outside 0..{self.num_frames}")
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
                    audio_decoder.add(packet.decode())
                    continue
                if packet.pts is not None and not packet.is_discard:  # discarded: outside the edit list
                    num_packets += 1
                    packet_end = (packet.pts + packet.duration) * packet.time_base
                    end_time = packet_end if end_time is None else max(end_time, packet_end)
                if first_frame is None:
                    first_frame = next(iter(packet.decode()), None)
        if first_frame is None or end_time is None:
            raise MediaError(f"{path}: no decodable video frames")

        start_time = first_frame.pts * first_frame.time_base
        source_fps = float(video.average_rate or num_packets / max(end_time - start_time, Fraction(1, 1000)))
        first_slot = _slot(start_time)
        num_frames = _slot(end_time) - first_slot

    _check_frames(path, num_frames, source_fps)
    if audio_decoder is None:
        audio = load_audio(audio_path)
    else:
        audio = _place_at(audio_decoder.samples(), audio_decoder.start_time, start_time=Fraction(first_slot, hp.VIDEO_FPS))
    return Media(str(path), audio, num_frames, first_frame.width, first_frame.height, source_fps, first_slot=first_slot)


def load_audio(path) -> np.ndarray:
    """Any file with an audio stream (wav, mp3, m4a, the audio of a video) -> 16 kHz mono float32 in [-1, 1],
    from its first sample."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio track")
        decoder = _AudioDecoder()
        with _translate_errors(path):
            for packet in container.demux(container.streams.audio[0]):
                decoder.add(packet.decode())
    return decoder.samples()


def is_silent(audio: np.ndarray) -> bool:
    """True when the audio's RMS level is below -60 dBFS (or there is no audio at all)."""
    if audio.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return rms < 10 ** (SILENCE_DBFS / 20)


def _slot(seconds) -> int:
    """The 25 fps output slot of a timestamp, rounded half up as ffmpeg's fps filter does (round=near)."""
    return math.floor(Fraction(seconds) * hp.VIDEO_FPS + Fraction(1, 2))


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
    shown, next_slot = None, None
    for slot, frame in _timed_frames(path, first_slot, seek):
        if shown is None:
            next_slot = slot
        # `frame` is due at `slot`: the slots before it show the previous frame (a frame due at a
        # slot already shown, from non-monotonic timestamps, just replaces it, as in ffmpeg)
        for _ in range(max(next_slot, first_slot), min(slot, end_slot)):
            yield to_array(shown, gray)
        next_slot = max(next_slot, slot)
        if next_slot >= end_slot:
            return
        shown = frame
    if shown is None:
        raise MediaError(f"{path}: no decodable video frames")
    for _ in range(max(next_slot, first_slot), end_slot):
        yield to_array(shown, gray)


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
            timed = ((_slot(frame.pts * frame.time_base), frame) for frame in container.decode(video) if frame.pts is not None)
            first = next(timed, None)
            if first is None or (seeking and first[0] > first_slot):
                continue
            yield first
            yield from timed
            return


def _seek_before(container, video, slot: int) -> bool:
    """Seek to the keyframe at or before the time of `slot`; False if the container refuses."""
    try:
        container.seek(int(Fraction(slot, hp.VIDEO_FPS) / video.time_base), stream=video)
    except av.FFmpegError:  # e.g. some MP4s whose index does not cover the target
        return False
    return True


class _AudioDecoder:
    """Collects decoded audio frames as 16 kHz mono float32, and when the first one starts (seconds)."""

    def __init__(self):
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=hp.AUDIO_SAMPLE_RATE)
        self.chunks = []
        self.start_time = None

    def add(self, frames):
        for frame in frames:
            if self.start_time is None and frame.pts is not None:
                self.start_time = frame.pts * frame.time_base
            self.chunks.extend(resampled.to_ndarray()[0] for resampled in self.resampler.resample(frame))

    def samples(self) -> np.ndarray:
        self.chunks.extend(resampled.to_ndarray()[0] for resampled in self.resampler.resample(None))
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _place_at(audio: np.ndarray, audio_start, start_time) -> np.ndarray:
    """Shift audio that begins at `audio_start` seconds onto a timeline beginning at `start_time`."""
    offset = round((Fraction(audio_start or 0) - start_time) * hp.AUDIO_SAMPLE_RATE)
    if offset >= 0:  # audio starts after the video: silence until it does
        return np.concatenate([np.zeros(offset, np.float32), audio])
    return audio[-offset:]


def _load_frame_folder(folder: Path, audio_path) -> Media:
    """A VidTIMIT sequence: frames named 001, 002, ... (or 001.jpg, ...) at 25 fps, plus a WAV."""
    frame_files = sorted(
        (file for file in folder.iterdir() if re.fullmatch(r"\d+(\.jpe?g)?", file.name, re.IGNORECASE)),
        key=lambda file: int(file.name.split(".")[0]),
    )
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


def _open(path):
    if not Path(path).exists():
        raise MediaError(f"{path}: no such file")
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
        reason = (error.strerror or str(error)).splitlines()[0]
        raise MediaError(f"{path}: not a media file, or corrupt or truncated (FFmpeg: {reason})") from error
