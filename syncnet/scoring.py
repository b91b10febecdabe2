"""Scoring lip sync the way syncnet_python does: AV offset, LSE-D (min_dist), LSE-C (confidence).

    syncnet score VIDEO_OR_DIR... [--json] [--csv FILE] [--model NAME_OR_PATH] [--vshift 15] [--plot PNG]

For every face track: embed each 5-frame window of crops and each 20-step MFCC window once, compare
frame window i with audio window i + k for every offset k in -vshift..vshift (`score_windows`,
syncnet_python's `calc_pdist`), average over windows, and read off
- the offset: vshift - argmin of the mean distance (> 0: the audio leads the video; delaying the
  audio by that many frames fixes it, see `syncnet fix`),
- LSE-D: that minimum mean distance, LSE-C: the median mean distance minus the minimum,
- a per-frame confidence: the median minus each window's distance at the best offset, median-filtered,
- the head's P(in sync): the model head's probability averaged over the windows at the best offset
  (a per-window figure: it does not decide the verdict),
- the verdict (`Verdict`): in sync when the offset is within a frame of 0 and the calibration's
  P(tampered) is under 0.5 (without a calibration: LSE-C above a bar); `verdict_reason` names the
  figure that decided it.
The numbers are syncnet_python's `SyncNetInstance.evaluate` to float precision (same windows, same
zero padding, same eps), so LSE-D / LSE-C compare with the papers' tables when the model is theirs.

Frames stream twice from the file (face tracks, then crops); only embeddings are kept, so memory
grows by 2 x embedding size per frame (8 KB a frame for syncnet_v2), never by the frames.
"""

import csv
import functools
import json
import os
import sys
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import hyperparameters as hp
from .files import atomic_output, check_writable

# A video counts as in sync when its offset is within a frame of 0 and the sync is trustworthy: by
# the model's calibration (`syncnet calibrate`; `load_model` attaches the shipped expert's) when it has one,
# else by this placeholder rule, LSE-C above this. A conservative default: real talking heads score
# far above it with syncnet_v2 weights (LRS2's real videos average 7.8), unrelated audio gives a
# flat curve and a low one.
IN_SYNC_MIN_CONFIDENCE = 1.5
IN_SYNC_MAX_OFFSET = 1  # frames

PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds it to the difference
SAMPLES_PER_FRAME = hp.AUDIO_SAMPLE_RATE // hp.VIDEO_FPS  # 640
BATCH_WINDOWS = 64  # windows per tower call
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts")


def score_windows(frame_embeddings, audio_embeddings, vshift: int) -> np.ndarray:
    """syncnet_python's `calc_pdist`: (n, d), (n, d) -> (n, 2 vshift + 1) distances.

    Column j holds ||frame_i - audio_{i + j - vshift} + 1e-6|| with audio windows outside 0..n-1 taken
    as zero vectors (syncnet_python pads the audio embeddings with vshift zeros at both ends).
    """
    frame_embeddings = np.asarray(frame_embeddings, np.float32)
    audio_embeddings = np.asarray(audio_embeddings, np.float32)
    if frame_embeddings.shape != audio_embeddings.shape or frame_embeddings.ndim != 2:
        raise ValueError(
            f"need frame and audio embeddings of the same shape (n, d), got {frame_embeddings.shape} "
            f"and {audio_embeddings.shape}"
        )
    n = len(frame_embeddings)
    padded = np.pad(audio_embeddings, ((vshift, vshift), (0, 0)))
    distances = np.empty((n, 2 * vshift + 1), np.float32)
    for j in range(2 * vshift + 1):
        difference = frame_embeddings - padded[j : j + n] + PAIRWISE_EPS
        distances[:, j] = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    return distances


# A track's sync numbers, in JSON order: each TrackScore's, and the best track's at a video's top level.
SYNC_KEYS = ("offset_frames", "offset_seconds", "min_dist", "confidence", "sync_probability",
             "sync_probability_at_zero", "in_sync", "verdict_reason", "tampered")


