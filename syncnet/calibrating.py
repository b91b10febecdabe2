"""`syncnet calibrate`: fit the in-sync / tampered verdict on your own real clips.

    syncnet calibrate REAL_DIR... --model M [-o calibration.json] [--swaps 3] [--false-alarm RATE]

The VidTIMIT audio-swap protocol: every real clip is scored with its own audio (label: in sync) and
with the audio of `swaps` other clips put in its place (label: tampered, as a dubbed or
voice-swapped video would be). Each clip's face crops and each audio go through the towers once
(embedding.embed_media); the pairs are scored from those embeddings exactly as `score_video(video,
audio_path=other)` would score them (every face track, the most confident one reported). The
format, the candidate scores and the statistics are syncnet.calibration's.
"""

import sys
from dataclasses import dataclass, field, replace

import numpy as np

from . import hyperparameters as hp
from .calibration import DEFAULT_SWAPS, SCORES, Calibration, fit_calibration, save_calibration, scaled_confidence, score_value
from .embedding import progress_bar
from .errors import UserError, one_line
from .files import check_writable
from .offsets import offset_column

# Fewer real clips than this and calibrate says its figures rest on a tiny sample: on 2-4 clips
# ROC-AUC is 1.000 or 0.500 by the luck of a handful of pairs.
MIN_REAL_CLIPS = 20


@dataclass
class PairScores:
    """The calibration pairs' scores: score name -> one value per pair, for each label."""

    in_sync: dict  # each clip with its own audio
    tampered: dict  # each clip with another clip's audio
    skipped: list[str]  # "path: reason" for every clip that could not be used
    model: str  # the model that scored them
    # `syncnet speakers`' smoothed per-frame confidence of each clip's best face, at its own offset,
    # under its own audio and under the swapped ones
    speaking: list = field(default_factory=list)
    not_speaking: list = field(default_factory=list)
    # the best face's window distances at the clip's own offset, under its own audio and the swapped ones
    window_in_sync: list = field(default_factory=list)
    window_tampered: list = field(default_factory=list)
    # each swapped pair's LSE-C scaled to calibration.CHANCE_WINDOWS windows: where chance lands
    chance: list = field(default_factory=list)


def calibration_scores(videos, model=None, *, swaps: int = DEFAULT_SWAPS, vshift: int = hp.VSHIFT, progress: bool = False) -> PairScores:
    """Score every real clip (paths) with its own audio and with the audio of the `swaps` clips after
    it (in order, wrapping around, so each audio is swapped in as often as each face is scored).
    model: a SyncNet, a .keras path, or None for the default expert."""
    from .embedding import embed_media
    from .loading import resolve_model
    from .scoring import ScoreResult
    from .video import load_media

    if swaps < 1:
        raise UserError(f"swaps must be at least 1, got {swaps}")
    videos = [str(video) for video in videos]
    if len(videos) < 2:
        raise UserError(f"need at least 2 real clips to swap audio between, got {len(videos)}")
    model, model_name = resolve_model(model)
    clips, skipped = [], []
    for video in progress_bar(videos, len(videos), "clips", progress, unit="clip"):
        try:
            clips.append(embed_media(load_media(video), model, vshift=vshift, every_audio_window=True))
        except (ValueError, OSError) as error:  # MediaError is a ValueError
            skipped.append(f"{video}: {one_line(error)}")
    if len(clips) < 2:
        raise UserError(f"need at least 2 usable real clips, got {len(clips)} of {len(videos)}" + (f" ({skipped[0]})" if skipped else ""))

    scores = PairScores({name: [] for name in SCORES}, {name: [] for name in SCORES}, skipped, model_name)
    for index, clip in enumerate(clips):
        own = None  # the best face under its own audio: the face that speaks, and the clip's offset
        for step in range(min(swaps, len(clips) - 1) + 1):
            audio = clips[(index + step) % len(clips)].audio
            best = ScoreResult(video=clip.media.path, model=model_name, tracks=_paired_track_scores(model, clip, audio)).best
            if best is None:  # the other audio ends before any face appears
                continue
            for name in SCORES:
                (scores.in_sync if step == 0 else scores.tampered)[name].append(score_value(best, name))
            if step > 0:
                scores.chance.append(scaled_confidence(best.confidence, best.num_frames - model.family.window_frames))
            own = best if step == 0 else own
            if own is not None:
                distances = _track_distances(clip.plans[own.track_id], audio, model.family.comparison)
                if distances is None:
                    continue
                column = offset_column(distances, own.offset_frames)
                (scores.window_in_sync if step == 0 else scores.window_tampered).extend(distances[:, column])
                (scores.speaking if step == 0 else scores.not_speaking).extend(
                    _speaking_confidence(distances, own.offset_frames, model.family.window_frames)
                )
    if not scores.tampered[SCORES[0]]:
        raise UserError("no swapped pair could be scored: every other clip's audio ends before the faces appear")
    return scores


