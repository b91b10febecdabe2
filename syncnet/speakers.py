"""Active speaker detection: which face on screen speaks the audio, and when.

    syncnet speakers VIDEO [--json] [--annotate OUT.mp4] [--model NAME_OR_PATH] [--smooth FRAMES]
                           [--threshold T | --calibration JSON] [--offset N]

SyncNet used the way syncnet_python's demo (and TalkNet's SyncNet baseline) use it: every face
track is compared with the same audio, window by window, and the face whose lips match the sound
speaks.

1. Each track's 5-frame windows and the audio windows are embedded once (`embedding.embed_media`) and compared
   at offsets -vshift..vshift (`offsets.score_windows`), as `syncnet score` does.
2. Each window gets a relative confidence:
   (median over offsets of the track's mean distance - the window's distance) / that median,
   read at one offset. That is syncnet_python's per-frame confidence divided by the track's typical
   off-sync distance, so one threshold fits models whose distances differ in scale (about 3 for a
   small model, 15 for syncnet_v2). The offset is shared when it clearly is (`shared_offset`: the
   most confident face whose lips move, if its offset beats chance and the other clear faces agree),
   else each face's own where that beats chance, else 0. `--offset N` fixes it.
3. A track's confidences (window i -> its middle frame) are averaged over `smooth` frames (default
   25, one second; 10-100 is sensible): syllables come at 3-6 Hz, turns last seconds.
4. A face whose lips do not move (`lips_moving`: the inner-lip opening from the dlib landmarks the
   face tracker holds, against their jitter) never speaks. In each frame, among the faces whose lips
   move, the one with the highest smoothed confidence speaks if that is above `threshold`,
   otherwise nobody does (a pause, a voice from off screen).

`--annotate OUT.mp4` writes the video with each face's box green while it speaks and red while it
does not (h264, and as audio the 16 kHz mono track the model heard, as syncnet_python's
visualisation does).
"""

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import hyperparameters as hp
from .errors import UserError
from .files import atomic_output, check_writable

DEFAULT_SMOOTH_FRAMES = 25
# Relative confidence a face needs to be speaking, for a model whose calibration has no
# `speaking_threshold` (`syncnet calibrate` fits one on real footage; the shipped expert's is in its
# calibration file). Measured on the tiny test model (tests/trained_model.py), smoothed over 25
# frames: a mouth moving with the audio stays at 0.5-0.76, a still face wanders between -0.4 and
# 0.37 as the audio changes (above 0.3 in 4 % of the frames of the worst of two clips with two
# still faces). Other models spread differently: calibrate them, or look at `--json --per-frame`.
DEFAULT_THRESHOLD = 0.3
NO_SPEAKER = -1
# Visual activity: a face whose lips do not move is never the speaker, whatever its sync numbers say
# (a photograph, a frozen frame, a listener: the best of 31 offsets finds a chance match for any
# face). The lips move in a frame when the inner-lip opening (dlib landmarks 61-63 to 67-65), over
# the `smooth` frames around it, has a standard deviation of at least MIN_LIP_MOTION eye distances
# (outer eye corners) and MIN_LIP_MOTION_PIXELS pixels: the landmarks of a still face jitter by
# about a pixel, which is a large fraction of a small face's eye distance. Measured per frame (over
# 25 frames) on the first 5 s of the held-out clips scaled to 256 px high and h264-coded, as in
# bench/speakers_accuracy.py: talking faces (35-90 px eye distance) mostly 0.015-0.035 / 0.5-2.7 px at
# their 10th percentile, medians 0.022-0.062 / 1.0-4.0 px; the same clips' first frame frozen 0.000-0.008
# / 0.0-0.6 px (median; at most 0.012 / 1.0 px near a track's ends). Whole tracks: the photograph on a
# book in *Face-Recognition__Obama.mp4 0.018 / 0.9 px (but 9 frames: under MIN_LIP_MOTION_FRAMES), a
# listening face in *obama_curry.mp4 0.012 / 0.6 px. On four composites (vox_nph, LRS2 00016 and 00019,
# GRID pwij3p) the speaking face's median share of speaking frames is 0.77 / 0.75 without this gate,
# 0.63 / 0.58 at 0.02 / 0.5 px and 0.73 / 0.69 here (frozen / talking partner); frozen partner 0.06 -> 0.00.
MIN_LIP_MOTION = 0.013
MIN_LIP_MOTION_PIXELS = 0.4
MIN_LIP_MOTION_FRAMES = hp.WINDOW_FRAMES * 2  # fewer frames of a track than this cannot show motion
INNER_LIP_TOP, INNER_LIP_BOTTOM = (61, 62, 63), (67, 66, 65)
OUTER_EYE_CORNERS = (36, 45)
ANNOTATE_SUFFIXES = (".mp4", ".mov", ".mkv")
SPEAKING_RGB = (0, 210, 0)
SILENT_RGB = (230, 0, 0)