@dataclass
class TrackScore:
    """One face track's sync, in syncnet_python's terms. Frame numbers are 25 fps frames of the video."""

    track_id: int
    start_frame: int  # first frame of the track
    num_frames: int  # frames scored (the track, cut where the audio ends)
    vshift: int  # offsets searched: -vshift..vshift
    offset_frames: int  # > 0: the audio leads; delay it this many frames to fix
    min_dist: float  # LSE-D
    confidence: float  # LSE-C
    sync_probability: float  # head's P(in sync) at the found offset, mean over windows (not the verdict)
    sync_probability_at_zero: float  # the same at offset 0
    in_sync: bool  # the verdict (`Verdict`)
    verdict_reason: str  # the figure that decided it, e.g. "P(tampered) 0.08 < 0.5"
    tampered: float | None  # P(re-dubbed / audio swapped), from the calibration; None without one
    mean_distance: np.ndarray = field(repr=False)  # (2 vshift + 1,) mean distance at offsets vshift..-vshift
    frame_confidence: np.ndarray = field(repr=False)  # (windows,) smoothed confidence of window i (frames i..i+4)

    @property
    def offset_seconds(self) -> float:
        return self.offset_frames / hp.VIDEO_FPS

    @property
    def offsets(self) -> np.ndarray:
        """The offset of each entry of `mean_distance`."""
        return self.vshift - np.arange(2 * self.vshift + 1)

    def to_dict(self, per_frame: bool = False) -> dict:
        out = {
            "track_id": self.track_id,
            "start_frame": self.start_frame,
            "frames": self.num_frames,
            **{key: getattr(self, key) for key in SYNC_KEYS},
            "vshift": self.vshift,
            "mean_distance": [round(float(d), 5) for d in self.mean_distance],
        }
        if per_frame:
            out["frame_confidence"] = [round(float(c), 5) for c in self.frame_confidence]
        return out


def _from_best(name):
    return property(lambda self: None if self.best is None else getattr(self.best, name))


@dataclass
class ScoreResult:
    """A video's score: the best-synced face track's numbers at the top level, every track in `tracks`.

    `status` is "error" when the video could not be scored; `error` then says why in one line and the
    numbers are None.
    """

    video: str
    model: str
    status: str = "ok"
    error: str | None = None
    frames: int | None = None
    tracks: list[TrackScore] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def best(self) -> TrackScore | None:
        return max(self.tracks, key=lambda track: track.confidence, default=None)

    # The top-level numbers are the best track's (None for an error result).
    offset_frames = _from_best("offset_frames")
    offset_seconds = _from_best("offset_seconds")
    min_dist = _from_best("min_dist")
    confidence = _from_best("confidence")
    sync_probability = _from_best("sync_probability")
    sync_probability_at_zero = _from_best("sync_probability_at_zero")
    in_sync = _from_best("in_sync")
    verdict_reason = _from_best("verdict_reason")
    tampered = _from_best("tampered")

    def to_dict(self, per_frame: bool = False) -> dict:
        """The JSON contract (docs/scoring.md): one flat object per video."""
        return {
            "video": self.video,
            "status": self.status,
            "error": self.error,
            **{key: getattr(self, key) for key in SYNC_KEYS},  # the best track's
            "frames": self.frames,
            "face_tracks": None if self.status != "ok" else len(self.tracks),
            "model": self.model,
            "warnings": list(self.warnings),
            "tracks": [track.to_dict(per_frame) for track in self.tracks],
        }