def _paired_track_scores(model, clip, audio: np.ndarray) -> list:
    """scoring.TrackScore of each of `clip`'s face tracks against `audio` embeddings placed at its
    first frame, cut where the audio ends: what score_video(clip, audio_path=...) computes."""
    from .offsets import Verdict
    from .scoring import track_score

    scores = []
    for plan in clip.plans.values():
        windows = min(plan.windows, len(audio) - plan.start)
        if windows < 1:
            continue
        paired = replace(plan, windows=windows, num_frames=windows + model.family.window_frames, vshift=min(plan.vshift, windows - 1))
        frames = plan.frame_embeddings[:windows]
        scores.append(track_score(model, paired, frames, audio[plan.start : plan.start + windows], Verdict()))
    return scores


def _track_distances(plan, audio: np.ndarray, comparison: str) -> np.ndarray | None:
    """One face track's (windows, 2 vshift + 1) distance table against `audio` embeddings placed
    at its first frame, cut where the audio ends; None when no window has audio."""
    from .offsets import score_windows

    windows = min(plan.windows, len(audio) - plan.start)
    if windows < 1:
        return None
    return score_windows(
        plan.frame_embeddings[:windows], audio[plan.start : plan.start + windows], min(plan.vshift, windows - 1), comparison
    )


def _speaking_confidence(distances: np.ndarray, offset: int, window_frames: int) -> np.ndarray:
    """`syncnet speakers`' smoothed per-frame confidence of a track's distance table read at
    `offset`; the frames that have one."""
    from .speakers import DEFAULT_SMOOTH_FRAMES, smoothed, window_confidence

    confidence = smoothed(window_confidence(distances, offset, len(distances) + window_frames, window_frames), DEFAULT_SMOOTH_FRAMES)
    return confidence[np.isfinite(confidence)]


def calibrate(
    videos, model=None, *, swaps: int = DEFAULT_SWAPS, vshift: int = hp.VSHIFT, false_alarm: float | None = None, progress: bool = False
) -> tuple[Calibration, list[str]]:
    """Fit the verdict (and `syncnet speakers`' threshold) on real clips (paths). Returns the
    calibration and the clips skipped, with why."""
    if false_alarm is not None and not 0 <= false_alarm < 1:
        raise UserError(f"the false-alarm rate must be in [0, 1), got {false_alarm}")
    scores = calibration_scores(videos, model, swaps=swaps, vshift=vshift, progress=progress)
    calibration = fit_calibration(
        scores.in_sync,
        scores.tampered,
        false_alarm=false_alarm,
        model=scores.model,
        speaking=scores.speaking,
        not_speaking=scores.not_speaking,
        window_distances=(scores.window_in_sync, scores.window_tampered),
        chance=scores.chance,
    )
    return calibration, scores.skipped


# --- Command line ------------------------------------------------------------------------------