# --- Detection ---------------------------------------------------------------------------------


@dataclass
class SpeakerTrack:
    track_id: int
    start_frame: int
    end_frame: int  # one past the last frame
    offset_frames: int  # the track's own best offset (syncnet score's), for reference
    lse_c: float  # the track's LSE-C at that offset
    speaking_frames: int
    read_offset_frames: int  # the offset its confidence was read at (the shared one, or its own)
    lips_moving_frames: int  # frames whose lips move (`lips_moving`): the only ones it can speak in
    confidence: np.ndarray = field(repr=False)  # (frames,) smoothed relative confidence, NaN where unknown
    boxes: np.ndarray = field(repr=False)  # (frames, 4) x0, y0, x1, y1 face box

    @property
    def speaking_fraction(self) -> float:
        return self.speaking_frames / (self.end_frame - self.start_frame)

    def to_dict(self, per_frame: bool = False) -> dict:
        out = {
            "track_id": self.track_id,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start": self.start_frame / hp.VIDEO_FPS,
            "end": self.end_frame / hp.VIDEO_FPS,
            "speaking_frames": self.speaking_frames,
            "speaking_seconds": self.speaking_frames / hp.VIDEO_FPS,
            "speaking_fraction": round(self.speaking_fraction, 4),
            "mean_confidence": _rounded(np.nanmean(self.confidence)) if np.isfinite(self.confidence).any() else None,
            "offset_frames": self.offset_frames,
            "lse_c": round(self.lse_c, 5),
            "read_offset_frames": self.read_offset_frames,
            "lips_moving_frames": self.lips_moving_frames,
        }
        if per_frame:
            out["confidence"] = [_rounded(value) for value in self.confidence]
        return out


@dataclass
class SpeakerSegment:
    start_frame: int
    end_frame: int  # one past the last frame
    track_id: int | None  # None: nobody on screen speaks

    def to_dict(self) -> dict:
        return {
            "start": self.start_frame / hp.VIDEO_FPS,
            "end": self.end_frame / hp.VIDEO_FPS,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "track_id": self.track_id,
        }


@dataclass
class SpeakerResult:
    video: str
    model: str
    frames: int
    offset_frames: int | None  # the shared offset (every track read at it), or the most confident moving face's
    # "shared": the most confident moving face's offset, clearly shared (read for every face);
    # "per-face": each face read at its own; "fixed": given (--offset)
    offset_source: str
    smooth_frames: int
    threshold: float
    tracks: list[SpeakerTrack]
    speaker: np.ndarray = field(repr=False)  # (frames,) the speaking track's id, NO_SPEAKER for nobody
    warnings: list[str] = field(default_factory=list)

    @property
    def segments(self) -> list[SpeakerSegment]:
        """The timeline: runs of frames with the same speaker (or nobody)."""
        changes = np.flatnonzero(np.diff(self.speaker)) + 1
        bounds = np.concatenate([[0], changes, [len(self.speaker)]])
        return [
            SpeakerSegment(int(start), int(end), None if self.speaker[start] == NO_SPEAKER else int(self.speaker[start]))
            for start, end in zip(bounds[:-1], bounds[1:])
        ]

    def to_dict(self, per_frame: bool = False) -> dict:
        return {
            "video": self.video,
            "model": self.model,
            "frames": self.frames,
            "seconds": self.frames / hp.VIDEO_FPS,
            "offset_frames": self.offset_frames,
            "offset_source": self.offset_source,
            "smooth_frames": self.smooth_frames,
            "threshold": self.threshold,
            "tracks": [track.to_dict(per_frame) for track in self.tracks],
            "segments": [segment.to_dict() for segment in self.segments],
            "warnings": list(self.warnings),
        }