def score_video(
    path,
    model=None,
    *,
    audio_path=None,
    vshift: int = hp.VSHIFT,
    min_confidence: float = IN_SYNC_MIN_CONFIDENCE,
    calibration=None,
    batch_size: int = BATCH_WINDOWS,
    progress: bool = False,
) -> ScoreResult:
    """Score the lip sync of every face in a video (or a VidTIMIT frame folder).

    model: a SyncNet, a .keras path, or None for the default expert. audio_path: score against this
    audio instead of the video's own. calibration: a `calibration.Calibration` or the path of one
    (`syncnet calibrate`) for the in-sync verdict and the `tampered` likelihood; by default the
    model's own (`model.calibration`), else the placeholder rule LSE-C >
    `min_confidence`. Returns a ScoreResult; a video that cannot be scored (missing, unreadable, no
    audio, silent, no face, too short) gives status "error" with the reason, never an exception. A
    bad `model` or `calibration` does raise: it is not the video's fault.
    """
    from .video import load_media

    model, model_name = _resolve_model(model)
    calibration = _resolve_calibration(calibration)
    try:
        media = load_media(path, audio_path)
    except (ValueError, OSError) as error:  # MediaError is a ValueError
        return ScoreResult(video=str(path), model=model_name, status="error", error=_one_line(error))
    result = score_media(media, model, vshift=vshift, min_confidence=min_confidence, calibration=calibration,
                         batch_size=batch_size, progress=progress)
    result.model = model_name
    return result


def score_media(
    media,
    model=None,
    *,
    vshift: int = hp.VSHIFT,
    min_confidence: float = IN_SYNC_MIN_CONFIDENCE,
    calibration=None,
    batch_size: int = BATCH_WINDOWS,
    progress: bool = False,
) -> ScoreResult:
    """`score_video` on media already open: anything with `path`, `audio` (16 kHz mono float32,
    sample 0 at frame 0), `num_frames` and `frames(gray=False)` (a fresh iterator of uint8 frames at
    25 fps on every call: RGB (H, W, 3), or with gray=True their luma (H, W), which the face
    tracking reads) - a video.Media, or a chunk of a live stream held in memory."""
    model, model_name = _resolve_model(model)
    verdict = Verdict(_resolve_calibration(calibration) or model.calibration, min_confidence)
    if vshift < 0:
        raise ValueError(f"vshift must be >= 0, got {vshift}")
    result = ScoreResult(video=str(media.path), model=model_name)
    try:
        _score_into(result, media, model, vshift, verdict, batch_size, progress)
    except (ValueError, OSError) as error:  # MediaError is a ValueError
        return ScoreResult(video=str(media.path), model=model_name, status="error", error=_one_line(error))
    return result


def _resolve_model(model):
    from .models import SyncNet
    from .models.siamese import DEFAULT_MODEL, load_model

    if isinstance(model, SyncNet):
        return model, model.name
    return load_model(model), DEFAULT_MODEL if model is None else os.fspath(model)


def _resolve_calibration(calibration):
    """A Calibration, or the path of one, or None."""
    from .calibration import Calibration, load_calibration

    if calibration is None or isinstance(calibration, Calibration):
        return calibration
    return load_calibration(calibration)


@dataclass(frozen=True)
class Verdict:
    """The one definition of "in sync": the offset is within IN_SYNC_MAX_OFFSET frames of 0, and
    - with a calibration: P(tampered) < 0.5, its logistic read at its score (the same as the score
      reaching its threshold: the logistic is centred there);
    - without one: LSE-C > min_confidence (a placeholder; P(tampered) is then None).
    `verdict_reason` names the figure that decided, with its bar."""

    calibration: object = None  # calibration.Calibration
    min_confidence: float = IN_SYNC_MIN_CONFIDENCE

    def apply(self, track: "TrackScore"):
        if self.calibration is None:
            track.tampered = None
            trusted = track.confidence > self.min_confidence
            figure = f"LSE-C {track.confidence:.2f} {'>' if trusted else '<='} {self.min_confidence:g}"
        else:
            score = self.calibration.score_of(track)
            track.tampered = self.calibration.tampered_likelihood(score)
            trusted = self.calibration.in_sync(score)
            figure = f"P(tampered) {track.tampered:.2f} {'<' if trusted else '>='} 0.5"
        near_zero = abs(track.offset_frames) <= IN_SYNC_MAX_OFFSET
        track.in_sync = bool(near_zero and trusted)
        track.verdict_reason = figure if near_zero else (
            f"offset {track.offset_frames:+d} frames is more than {IN_SYNC_MAX_OFFSET} from 0; {figure}")


