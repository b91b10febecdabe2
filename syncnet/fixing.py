"""Re-syncing a video: a copy with its audio shifted by the offset `syncnet score` finds.

    syncnet fix VIDEO -o OUT [--offset N] [--model NAME_OR_PATH]

Sign convention (syncnet_python's): offset > 0 means the audio leads the video by that many 25 fps
frames, so delaying the audio by `offset` frames fixes it; offset < 0 means it lags, and the audio
is advanced. The video stream is copied packet for packet (no re-encode, bit-identical); the audio
is decoded, shifted (silence fills the gap, the overhang is cut, so it keeps its length) and
re-encoded: AAC in .mp4 / .mov / .m4v, 16-bit PCM in .avi, the input's own audio codec in other
containers (AAC when FFmpeg has no encoder for it). Only the
shift is kept in memory, never the whole audio track.
"""

import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from . import hyperparameters as hp
from .errors import UserError
from .files import atomic_output, check_writable
from .video import MediaError

# The audio codec per container. Lossy encoders prepend "priming" samples; MP4's edit lists hide
# them from decoders, AVI has no way to, so an MP3 in AVI would play 1105 samples (1.7 frames) late:
# AVI gets lossless PCM. Other containers (Matroska signals the codec delay) keep the input's codec.
CONTAINER_AUDIO_CODECS = {".mp4": "aac", ".mov": "aac", ".m4v": "aac", ".avi": "pcm_s16le"}
# A given --offset past this is more likely a slip (milliseconds for frames) than a real delay: the
# command says so. `syncnet score` searches +-15 frames (0.6 s).
WARN_OFFSET_SECONDS = 3.0


def fix_video(video, output, *, offset: int | None = None, model=None, vshift: int = hp.VSHIFT) -> int:
    """Write `output`: `video` with its audio delayed by `offset` frames (detected when None).

    Returns the offset applied. `model` and `vshift` are for the detection (see `score_video`).
    """
    check_output(video, output)  # before minutes of scoring, not after
    if offset is None:
        from .scoring import score_video

        result = score_video(video, model, vshift=vshift)
        if result.status != "ok":
            raise UserError(result.error)
        offset = result.offset_frames
    shift_audio(video, output, offset)
    return offset


def check_output(video, output):
    """Refuse to write over the input (by any path to it) or into another container type."""
    video, output = Path(video), Path(output)
    if not video.is_file():
        raise MediaError(f"{video}: no such file")
    if output.suffix.lower() != video.suffix.lower():
        raise UserError(f"{output}: keep the input's container ({video.suffix or 'no suffix'})")
    if output.resolve() == video.resolve() or (output.exists() and os.path.samefile(output, video)):
        raise UserError(f"{output}: is the input video; write the fixed copy to another file")
    check_writable(output)


def shift_audio(video, output, offset_frames: int):
    """Copy `video` to `output` with its audio delayed by `offset_frames` / 25 s (advanced when < 0).

    Written to a temporary file beside `output` and renamed into place, so `output` is either the
    old file or the complete new one.
    """
    check_output(video, output)
    with atomic_output(output) as temporary:
        _remux_with_shifted_audio(Path(video), temporary, offset_frames)


def _remux_with_shifted_audio(video: Path, output: str, offset_frames: int):
    try:
        source = av.open(str(video))
    except av.FFmpegError as error:
        raise MediaError(f"{video}: not a readable media file ({error.strerror or error})") from None
    with source, av.open(output, mode="w") as target:
        if not source.streams.video:
            raise MediaError(f"{video}: has no video track")
        if not source.streams.audio:
            raise MediaError(f"{video}: has no audio track")
        video_in, audio_in = source.streams.video[0], source.streams.audio[0]
        seconds = _audio_seconds(source, audio_in)
        if seconds is not None and abs(offset_frames) / hp.VIDEO_FPS >= seconds:
            raise UserError(
                f"an offset of {offset_frames} frames ({offset_frames / hp.VIDEO_FPS:+.2f} s) would leave no audio: "
                f"{video}'s is {seconds:.2f} s long (offsets are 25 fps frames)"
            )
        video_out = target.add_stream_from_template(video_in)
        audio_out = target.add_stream(_audio_codec(video, audio_in), rate=audio_in.rate, layout=audio_in.layout.name)
        audio_out.time_base = Fraction(1, audio_in.rate)
        shifter = _AudioShifter(round(offset_frames * audio_in.rate / hp.VIDEO_FPS), audio_in)

        try:
            for packet in source.demux(video_in, audio_in):
                if packet.stream is audio_in:  # the last, empty packet flushes the decoder
                    for frame in shifter.push(packet.decode()):
                        target.mux(audio_out.encode(frame))
                elif packet.size:  # (Matroska leaves dts unset: test the size, not the timestamps)
                    packet.stream = video_out
                    target.mux(packet)
            for frame in shifter.finish():
                target.mux(audio_out.encode(frame))
            target.mux(audio_out.encode(None))
        except av.FFmpegError as error:
            raise MediaError(f"{video}: cannot rewrite ({error.strerror or error})") from None