def detect_speakers(
    path,
    model=None,
    *,
    smooth: int = DEFAULT_SMOOTH_FRAMES,
    threshold: float | None = None,
    offset: int | None = None,
    vshift: int = hp.VSHIFT,
    progress: bool = False,
) -> SpeakerResult:
    """Who speaks when in `path`. model: a SyncNet, a .keras path, or None for the default expert.
    offset: read every track's confidence at this audio-video offset (frames, syncnet_python's
    sign) instead of the most confident track's. threshold: None takes the model's calibrated
    `speaking_threshold`, else DEFAULT_THRESHOLD. Raises ValueError for an unusable video."""
    from .embedding import embed_media
    from .loading import resolve_model
    from .offsets import score_windows, search_offset
    from .video import load_media

    if smooth < 1:
        raise UserError(f"smooth must be at least 1 frame, got {smooth}")
    if vshift < 0:
        raise UserError(f"vshift must be >= 0, got {vshift}")
    model, model_name = resolve_model(model)
    if threshold is None:
        threshold = speaking_threshold(model)
    embedded = embed_media(load_media(path), model, vshift=vshift, progress=progress)
    distances = {
        track_id: score_windows(plan.frame_embeddings, embedded.track_audio(plan), plan.vshift, model.family.comparison)
        for track_id, plan in embedded.plans.items()
    }
    searches = {track_id: search_offset(table) for track_id, table in distances.items()}
    moving = {track.track_id: lips_moving(track.landmarks, smooth) for track in embedded.tracks}
    calibration = getattr(model, "calibration", None)
    if offset is not None:
        offset_source, offsets = "fixed", {track_id: offset for track_id in searches}
    else:
        offset_source, offsets, offset = shared_offset(embedded.plans, searches, moving, calibration=calibration)

    num_frames = embedded.media.num_frames
    best_confidence = np.full(num_frames, -np.inf, np.float32)
    speaker = np.full(num_frames, NO_SPEAKER, np.int32)
    confidences = {}
    for track in embedded.tracks:
        track_vshift = embedded.plans[track.track_id].vshift
        read_at = offsets[track.track_id]
        if abs(read_at) > track_vshift:
            embedded.warnings.append(
                f"face track {track.track_id}: too short to read at offset {read_at:+d}; read at "
                f"{np.clip(read_at, -track_vshift, track_vshift):+d}"
            )
        confidence = smoothed(
            window_confidence(distances[track.track_id], read_at, track.end - track.start, model.family.window_frames), smooth
        )
        confidences[track.track_id] = confidence
        frames = slice(track.start, track.end)
        # NaN compares False: frames without windows never win; nor do frames whose lips do not move
        louder = (confidence > best_confidence[frames]) & moving[track.track_id]
        best_confidence[frames] = np.where(louder, confidence, best_confidence[frames])
        speaker[frames] = np.where(louder, track.track_id, speaker[frames])
    speaker[best_confidence <= threshold] = NO_SPEAKER

    tracks = [
        SpeakerTrack(
            track_id=track.track_id,
            start_frame=track.start,
            end_frame=track.end,
            offset_frames=searches[track.track_id].offset,
            lse_c=searches[track.track_id].confidence,
            speaking_frames=int(np.count_nonzero(speaker[track.start : track.end] == track.track_id)),
            read_offset_frames=int(offsets[track.track_id]),
            lips_moving_frames=int(np.count_nonzero(moving[track.track_id])),
            confidence=confidences[track.track_id],
            boxes=track.face_boxes().astype(np.float32),
        )
        for track in embedded.tracks
    ]
    return SpeakerResult(
        video=str(path),
        model=model_name,
        frames=num_frames,
        offset_frames=None if offset is None else int(offset),
        offset_source=offset_source,
        smooth_frames=smooth,
        threshold=threshold,
        tracks=tracks,
        speaker=speaker,
        warnings=embedded.warnings,
    )