@dataclass
class _TrackPlan:
    """Where a track's windows are: frames start..start + windows + 4, and its embeddings so far."""

    track_id: int
    start: int
    num_frames: int
    windows: int  # syncnet_python's lastframe = min_length - 5 (it leaves the last possible window out)
    vshift: int
    frame_embeddings: list = field(default_factory=list)


@dataclass
class TrackPlans:
    """What `plan_tracks` found: the face tracks worth scoring, their windows, and what was left out."""

    tracks: list  # faces.FaceTrack with at least one window under audio
    plans: dict  # track id -> _TrackPlan
    warnings: list[str]
    audio_frames: int  # 25 fps frames with audio under them


def plan_tracks(media, vshift: int, progress: bool = False) -> TrackPlans:
    """Check the media (audio not silent, at least 6 frames with audio), follow its faces, and lay out
    each track's windows as syncnet_python does. Raises ValueError with a one-line reason."""
    from .faces import find_face_tracks
    from .video import is_silent

    path = media.path
    if is_silent(media.audio):
        raise ValueError(f"{path}: the audio is silent")
    audio_frames = len(media.audio) // SAMPLES_PER_FRAME
    if min(media.num_frames, audio_frames) < hp.WINDOW_FRAMES + 1:
        raise ValueError(
            f"{path}: too short: {min(media.num_frames, audio_frames)} frames of video with audio, "
            f"need at least {hp.WINDOW_FRAMES + 1}"
        )

    tracking = find_face_tracks(_progress(media.frames(gray=True), media.num_frames, "faces", progress))
    if not tracking.tracks:
        raise ValueError(f"{path}: no face found")
    warnings, plans = list(getattr(media, "warnings", ())), {}  # the decoder's; a live chunk has none
    for track in tracking.tracks:
        # syncnet_python cuts each track's audio to the track: it scores min(track, audio) frames
        num_frames = min(track.end - track.start, audio_frames - track.start)
        windows = num_frames - hp.WINDOW_FRAMES
        if windows < 1:
            warnings.append(f"face track {track.track_id}: only {max(num_frames, 0)} frames with audio, not scored")
            continue
        track_vshift = min(vshift, windows - 1)
        if track_vshift < vshift:
            warnings.append(
                f"face track {track.track_id}: {num_frames} frames is too short to search +-{vshift} frames; "
                f"searched +-{track_vshift}"
            )
        plans[track.track_id] = _TrackPlan(track.track_id, track.start, num_frames, windows, track_vshift)
    if not plans:
        raise ValueError(f"{path}: no face track is longer than {hp.WINDOW_FRAMES} frames")
    tracks = [track for track in tracking.tracks if track.track_id in plans]
    return TrackPlans(tracks, plans, warnings, audio_frames)


def _score_into(result, media, model, vshift, verdict, batch_size, progress):
    from .audio import mfcc_in_chunks
    from .faces import crop_tracks, frames_to_crop

    result.frames = media.num_frames
    planned = plan_tracks(media, vshift, progress)
    result.warnings += planned.warnings
    plans = planned.plans

    towers = compiled_towers(model)
    audio_windows = _embed_audio_windows(towers, mfcc_in_chunks(media.audio), plans.values(), batch_size)
    crops = crop_tracks(_progress(frames_to_crop(media, model.visual_input), media.num_frames, "lips", progress), planned.tracks, model.visual_input)
    _embed_frame_windows(towers, crops, plans, batch_size)

    for plan in plans.values():
        frame_embeddings = np.concatenate(plan.frame_embeddings)
        audio_embeddings = audio_windows[plan.start : plan.start + plan.windows]
        result.tracks.append(_track_score(model, plan, frame_embeddings, audio_embeddings, verdict))


