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

from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import hyperparameters as hp
from .embedding import BATCH_WINDOWS
from .errors import UserError, one_line
from .files import atomic_output, check_writable
from .loading import load_model, model_path, resolve_calibration, resolve_model
from .offsets import IN_SYNC_MIN_CONFIDENCE, Verdict, score_windows, search_offset
from .video import VIDEO_SUFFIXES, MediaLike, check_exists, is_frame_folder, load_media

if TYPE_CHECKING:
    from .calibration import Calibration
    from .models.siamese import SyncNet

# A track's sync numbers, in JSON order: each TrackScore's, and the best track's at a video's top level.
SYNC_KEYS = (
    "offset_frames",
    "offset_seconds",
    "min_dist",
    "confidence",
    "sync_probability",
    "sync_probability_at_zero",
    "in_sync",
    "verdict_reason",
    "tampered",
)


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
    family: str | None = None  # the expert family that produced the numbers: distances of different families are not comparable
    status: str = "ok"
    error: str | None = None
    frames: int | None = None
    tracks: list[TrackScore] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def best(self) -> TrackScore | None:
        return max(self.tracks, key=lambda track: track.confidence, default=None)

    # The top-level numbers are the best track's (None for an error result).
    track_id = _from_best("track_id")
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
            "track_id": self.track_id,  # the best track, whose numbers these are
            **{key: getattr(self, key) for key in SYNC_KEYS},
            "frames": self.frames,
            "face_tracks": None if self.status != "ok" else len(self.tracks),
            "model": self.model,
            "family": self.family,
            "warnings": list(self.warnings),
            "tracks": [track.to_dict(per_frame) for track in self.tracks],
        }