def lips_moving(landmarks: np.ndarray, smooth: int) -> np.ndarray:
    """(frames,) bool: whether the lips move around each frame of a track (its (frames, 68, 2)
    landmarks): the inner-lip opening's standard deviation over the `smooth` frames around it is at
    least MIN_LIP_MOTION eye distances and MIN_LIP_MOTION_PIXELS pixels. A track shorter than
    MIN_LIP_MOTION_FRAMES never moves its lips: too short to tell motion from the landmarks' jitter."""
    if len(landmarks) < MIN_LIP_MOTION_FRAMES:
        return np.zeros(len(landmarks), bool)
    opening = np.linalg.norm(landmarks[:, INNER_LIP_TOP] - landmarks[:, INNER_LIP_BOTTOM], axis=2).mean(axis=1)
    eyes = np.linalg.norm(landmarks[:, OUTER_EYE_CORNERS[1]] - landmarks[:, OUTER_EYE_CORNERS[0]], axis=1)
    width = max(smooth, MIN_LIP_MOTION_FRAMES)
    pixels = _moving_std(opening.astype(np.float64), width)
    relative = _moving_std(opening / np.maximum(eyes, 1.0), width)
    return (pixels >= MIN_LIP_MOTION_PIXELS) & (relative >= MIN_LIP_MOTION)


def _moving_std(values: np.ndarray, width: int) -> np.ndarray:
    mean, square = smoothed(values, width), smoothed(values**2, width)
    return np.sqrt(np.maximum(square.astype(np.float64) - mean.astype(np.float64) ** 2, 0.0))


def shared_offset(plans: dict, searches: dict, moving: dict, *, calibration) -> tuple[str, dict, int | None]:
    """(offset_source, track id -> the offset its confidence is read at, the top-level offset).

    A file has one audio-video offset, and a speaking face finds it; a silent face's own best offset
    is the minimum of 2 vshift + 1 noisy distances, which biases its confidence upwards. So the
    offset of the most confident face whose lips move (highest LSE-C) is read for every face when it
    is clearly shared: it beats chance for that face's evidence (calibration.offset_beats_chance),
    and every other moving face whose own offset beats chance agrees with it within a frame.
    Otherwise (no face's offset beats chance, or two faces clearly disagree: a dubbed face, a
    picture-in-picture) each face is read at its own offset if that beats chance, else at 0. Faces
    whose lips never move take no part: a photograph's chance match must not be imposed on the
    others."""
    from .calibration import offset_beats_chance
    from .offsets import IN_SYNC_MIN_CONFIDENCE

    def beats(track_id):
        windows = plans[track_id].windows
        chance = None if calibration is None else calibration.chance_confidence
        return offset_beats_chance(
            searches[track_id].confidence, windows, calibrated=calibration is not None, placeholder=IN_SYNC_MIN_CONFIDENCE, chance=chance
        )[0]

    own = {track_id: search.offset for track_id, search in searches.items()}
    clear = [track_id for track_id in searches if moving[track_id].any() and beats(track_id)]
    # a face whose own offset does not beat chance is read at 0, the file's own alignment: its
    # "best" offset is noise, and reading it there would bias its confidence upwards
    per_face = {track_id: own[track_id] if track_id in clear else 0 for track_id in searches}
    if not clear:
        return "per-face", per_face, None
    best = max(clear, key=lambda track_id: searches[track_id].confidence)
    offset = own[best]
    if all(abs(own[track_id] - offset) <= 1 for track_id in clear):
        return "shared", {track_id: offset for track_id in searches}, offset
    return "per-face", per_face, offset