@dataclass(frozen=True)
class Towers:
    """A model's two towers (and frame encoder) as graph functions of any batch size (2-4x faster
    than eager calls)."""

    encode_frames: object  # (n, H, W, C) crops -> features; None when the visual tower reads crops
    embed_features: object
    embed_audio: object
    feature_shape: tuple
    embedding_dim: int


@functools.lru_cache(maxsize=4)  # traced once per model; keeps the last few models alive, no more
def compiled_towers(model) -> Towers:
    import tensorflow as tf

    def compiled(function, shape):
        return tf.function(function, input_signature=[tf.TensorSpec((None, *shape), tf.float32)])

    return Towers(
        encode_frames=None if model.frame_encoder is None else compiled(model.encode_frames, model.frame_shape[1:]),
        embed_features=compiled(model.embed_features, model.feature_shape),
        embed_audio=compiled(model.embed_audio, model.mfcc_shape),
        feature_shape=model.feature_shape,
        embedding_dim=model.embedding_dim,
    )


def _embed_audio_windows(towers, mfcc, plans, batch_size) -> np.ndarray:
    """Audio embedding of the MFCC window of every frame a track needs, (last needed frame + 1, d);
    frames no track needs stay zero. Each window goes through the audio tower once, however many
    tracks share it."""
    needed = sorted(set().union(*(range(plan.start, plan.start + plan.windows) for plan in plans)))
    embeddings = np.zeros((needed[-1] + 1, towers.embedding_dim), np.float32)
    for begin in range(0, len(needed), batch_size):
        frames = needed[begin : begin + batch_size]
        steps = [hp.MFCC_STEPS_PER_FRAME * frame for frame in frames]
        batch = np.stack([mfcc[:, step : step + hp.WINDOW_MFCC_STEPS] for step in steps])
        embeddings[frames] = towers.embed_audio(batch).numpy()
    return embeddings


def _encoded_crops(towers, crops, batch_size):
    """The (frame index, {track_id: crop}) stream with each crop replaced by what the visual tower
    reads: the frame encoder's features as the codes shards hold, `batch_size` crops per call - each
    frame encoded once, however many windows it is in - or the crop itself."""
    if towers.encode_frames is None:
        yield from crops
        return
    from .models.towers import lip_feature_codes

    pending, count = [], 0

    def flush():
        flat = np.stack([crop for _, track_crops in pending for crop in track_crops.values()]).astype(np.float32)
        features = iter(lip_feature_codes(towers.encode_frames(flat).numpy()))
        encoded = [(frame_index, {track_id: next(features) for track_id in track_crops}) for frame_index, track_crops in pending]
        pending.clear()
        return encoded

    for frame_index, track_crops in crops:
        pending.append((frame_index, track_crops))
        count += len(track_crops)
        if count >= batch_size:
            yield from flush()
            count = 0
    if pending:
        yield from flush()