def configure_parser(parser):
    parser.add_argument("inputs", nargs="+", metavar="REAL_DIR", help="folders (or files) of real, in-sync clips")
    parser.add_argument(
        "--model", default=None, metavar="NAME_OR_PATH", help="the .keras SyncNet to calibrate (default: the shipped expert)"
    )
    parser.add_argument("-o", "--output", default="calibration.json", help="where to write the calibration (default %(default)s)")
    parser.add_argument("--swaps", type=int, default=DEFAULT_SWAPS, help="other clips' audio swapped into each clip (default %(default)s)")
    parser.add_argument(
        "--false-alarm",
        type=float,
        default=None,
        metavar="RATE",
        help="pick the threshold that calls at most this fraction of real clips tampered (default: the best balanced accuracy)",
    )
    parser.add_argument("--vshift", type=int, default=hp.VSHIFT, help="search offsets -N..N frames (default %(default)s)")
    parser.add_argument(
        "--into",
        metavar="MODEL.keras",
        help="also write the model with the calibration inside it: it keeps its verdict wherever the file goes",
    )


def run_command(args) -> int:
    from .scoring import find_videos

    output = check_writable(args.output)
    if args.into is not None and not args.into.endswith(".keras"):
        raise UserError(f"--into takes a .keras file, got {args.into}")
    into = check_writable(args.into) if args.into is not None else None
    videos = [video for video in find_videos(args.inputs) if isinstance(video, str)]  # empty folders give none
    calibration, skipped = calibrate(
        videos, args.model, swaps=args.swaps, vshift=args.vshift, false_alarm=args.false_alarm, progress=sys.stderr.isatty()
    )
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    save_calibration(calibration, output)
    print(summary_text(calibration, output))
    if warning := small_sample_warning(calibration):
        print(f"syncnet calibrate: warning: {warning}", file=sys.stderr)
    if into is not None:
        from .loading import resolve_model, save_model

        model, _ = resolve_model(args.model)
        model.calibration = calibration
        if model.family.comparison == "l2":  # a learnt head: the fitted one (a converted syncnet_v2's was never trained)
            model.head.set_sync_head(**calibration.sync_head)
        save_model(model, into)
        print(f"{into}: the model with this calibration inside (syncnet.load_model reads it)")
    return 0


def small_sample_warning(calibration: Calibration) -> str | None:
    """What to say when the clips are too few for the figures to mean much (None when they are not)."""
    if calibration.num_real >= MIN_REAL_CLIPS:
        return None
    return (
        f"{calibration.num_real} real clips is a tiny sample: ROC-AUC {calibration.auc:.3f} and the threshold from so few "
        f"pairs can be far off (calibrate on {MIN_REAL_CLIPS} or more)"
    )


def summary_text(calibration: Calibration, output) -> str:
    others = ", ".join(f"{name} {auc:.3f}" for name, auc in calibration.auc_by_score.items())
    return (
        f"{output}: in sync when {calibration.score} >= {calibration.threshold:.4g} "
        f"({calibration.num_real} real clips, {calibration.num_swapped} audio-swapped pairs)\n"
        f"  ROC-AUC {calibration.auc:.3f}, EER {100 * calibration.eer:.1f}%, at the threshold: balanced accuracy "
        f"{100 * calibration.balanced_accuracy:.1f}%, false alarms {100 * calibration.false_alarm_rate:.1f}%, "
        f"misses {100 * calibration.miss_rate:.1f}%\n"
        f"  ROC-AUC of each candidate score: {others}"
        + (
            ""
            if calibration.speaking_threshold is None
            else f"\n  syncnet speakers: a face speaks when its confidence > {calibration.speaking_threshold:.4g}"
        )
        + (
            ""
            if calibration.sync_head is None
            else f"\n  window head: P(in sync) = sigmoid({calibration.sync_head['bias']:.4g} - {calibration.sync_head['scale']:.4g} x distance)"
            " (--into writes it into the model: its sync loss on the recipes' scale)"
        )
    )