def speaking_threshold(model) -> float:
    """The model's calibrated threshold (`syncnet calibrate`), else DEFAULT_THRESHOLD."""
    calibration = getattr(model, "calibration", None)
    if calibration is None or calibration.speaking_threshold is None:
        return DEFAULT_THRESHOLD
    return calibration.speaking_threshold


def window_confidence(distances: np.ndarray, offset: int, num_frames: int, window_frames: int) -> np.ndarray:
    """(num_frames,) relative confidence of a track's frames at `offset` (clipped to the distances'
    range), from its (windows, 2 vshift + 1) distances: window i lands on its middle frame
    i + window_frames // 2; frames without a window are NaN."""
    from .offsets import offset_column

    typical = float(np.median(distances.mean(axis=0)))  # the track's distance when out of sync
    column = offset_column(distances, offset)
    confidence = np.full(num_frames, np.nan, np.float32)
    middle = window_frames // 2
    confidence[middle : middle + len(distances)] = (typical - distances[:, column]) / max(typical, 1e-12)
    return confidence


def smoothed(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving mean over `width` frames (frames f - width // 2 ..) that skips NaN; NaN where
    a window holds no value. Any length, also shorter than `width`."""
    valid = np.isfinite(values)

    def window_sums(series):
        padded = np.concatenate([np.zeros(width // 2), series, np.zeros(width - 1 - width // 2)])
        running = np.concatenate([[0.0], np.cumsum(padded)])
        return running[width:] - running[:-width]

    sums, counts = window_sums(np.where(valid, values, 0.0)), window_sums(valid.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0.5, sums / counts, np.nan).astype(np.float32)


def _rounded(value) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 4)


# --- Annotated video ---------------------------------------------------------------------------


def check_annotate_output(video, output):
    """Refuse to write over the input (by any path to it), into a folder that is not there, or into
    a container without h264 + AAC."""
    video, output = Path(video), Path(output)
    if output.suffix.lower() not in ANNOTATE_SUFFIXES:
        raise UserError(f"{output}: the annotated video is h264 + AAC; name it {' / '.join(ANNOTATE_SUFFIXES)}")
    if output.resolve() == video.resolve() or (output.exists() and video.exists() and os.path.samefile(output, video)):
        raise UserError(f"{output}: is the input video; write the annotated copy to another file")
    check_writable(output)


def write_annotated(result: SpeakerResult, output):
    """Write `result.video` with every face box drawn, green while that face speaks and red while it
    does not, to `output` (a temporary file beside it, then renamed)."""
    from .video import load_media

    check_annotate_output(result.video, output)
    media = load_media(result.video)
    with atomic_output(output) as temporary:
        _encode_annotated(result, media, temporary)


def _encode_annotated(result: SpeakerResult, media, path: str):
    from fractions import Fraction

    import av

    # yuv420p needs even sizes: drop a last odd row / column
    width, height = media.width // 2 * 2, media.height // 2 * 2
    with av.open(path, mode="w") as container:
        video = container.add_stream("libx264", rate=hp.VIDEO_FPS, options={"preset": "veryfast", "crf": "20"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=hp.AUDIO_SAMPLE_RATE, layout="mono")
        audio.time_base = Fraction(1, hp.AUDIO_SAMPLE_RATE)

        samples = media.audio[: round(result.frames * hp.AUDIO_SAMPLE_RATE / hp.VIDEO_FPS)]
        chunk = 1024  # AAC's frame size
        for begin in range(0, len(samples), chunk):
            frame = av.AudioFrame.from_ndarray(samples[None, begin : begin + chunk], format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = hp.AUDIO_SAMPLE_RATE, begin, audio.time_base
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))

        for index, rgb in enumerate(media.frames()):
            frame = av.VideoFrame.from_ndarray(_draw_boxes(rgb[:height, :width], result, index), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, hp.VIDEO_FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))


def _draw_boxes(rgb: np.ndarray, result: SpeakerResult, index: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    for track in result.tracks:
        if not track.start_frame <= index < track.end_frame:
            continue
        x0, y0, x1, y1 = (float(value) for value in track.boxes[index - track.start_frame])
        colour = SPEAKING_RGB if result.speaker[index] == track.track_id else SILENT_RGB
        line = max(2, round((x1 - x0) / 40))
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
        confidence = track.confidence[index - track.start_frame]
        label = f"{track.track_id}" + (f" {confidence:+.2f}" if np.isfinite(confidence) else "")
        draw.text((x0 + line, y0 + line), label, fill=colour, font=_font(max(10, round((x1 - x0) / 10))))
    return np.asarray(image)


@functools.cache
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


# --- Command line ------------------------------------------------------------------------------


def configure_parser(parser):
    parser.add_argument("video", metavar="VIDEO", help="a video with one or more faces and its audio")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--per-frame", action="store_true", help="with --json: every track's per-frame confidence")
    parser.add_argument("--annotate", metavar="OUT.mp4", help="also write the video with speaking (green) / silent (red) face boxes")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH", help="a .keras SyncNet (default: the shipped expert)")
    parser.add_argument(
        "--smooth",
        type=int,
        default=DEFAULT_SMOOTH_FRAMES,
        metavar="FRAMES",
        help="average each face's confidence over this many frames (default %(default)s; 10-100 is sensible)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help=f"relative confidence a face needs to be speaking (default: the calibrated one, else {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--calibration",
        metavar="JSON",
        help="take the threshold from this `syncnet calibrate` file (default: the model's own; the shipped expert has one)",
    )
    parser.add_argument(
        "--offset",
        type=int,
        default=None,
        metavar="FRAMES",
        help="read confidences at this audio-video offset (default: the most confident face's)",
    )
    parser.add_argument("--vshift", type=int, default=hp.VSHIFT, help="search offsets -N..N frames (default %(default)s)")


def run_command(args) -> int:
    from .video import check_exists

    check_exists(args.video)  # before the model loads
    if args.annotate:
        check_annotate_output(args.video, args.annotate)  # before the minutes of detection, not after
    threshold = args.threshold
    if threshold is None and args.calibration:
        from .calibration import load_calibration

        threshold = load_calibration(args.calibration).speaking_threshold
        if threshold is None:
            raise UserError(f"{args.calibration}: has no speaking_threshold (fitted by `syncnet calibrate` since 2026-12-01)")
    result = detect_speakers(
        args.video,
        args.model,
        smooth=args.smooth,
        threshold=threshold,
        offset=args.offset,
        vshift=args.vshift,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(result.to_dict(per_frame=args.per_frame)) if args.json else summary_text(result), flush=True)
    if args.annotate:
        write_annotated(result, args.annotate)
    return 0


def summary_text(result: SpeakerResult) -> str:
    if result.offset_source == "per-face":
        read = "no offset clearly shared: each face read at its own where it beats chance, else at 0"
    else:
        read = f"confidences read at offset {result.offset_frames:+d} frames ({result.offset_source})"
    lines = [f"{result.video}: {len(result.tracks)} face track(s), {read}"]
    for track in result.tracks:
        lines.append(
            f"  track {track.track_id}: on screen {track.start_frame / hp.VIDEO_FPS:.2f}-{track.end_frame / hp.VIDEO_FPS:.2f} s, "
            f"speaking {100 * track.speaking_fraction:.0f}% ({track.speaking_frames / hp.VIDEO_FPS:.2f} s), "
            f"lips moving {100 * track.lips_moving_frames / (track.end_frame - track.start_frame):.0f}%, "
            f"offset {track.read_offset_frames:+d}"
        )
    for segment in result.segments:
        who = "nobody" if segment.track_id is None else f"track {segment.track_id}"
        lines.append(f"  {segment.start_frame / hp.VIDEO_FPS:7.2f}-{segment.end_frame / hp.VIDEO_FPS:7.2f} s  {who}")
    lines.extend(f"  warning: {warning}" for warning in result.warnings)
    return "\n".join(lines)