def _embed_frame_windows(towers, crops, plans, batch_size):
    """Stream crops, keep the last 5 per track (encoded, for a model with a frame encoder), and send
    every window a track needs through the visual tower in batches that mix tracks; the embeddings
    land in each plan in window order."""
    recent = {track_id: deque(maxlen=hp.WINDOW_FRAMES) for track_id in plans}
    pending_ids, pending_windows = [], []

    def flush():
        embeddings = towers.embed_features(np.stack(pending_windows).astype(np.float32)).numpy()
        for track_id, embedding in zip(pending_ids, embeddings):
            plans[track_id].frame_embeddings.append(embedding[None])
        pending_ids.clear()
        pending_windows.clear()

    for frame_index, track_crops in _encoded_crops(towers, crops, batch_size):
        for track_id, crop in track_crops.items():
            plan = plans.get(track_id)
            if plan is None:
                continue
            recent[track_id].append(crop)
            window = frame_index - (hp.WINDOW_FRAMES - 1) - plan.start
            if len(recent[track_id]) == hp.WINDOW_FRAMES and 0 <= window < plan.windows:
                pending_ids.append(track_id)
                pending_windows.append(np.stack(recent[track_id]).reshape(towers.feature_shape))
                if len(pending_windows) == batch_size:
                    flush()
    if pending_windows:
        flush()
    for plan in plans.values():
        if len(plan.frame_embeddings) != plan.windows:
            raise ValueError(
                f"face track {plan.track_id}: got {len(plan.frame_embeddings)} crop windows of {plan.windows}"
            )


@dataclass
class OffsetSearch:
    """What syncnet_python's evaluate() reads off the (windows, offsets) distance table."""

    offset: int  # vshift - argmin: > 0 the audio leads
    min_dist: float  # LSE-D: the smallest mean distance
    confidence: float  # LSE-C: median - min of the mean distances
    best_column: int  # the argmin
    mean_distance: np.ndarray  # (2 vshift + 1,) mean over windows, offsets vshift..-vshift
    frame_confidence: np.ndarray  # (windows,) median - distance at the best offset, median filtered


def search_offset(distances: np.ndarray) -> OffsetSearch:
    """syncnet_python's evaluate() after calc_pdist, on `score_windows`' output."""
    from scipy.signal import medfilt

    vshift = (distances.shape[1] - 1) // 2
    mean_distance = distances.mean(axis=0)
    best = int(np.argmin(mean_distance))
    median = float(np.median(mean_distance))  # an odd count: torch.median's middle value
    with warnings.catch_warnings():  # fewer windows than the kernel: zero-padded, as syncnet_python's
        warnings.filterwarnings("ignore", "kernel_size exceeds volume extent")
        frame_confidence = medfilt(median - distances[:, best], kernel_size=hp.CONFIDENCE_MEDIAN_FILTER)
    return OffsetSearch(
        offset=vshift - best,
        min_dist=float(mean_distance[best]),
        confidence=median - float(mean_distance[best]),
        best_column=best,
        mean_distance=mean_distance,
        frame_confidence=frame_confidence.astype(np.float32),
    )


def _track_score(model, plan, frame_embeddings, audio_embeddings, verdict: Verdict) -> TrackScore:
    distances = score_windows(frame_embeddings, audio_embeddings, plan.vshift)
    search = search_offset(distances)
    # P(in sync) over the windows whose paired audio exists at that offset (not the zero padding)
    paired = np.arange(plan.windows) - search.offset
    paired = (paired >= 0) & (paired < plan.windows)
    probability = _to_numpy(model.head(distances[paired, search.best_column]))
    probability_at_zero = _to_numpy(model.head(distances[:, plan.vshift]))
    track = TrackScore(
        track_id=plan.track_id,
        start_frame=plan.start,
        num_frames=plan.num_frames,
        vshift=plan.vshift,
        offset_frames=search.offset,
        min_dist=search.min_dist,
        confidence=search.confidence,
        sync_probability=float(probability.mean()),
        sync_probability_at_zero=float(probability_at_zero.mean()),
        in_sync=False,
        verdict_reason="",
        tampered=None,
        mean_distance=search.mean_distance,
        frame_confidence=search.frame_confidence,
    )
    verdict.apply(track)
    return track


def _to_numpy(tensor) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(tensor))