def score_video(
    path: str | os.PathLike,
    model: SyncNet | str | os.PathLike | None = None,
    *,
    audio_path: str | os.PathLike | None = None,
    vshift: int = hp.VSHIFT,
    min_confidence: float = IN_SYNC_MIN_CONFIDENCE,
    calibration: Calibration | str | os.PathLike | None = None,
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
    model, model_name = resolve_model(model)
    calibration = resolve_calibration(calibration)
    try:
        media = load_media(path, audio_path)
    except (ValueError, OSError) as error:  # MediaError is a ValueError
        return ScoreResult(video=str(path), model=model_name, status="error", error=one_line(error))
    result = score_media(
        media, model, vshift=vshift, min_confidence=min_confidence, calibration=calibration, batch_size=batch_size, progress=progress
    )
    result.model = model_name
    return result


def score_media(
    media: MediaLike,
    model: SyncNet | str | os.PathLike | None = None,
    *,
    vshift: int = hp.VSHIFT,
    min_confidence: float = IN_SYNC_MIN_CONFIDENCE,
    calibration: Calibration | str | os.PathLike | None = None,
    batch_size: int = BATCH_WINDOWS,
    progress: bool = False,
) -> ScoreResult:
    """`score_video` on media already open: a video.MediaLike - a video.Media, or a chunk of a live
    stream held in memory (monitor.Chunk)."""
    model, model_name = resolve_model(model)
    verdict = Verdict(resolve_calibration(calibration) or model.calibration, min_confidence)
    if vshift < 0:
        raise UserError(f"vshift must be >= 0, got {vshift}")
    result = ScoreResult(video=str(media.path), model=model_name, family=model.family.name)
    try:
        _score_into(result, media, model, vshift, verdict, batch_size, progress)
    except (ValueError, OSError) as error:  # MediaError is a ValueError
        return ScoreResult(video=str(media.path), model=model_name, family=model.family.name, status="error", error=one_line(error))
    return result


def _score_into(result, media, model, vshift, verdict, batch_size, progress):
    from .embedding import embed_media

    result.frames = media.num_frames
    embedded = embed_media(media, model, vshift=vshift, batch_size=batch_size, progress=progress)
    result.warnings += embedded.warnings
    for plan in embedded.plans.values():
        result.tracks.append(track_score(model, plan, plan.frame_embeddings, embedded.track_audio(plan), verdict))


def track_score(model, plan, frame_embeddings, audio_embeddings, verdict: Verdict) -> TrackScore:
    """A track's TrackScore from its window embeddings and the audio embeddings paired with them at
    offset 0 (embedding.TrackPlan `plan` says where its windows are)."""
    distances = score_windows(frame_embeddings, audio_embeddings, plan.vshift, model.family.comparison)
    search = search_offset(distances)
    # P(in sync) over the windows whose paired audio exists at that offset (not the zero padding)
    paired = np.arange(plan.windows) - search.offset
    paired = (paired >= 0) & (paired < plan.windows)
    probability = _to_numpy(model.distance_probability(distances[paired, search.best_column]))
    probability_at_zero = _to_numpy(model.distance_probability(distances[:, plan.vshift]))
    numbers = TrackScore(
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
    return replace(numbers, **verdict.decide(numbers))


def _to_numpy(tensor) -> np.ndarray:
    from keras import ops

    return np.asarray(ops.convert_to_numpy(tensor))


# --- Plots ------------------------------------------------------------------------------------


# --plot's formats, by the file's suffix (matplotlib writes JPEG through Pillow); no suffix: PNG.
PLOT_FORMATS = {"": "png", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}


def plot_result(result: ScoreResult, png_path, image_format: str | None = None):
    """One figure (to a path or a binary file object): mean distance vs offset for every track (the
    best one bold), and the best track's per-frame confidence over time. image_format: one of
    PLOT_FORMATS' values; default the path's suffix's (a file object: PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    by_offset, over_time = figure.subplots(1, 2, width_ratios=(2, 3))
    best = result.best
    for track in result.tracks:
        by_offset.plot(
            track.offsets,
            track.mean_distance,
            marker="o",
            markersize=3,
            linewidth=2.0 if track is best else 0.8,
            label=f"track {track.track_id}",
        )
    by_offset.axvline(best.offset_frames, color="grey", linestyle=":")
    by_offset.set(
        xlabel="offset (frames; > 0: audio leads)",
        ylabel="mean distance",
        title=f"offset {best.offset_frames:+d}, LSE-D {best.min_dist:.2f}, LSE-C {best.confidence:.2f}",
    )
    by_offset.legend(fontsize="small")
    seconds = (best.start_frame + np.arange(len(best.frame_confidence))) / hp.VIDEO_FPS
    over_time.plot(seconds, best.frame_confidence)
    over_time.axhline(0.0, color="grey", linewidth=0.5)
    over_time.set(xlabel="time (s)", ylabel="confidence", title=f"track {best.track_id}: per-frame confidence")
    figure.suptitle(Path(result.video).name)
    with warnings.catch_warnings():
        # a file name in a script the font lacks (CJK, ...) shows as boxes in the title, not as a warning
        warnings.filterwarnings("ignore", "Glyph .* missing from")
        if image_format is None:
            image_format = PLOT_FORMATS.get(Path(png_path).suffix.lower(), "png") if isinstance(png_path, (str, os.PathLike)) else "png"
        figure.savefig(png_path, dpi=100, format=image_format)


# --- Command line -----------------------------------------------------------------------------

CSV_COLUMNS = (
    "video",
    "status",
    "error",
    "offset_frames",
    "offset_seconds",
    "min_dist",
    "confidence",
    "sync_probability",
    "in_sync",
    "verdict_reason",
    "tampered",
    "frames",
    "face_tracks",
    "model",
    "warnings",  # "; "-joined: a half-decoded file is not a plain "ok" row
)


def configure_parser(parser):
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="videos, or folders to search for videos")
    parser.add_argument("--json", action="store_true", help="one JSON object per video per line on stdout")
    parser.add_argument("--csv", metavar="FILE", help="also write a table: one row per video and a mean row")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH", help="a .keras SyncNet (default: the shipped expert)")
    parser.add_argument("--vshift", type=int, default=hp.VSHIFT, help="search offsets -N..N frames (default %(default)s)")
    parser.add_argument(
        "--calibration",
        metavar="JSON",
        help="the in-sync / tampered verdict fitted by `syncnet calibrate` (default: the model's own; the shipped expert has one)",
    )
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=IN_SYNC_MIN_CONFIDENCE,
        help="without a calibration: LSE-C above which an offset within 1 frame counts as in sync (default %(default)s)",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="plot distance vs offset and per-frame confidence (.png, .jpg, .svg or .pdf); with several videos, PNG_<video>.png each (the output names every one)",
    )
    parser.add_argument("--audio", metavar="WAV", help="score against this audio instead of the video's own (one video)")


def run_command(args) -> int:
    videos = list(find_videos(args.inputs))
    if args.audio and len(videos) != 1:
        raise UserError(f"--audio pairs with one video, got {len(videos)}")
    if args.vshift < 0:
        raise UserError(f"--vshift must be >= 0, got {args.vshift}")
    if args.audio:
        check_exists(args.audio)
    # destinations and the calibration first: a bad one fails now, not after the scoring
    if args.plot and Path(args.plot).suffix.lower() not in PLOT_FORMATS:
        raise UserError(f"--plot {args.plot}: name a .png, .jpg, .svg or .pdf file")
    plot_paths = _plot_paths(args.plot, videos) if args.plot else {}
    for path in ([args.csv] if args.csv else []) + list(plot_paths.values()):
        check_writable(path)
    calibration = resolve_calibration(args.calibration)
    model_path(args.model)  # a bad --model fails now, even when no video is there to load it for
    model_name = args.model or "default"
    progress = sys.stderr.isatty() and not (args.json and not sys.stdout.isatty())

    model, results = None, []  # the model loads at the first video that opens: missing or unreadable files need no TensorFlow
    try:
        for video in videos:
            if isinstance(video, ScoreResult):  # a folder with no videos in it
                result = video
            else:
                try:
                    media = load_media(video, args.audio)  # an empty or text file fails here, without waiting for the model
                except (ValueError, OSError) as error:  # MediaError is a ValueError
                    result = ScoreResult(video=video, model=model_name, status="error", error=one_line(error))
                else:
                    model = model or load_model(args.model)  # once, for every video
                    result = score_media(
                        media,
                        model,
                        vshift=args.vshift,
                        min_confidence=args.min_confidence,
                        calibration=calibration,
                        progress=progress,
                    )
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
    finally:
        # Ctrl-C (or a crash) part way: the table still gets every finished row, and says where it stopped
        if args.csv:
            write_csv(results, args.csv, total=len(videos))
    return 0 if all(result.status == "ok" for result in results) else 1


def find_videos(inputs):
    """Paths to score: files as given, folders searched recursively for video suffixes (sorted).
    A folder without any video yields an error result, so it shows in the report."""
    for entry in map(Path, inputs):
        if not entry.is_dir() or is_frame_folder(entry):
            yield str(entry)
            continue
        found = sorted(path for path in entry.rglob("*") if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file())
        if not found:
            yield ScoreResult(video=str(entry), model="", status="error", error=f"{entry}: no video files in this folder")
        yield from map(str, found)


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


def write_csv(results, path, total: int | None = None):
    """One row per video and a last row with mean LSE-D / LSE-C over the scored ones (the papers'
    table figures), written to a temporary file and renamed into place. total: the videos the batch
    had, when it stopped before the end (the last row says so)."""
    path = Path(path)
    scored = [result for result in results if result.status == "ok"]
    stopped = f"; stopped after {len(results)} of {total} videos" if total is not None and total > len(results) else ""
    mean_row = {
        "video": f"MEAN ({len(scored)} of {len(results)} scored{stopped})",
        "status": "summary",
        "min_dist": float(np.mean([r.min_dist for r in scored])) if scored else None,
        "confidence": float(np.mean([r.confidence for r in scored])) if scored else None,
    }
    with atomic_output(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in [result.to_dict() for result in results] + [mean_row]:
            row["warnings"] = "; ".join(row.get("warnings", []))
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