def _audio_seconds(container, stream) -> float | None:
    """The audio's length as the header says: the stream's, else the container's; None if neither says."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _audio_codec(video: Path, stream) -> str:
    """The container's codec, else the input's own when FFmpeg can encode it, else AAC."""
    if video.suffix.lower() in CONTAINER_AUDIO_CODECS:
        return CONTAINER_AUDIO_CODECS[video.suffix.lower()]
    name = stream.codec_context.codec.canonical_name  # "mp3", not the decoder's "mp3float"
    try:
        av.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return "aac"
    return name


class _AudioShifter:
    """Turns decoded audio frames into the same samples `delay` samples later (earlier when < 0),
    as many in total: a delay line of `delay` samples, or `-delay` samples skipped and then
    appended as silence. Output frames are float planar, timed from the input's first sample."""

    def __init__(self, delay: int, stream):
        self.delay = delay
        self.rate = stream.rate
        self.layout = stream.layout.name
        self.channels = stream.layout.nb_channels
        self.resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self.line = np.zeros((self.channels, max(delay, 0)), np.float32)
        self.to_skip = max(-delay, 0)
        self.next_pts = None

    def push(self, frames):
        for frame in frames:
            if self.next_pts is None and frame.pts is not None:
                self.next_pts = round(frame.pts * frame.time_base * self.rate)
            for resampled in self.resampler.resample(frame):
                yield from self._shifted(resampled.to_ndarray())

    def finish(self):
        for resampled in self.resampler.resample(None):
            yield from self._shifted(resampled.to_ndarray())
        if self.to_skip < -self.delay:  # advanced: the end is silence for as long as was skipped
            yield self._frame(np.zeros((self.channels, -self.delay - self.to_skip), np.float32))
        # delayed: the last `delay` samples stay in the line, cut to keep the length

    def _shifted(self, samples):
        if self.to_skip:
            skipped = min(self.to_skip, samples.shape[1])
            samples, self.to_skip = samples[:, skipped:], self.to_skip - skipped
        if self.delay > 0:
            joined = np.concatenate([self.line, samples], axis=1)
            samples, self.line = joined[:, : samples.shape[1]], joined[:, samples.shape[1] :]
        if samples.shape[1]:
            yield self._frame(samples)

    def _frame(self, samples):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.time_base = Fraction(1, self.rate)
        frame.pts = self.next_pts or 0
        self.next_pts = frame.pts + samples.shape[1]
        return frame


# --- Command line -----------------------------------------------------------------------------


def configure_parser(parser):
    parser.add_argument("video", metavar="VIDEO")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="the fixed copy (same container type)")
    parser.add_argument(
        "--offset",
        type=int,
        default=None,
        metavar="N",
        help="delay the audio N frames (< 0: advance it); default: detect it with `syncnet score`",
    )
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH", help="model for the detection (default: the shipped expert)")
    parser.add_argument("--vshift", type=int, default=hp.VSHIFT, help="search offsets -N..N frames when detecting (default %(default)s)")


def run_command(args) -> int:
    offset = fix_video(args.video, args.output, offset=args.offset, model=args.model, vshift=args.vshift)
    print(f"{args.output}: audio {'delayed' if offset >= 0 else 'advanced'} by {abs(offset)} frames ({abs(offset) / hp.VIDEO_FPS:.2f} s)")
    if abs(offset) / hp.VIDEO_FPS > WARN_OFFSET_SECONDS:
        print(
            f"syncnet fix: warning: {abs(offset) / hp.VIDEO_FPS:.2f} s is a long shift; --offset counts 25 fps frames, not milliseconds",
            file=sys.stderr,
        )
    return 0