def _progress(frames, total, description, enabled):
    if not enabled:
        return frames
    from tqdm import tqdm

    return tqdm(frames, total=total, desc=description, unit="frame", leave=False, file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


# --- Plots ------------------------------------------------------------------------------------


def plot_result(result: ScoreResult, png_path):
    """One PNG (to a path or a binary file object): mean distance vs offset for every track (the best one bold), and the best track's
    per-frame confidence over time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    by_offset, over_time = figure.subplots(1, 2, width_ratios=(2, 3))
    best = result.best
    for track in result.tracks:
        by_offset.plot(
            track.offsets, track.mean_distance, marker="o", markersize=3,
            linewidth=2.0 if track is best else 0.8, label=f"track {track.track_id}",
        )
    by_offset.axvline(best.offset_frames, color="grey", linestyle=":")
    by_offset.set(xlabel="offset (frames; > 0: audio leads)", ylabel="mean distance",
                  title=f"offset {best.offset_frames:+d}, LSE-D {best.min_dist:.2f}, LSE-C {best.confidence:.2f}")
    by_offset.legend(fontsize="small")
    seconds = (best.start_frame + np.arange(len(best.frame_confidence))) / hp.VIDEO_FPS
    over_time.plot(seconds, best.frame_confidence)
    over_time.axhline(0.0, color="grey", linewidth=0.5)
    over_time.set(xlabel="time (s)", ylabel="confidence", title=f"track {best.track_id}: per-frame confidence")
    figure.suptitle(Path(result.video).name)
    with warnings.catch_warnings():
        # a file name in a script the font lacks (CJK, ...) shows as boxes in the title, not as a warning
        warnings.filterwarnings("ignore", "Glyph .* missing from")
        figure.savefig(png_path, dpi=100, format="png")


# --- Command line -----------------------------------------------------------------------------

CSV_COLUMNS = (
    "video", "status", "error", "offset_frames", "offset_seconds", "min_dist", "confidence",
    "sync_probability", "in_sync", "verdict_reason", "tampered", "frames", "face_tracks", "model",
)


def configure_parser(parser):
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="videos, or folders to search for videos")
    parser.add_argument("--json", action="store_true", help="one JSON object per video per line on stdout")
    parser.add_argument("--csv", metavar="FILE", help="also write a table: one row per video and a mean row")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH", help="a .keras SyncNet (default: the shipped expert)")
    parser.add_argument("--vshift", type=int, default=hp.VSHIFT, help="search offsets -N..N frames (default %(default)s)")
    parser.add_argument("--calibration", metavar="JSON",
                        help="the in-sync / tampered verdict fitted by `syncnet calibrate` (default: the model's own; "
                             "the shipped expert has one)")
    parser.add_argument("--min-confidence", type=float, default=IN_SYNC_MIN_CONFIDENCE,
                        help="without a calibration: LSE-C above which an offset within 1 frame counts as in sync "
                             "(default %(default)s)")
    parser.add_argument("--plot", metavar="PNG",
                        help="plot distance vs offset and per-frame confidence; with several videos, PNG_<video>.png "
                             "each (the output names every one)")
    parser.add_argument("--audio", metavar="WAV", help="score against this audio instead of the video's own (one video)")


def run_command(args) -> int:
    from .video import MediaError, check_exists

    videos = list(find_videos(args.inputs))
    if args.audio and len(videos) != 1:
        raise ValueError(f"--audio pairs with one video, got {len(videos)}")
    if args.vshift < 0:
        raise ValueError(f"--vshift must be >= 0, got {args.vshift}")
    if args.audio:
        check_exists(args.audio)
    # destinations and the calibration first: a bad one fails now, not after the scoring
    plot_paths = _plot_paths(args.plot, videos) if args.plot else {}
    for path in ([args.csv] if args.csv else []) + list(plot_paths.values()):
        check_writable(path)
    calibration = _resolve_calibration(args.calibration)
    model_name = args.model or "default"
    progress = sys.stderr.isatty() and not (args.json and not sys.stdout.isatty())

    model, results = None, []  # the model loads at the first video there is: missing files need no TensorFlow
    for video in videos:
        if isinstance(video, ScoreResult):  # a folder with no videos in it
            result = video
        else:
            try:
                check_exists(video)
            except MediaError as error:
                result = ScoreResult(video=video, model=model_name, status="error", error=str(error))
            else:
                from .models.siamese import load_model

                model = model or load_model(args.model)  # once, for every video
                result = score_video(video, model, audio_path=args.audio, vshift=args.vshift,
                                     min_confidence=args.min_confidence, calibration=calibration, progress=progress)
        result.model = model_name
        results.append(result)
        plot = plot_paths.get(result.video) if result.status == "ok" else None
        if plot:
            with atomic_output(plot) as temporary:
                plot_result(result, temporary)
        if args.json:
            print(json.dumps({**result.to_dict(), **({"plot": str(plot)} if plot else {})}), flush=True)
        elif result.status != "ok":
            print(summary_line(result), file=sys.stderr, flush=True)
        else:
            print(summary_line(result) + (f"\n  plot: {plot}" if plot else ""), flush=True)
    if args.csv:
        write_csv(results, args.csv)
    return 0 if all(result.status == "ok" for result in results) else 1


def find_videos(inputs):
    """Paths to score: files as given, folders searched recursively for video suffixes (sorted).
    A folder without any video yields an error result, so it shows in the report."""
    for entry in map(Path, inputs):
        if not entry.is_dir() or _is_frame_folder(entry):
            yield str(entry)
            continue
        found = sorted(path for path in entry.rglob("*") if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file())
        if not found:
            yield ScoreResult(video=str(entry), model="", status="error", error=f"{entry}: no video files in this folder")
        yield from map(str, found)


def _is_frame_folder(folder: Path) -> bool:
    """A VidTIMIT sequence (numbered JPEG frames + a WAV) is one video, not a folder of videos."""
    return any(folder.glob("*.wav")) and any(path.name.split(".")[0].isdigit() for path in folder.iterdir())


def _plot_paths(plot, videos) -> dict:
    """--plot PNG for one video; PNG_<video name>.png for each of several (numbered when names repeat)."""
    videos = [video for video in videos if isinstance(video, str)]
    plot = Path(plot)
    if len(videos) == 1:
        return {videos[0]: plot}
    paths, used = {}, set()
    for video in videos:
        name = f"{plot.stem}_{Path(video).stem}"
        candidate, number = name, 1
        while candidate in used:
            number += 1
            candidate = f"{name}_{number}"
        used.add(candidate)
        paths[video] = plot.with_name(candidate + (plot.suffix or ".png"))
    return paths


def summary_line(result: ScoreResult) -> str:
    if result.status != "ok":
        return f"{result.video}: error: {result.error.removeprefix(f'{result.video}: ')}"
    verdict = "in sync" if result.in_sync else "NOT in sync"
    line = (
        f"{result.video}: offset {result.offset_frames:+d} frames ({result.offset_seconds:+.2f} s), "
        f"LSE-D {result.min_dist:.3f}, LSE-C {result.confidence:.3f} -> {verdict} ({result.verdict_reason})"
    )
    if len(result.tracks) > 1:
        line += f" [best of {len(result.tracks)} face tracks: {result.best.track_id}]"
    for warning in result.warnings:
        line += f"\n  warning: {warning}"
    return line


def write_csv(results, path):
    """One row per video and a last row with mean LSE-D / LSE-C over the scored ones (the papers'
    table figures), written to a temporary file and renamed into place."""
    path = Path(path)
    scored = [result for result in results if result.status == "ok"]
    mean_row = {
        "video": f"MEAN ({len(scored)} of {len(results)} scored)",
        "status": "summary",
        "min_dist": float(np.mean([r.min_dist for r in scored])) if scored else None,
        "confidence": float(np.mean([r.confidence for r in scored])) if scored else None,
    }
    with atomic_output(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in [result.to_dict() for result in results] + [mean_row]:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
