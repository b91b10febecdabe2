"""The in-sync / tampered verdict: its file format and the statistics that fit it. The pairs it is
fitted on (real clips, and the same clips with other clips' audio) are scored by `syncnet
calibrate` (syncnet/calibrating.py).

Four numbers of the scorer's best face track are candidates (`SCORES`): LSE-C at the best offset
(`confidence`) and at offset 0 (`confidence_at_zero`: the median of the mean distances over the
offsets minus the mean distance at 0), P(in sync) at the best offset and at 0. The one that separates
the two labels best (highest ROC-AUC) is kept, with a threshold that maximises balanced accuracy (or,
with `--false-alarm`, the strictest one that calls at most that fraction of real clips tampered), its
equal error rate, and a logistic fit of P(tampered | score) with both labels weighted equally
(among candidates with the same ROC-AUC, the one whose labels lie furthest apart, by d'). The
logistic is centred on the threshold - P(tampered) is 0.5 exactly there - so the verdict and the
printed likelihood never disagree: in sync (at a near-zero offset) <=> P(tampered) < 0.5.
Swapped audio is unrelated to the lips at every offset, yet the best offset is the minimum of 31
noisy distances even then, so the numbers read at offset 0 tend to separate better: on the tiny test
model and eight 2 s synthetic clips (all 56 swaps), ROC-AUC 0.81 for `confidence`, 0.975 for
`sync_probability`, 0.987 for `confidence_at_zero` and 1.0 for `sync_probability_at_zero`.

A threshold means something only for the model and footage it was fitted on: the shipped expert
carries its own (`syncnet/weights/paper.calibration.json`, attached by `load_model()`); any other
model without a calibration file keeps the scorer's placeholder rule (LSE-C above
`offsets.IN_SYNC_MIN_CONFIDENCE`).
"""

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_output

# Numbers of a scoring.TrackScore, each higher for a pair that is in sync (see `score_value`).
SCORES = ("confidence", "confidence_at_zero", "sync_probability", "sync_probability_at_zero")
DEFAULT_SWAPS = 3
FORMAT_VERSION = 2  # 1 had a free logistic intercept; its files load with the logistic re-centred
# L2 penalty on the logistic slope (in units of the score's standard deviation): keeps the fit
# finite when the two labels do not overlap at all.
LOGISTIC_RIDGE = 1.0


@dataclass(frozen=True)
class Calibration:
    """A fitted verdict: `in_sync(score)` and `tampered_likelihood(score)` for scores named `score`."""

    score: str  # which of SCORES the verdict reads
    threshold: float  # in sync when score >= threshold
    logistic_slope: float  # P(tampered | s) = sigmoid(slope * (s - threshold)); < 0
    auc: float  # ROC-AUC of `score` on the calibration pairs
    eer: float  # equal error rate
    balanced_accuracy: float  # at `threshold`
    false_alarm_rate: float  # real clips called tampered at `threshold`
    miss_rate: float  # swapped pairs called in sync at `threshold`
    num_real: int
    num_swapped: int
    model: str = ""
    auc_by_score: dict = field(default_factory=dict)  # every candidate's ROC-AUC
    # `syncnet speakers`' threshold on a face's smoothed relative confidence: the one that best tells
    # the real clips' faces under their own audio (speaking) from the same faces under the swapped
    # audio (another voice: not the speaker), both read at the clip's own offset. None: not fitted.
    speaking_threshold: float | None = None
    # The sigmoid head fitted on the same pairs' windows: P(in sync) = sigmoid(bias - scale * distance)
    # of a window under its own audio (at the clip's offset) against under a swapped one, classes
    # weighted equally - {"scale", "bias"}, for a model whose head was never trained (a converted
    # syncnet_v2: its sync loss is then on the recipes' scale). None: not fitted.
    sync_head: dict | None = None
    # LSE-C, scaled to CHANCE_WINDOWS windows, that unrelated audio's best offset reaches: the 95th
    # percentile over the swapped pairs (`offset_beats_chance`'s bar for this model). None: not fitted.
    chance_confidence: float | None = None

    def score_of(self, track) -> float:
        """This calibration's score of a scoring.TrackScore (a video's: its `ScoreResult.best`)."""
        return score_value(track, self.score)

    def in_sync(self, score: float) -> bool:
        """P(tampered | score) < 0.5: the score is above the threshold (the logistic is centred there)."""
        return self.tampered_likelihood(score) < 0.5

    def tampered_likelihood(self, score: float) -> float:
        """P(tampered | score) from the logistic fit, with in-sync and tampered equally likely a priori."""
        return _sigmoid(self.logistic_slope * (float(score) - self.threshold))

    def to_dict(self) -> dict:
        return {"version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        if data.get("version") not in (1, FORMAT_VERSION):
            raise UserError(f"unsupported calibration version {data.get('version')!r} (expected {FORMAT_VERSION})")
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        missing = (
            set(cls.__dataclass_fields__) - set(fields) - {"model", "auc_by_score", "speaking_threshold", "sync_head", "chance_confidence"}
        )
        if missing:
            raise UserError(f"calibration is missing {', '.join(sorted(missing))}")
        if fields["score"] not in SCORES:
            raise UserError(f"calibration score {fields['score']!r} is not one of {', '.join(SCORES)}")
        optional = [name for name in ("speaking_threshold", "chance_confidence") if fields.get(name) is not None]
        for name in ("threshold", "logistic_slope", *optional):
            if not isinstance(fields[name], (int, float)) or not math.isfinite(fields[name]):
                raise UserError(f"calibration {name} must be a finite number, got {fields[name]!r}")
        if fields["logistic_slope"] >= 0:  # P(tampered) must fall as the in-sync score rises
            raise UserError(f"calibration logistic_slope must be negative, got {fields['logistic_slope']!r}")
        return cls(**fields)


def score_value(track, name: str) -> float:
    """The score `name` (one of SCORES) of a scoring.TrackScore."""
    if name == "confidence_at_zero":
        return float(np.median(track.mean_distance) - track.mean_distance[track.vshift])  # index vshift: offset 0
    return float(getattr(track, name))


def load_calibration(path) -> Calibration:
    """Read a file `syncnet calibrate` wrote."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such calibration file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a calibration file ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a calibration file (a JSON object expected)")
    try:
        return Calibration.from_dict(data)
    except (ValueError, TypeError) as error:
        raise UserError(f"{path}: {error}") from None


def save_calibration(calibration: Calibration, path):
    """Write the JSON atomically (a temporary file beside `path`, then a rename)."""
    with atomic_output(path) as temporary, open(temporary, "w") as file:
        json.dump(calibration.to_dict(), file, indent=2)
        file.write("\n")


# --- How much evidence an offset needs -----------------------------------------------------------

# The chance bar on LSE-C for an offset found in `windows` 5-frame windows, for a model with a
# calibration that has no `chance_confidence` of its own (`offset_beats_chance`), at CHANCE_WINDOWS
# windows (a 4 s stretch). Measured with the shipped expert of 2026-12-01 on 4 s chunks of 9 real clips with another clip's audio (28 chunks: unrelated
# audio, whose best offset is chance): LSE-C 0.17-0.71, median 0.45, one above 0.65; the same clips
# with their own audio 0.68-3.13 (in sync: 0.9 and up), and the 320 ms delayed
# *demo_output_test_offset_12.avi 0.70, 0.81 and 0.88 at -8 (`syncnet monitor`'s 4 s chunks).
CHANCE_WINDOWS = 95
CHANCE_LSE_C = 0.65


def offset_beats_chance(
    confidence: float, windows: int, *, calibrated: bool, bar: float | None = None, placeholder: float, chance: float | None = None
):
    """(whether an offset found with LSE-C `confidence` over `windows` windows beats chance, the
    figure that says so, for a `verdict_reason`).

    `bar` given: LSE-C above it. Else, for a calibrated model: LSE-C scaled to CHANCE_WINDOWS windows,
    LSE-C * sqrt(windows / CHANCE_WINDOWS), above `chance` (the calibration's `chance_confidence`;
    None: CHANCE_LSE_C). Unrelated audio's best offset is the
    minimum of 2 vshift + 1 mean distances whose noise falls as 1 / sqrt(windows), so a stretch half
    as long needs sqrt(2) times the LSE-C, and a whole clip of 1000 windows a third of it. Without a
    calibration: LSE-C above `placeholder`, the uncalibrated verdict's bar (offsets.IN_SYNC_MIN_CONFIDENCE).
    """
    if bar is not None or not calibrated:
        bar = placeholder if bar is None else bar
        beats = confidence > bar
        return beats, f"LSE-C {confidence:.2f} {'>' if beats else '<='} {bar:g}"
    chance = CHANCE_LSE_C if chance is None else chance
    scaled = scaled_confidence(confidence, windows)
    beats = scaled > chance
    return (
        beats,
        f"LSE-C {confidence:.2f} over {windows} windows ({scaled:.2f} at {CHANCE_WINDOWS}) {'>' if beats else '<='} chance {chance:.3g}",
    )


def scaled_confidence(confidence: float, windows: int) -> float:
    """LSE-C over `windows` windows as it would read over CHANCE_WINDOWS (noise falls as 1 / sqrt(windows))."""
    return confidence * math.sqrt(max(windows, 1) / CHANCE_WINDOWS)


# --- Fitting ------------------------------------------------------------------------------------


def fit_calibration(
    in_sync: dict,
    tampered: dict,
    *,
    false_alarm: float | None = None,
    model: str = "",
    speaking=None,
    not_speaking=None,
    window_distances: tuple | None = None,
    chance=None,
) -> Calibration:
    """Pick the score that separates best and fit its verdict.

    in_sync, tampered: score name -> the scores of the in-sync (real) and tampered (swapped) pairs.
    false_alarm: when given, the threshold is the highest one that calls at most this fraction of the
    in-sync pairs tampered; otherwise the one with the best balanced accuracy.
    speaking, not_speaking: per-frame speaker confidences of faces under their own and under swapped
    audio; when given, `speaking_threshold` is the one with the best balanced accuracy on them.
    window_distances: (in-sync, swapped) window distances; when given, `sync_head` is fitted on them.
    chance: the swapped pairs' LSE-C scaled to CHANCE_WINDOWS windows; when given, `chance_confidence`
    is their 95th percentile.
    """
    auc_by_score = {name: roc_auc(in_sync[name], tampered[name]) for name in in_sync}
    # ties (every candidate separates a small set perfectly): the one with the widest gap
    score = max(auc_by_score, key=lambda name: (auc_by_score[name], separation(in_sync[name], tampered[name])))
    if auc_by_score[score] <= 0.5:
        raise UserError(
            f"no score tells the real clips from the swapped ones (best ROC-AUC {auc_by_score[score]:.2f}): "
            "are these clips real, in sync and of different speakers?"
        )
    positive = np.asarray(in_sync[score], np.float64)
    negative = np.asarray(tampered[score], np.float64)
    threshold = fit_threshold(positive, negative, false_alarm)
    false_alarm_rate, miss_rate = error_rates(positive, negative, np.array([threshold]))
    return Calibration(
        score=score,
        threshold=threshold,
        logistic_slope=min(fit_logistic_slope(positive, negative, threshold), -1e-6),  # never flat or rising
        auc=auc_by_score[score],
        eer=equal_error_rate(positive, negative),
        balanced_accuracy=float(1.0 - (false_alarm_rate[0] + miss_rate[0]) / 2),
        false_alarm_rate=float(false_alarm_rate[0]),
        miss_rate=float(miss_rate[0]),
        num_real=len(positive),
        num_swapped=len(negative),
        model=model,
        auc_by_score=auc_by_score,
        speaking_threshold=None
        if speaking is None
        else fit_threshold(np.asarray(speaking, np.float64), np.asarray(not_speaking, np.float64)),
        sync_head=None if window_distances is None else fit_sync_head(*window_distances),
        chance_confidence=None if not chance else float(np.percentile(chance, 95)),
    )


# keeps the head's slope finite when the windows separate perfectly, too small to bias it otherwise
# (the classes' weights add up to 1)
HEAD_RIDGE = 1e-6


def fit_sync_head(in_sync_distances, off_sync_distances, iterations: int = 50) -> dict:
    """{"scale", "bias"} of P(in sync) = sigmoid(bias - scale * distance) by logistic regression
    (Newton's method, both classes weighted equally, a small ridge on the scale), the scale kept
    positive: a larger distance never means more in sync."""
    distances = np.concatenate([in_sync_distances, off_sync_distances]).astype(np.float64)
    labels = np.concatenate([np.ones(len(in_sync_distances)), np.zeros(len(off_sync_distances))])
    if not len(in_sync_distances) or not len(off_sync_distances):
        raise UserError("fitting the sync head needs windows of both labels")
    weights = np.where(labels == 1, 0.5 / len(in_sync_distances), 0.5 / len(off_sync_distances))
    centre, spread = distances.mean(), max(distances.std(), 1e-6)
    x = (distances - centre) / spread  # standardised: Newton's steps well scaled
    slope, intercept = 0.0, 0.0  # logit = intercept - slope * x
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(intercept - slope * x)))
        residual, curvature = weights * (labels - p), weights * p * (1 - p)
        gradient = np.array([-(residual * x).sum() - HEAD_RIDGE * slope, residual.sum()])
        hessian = np.array([[-(curvature * x * x).sum() - HEAD_RIDGE, (curvature * x).sum()], [(curvature * x).sum(), -curvature.sum()]])
        step = np.linalg.solve(hessian, gradient)
        slope, intercept = slope - step[0], intercept - step[1]
    slope = max(slope, 1e-6)
    return {"scale": float(slope / spread), "bias": float(intercept + slope * centre / spread)}


def roc_auc(in_sync_scores, tampered_scores) -> float:
    """P(an in-sync pair scores above a tampered one), ties counting half (Mann-Whitney U)."""
    from scipy.stats import rankdata

    positive, negative = np.asarray(in_sync_scores, np.float64), np.asarray(tampered_scores, np.float64)
    ranks = rankdata(np.concatenate([positive, negative]))
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def separation(in_sync_scores, tampered_scores) -> float:
    """d': the gap between the two labels' mean scores in units of their pooled standard deviation."""
    positive, negative = np.asarray(in_sync_scores, np.float64), np.asarray(tampered_scores, np.float64)
    spread = np.sqrt((positive.var() + negative.var()) / 2)
    return float((positive.mean() - negative.mean()) / max(spread, 1e-12))


def error_rates(in_sync_scores, tampered_scores, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """At each threshold (in sync = score >= threshold): the false-alarm rate (in-sync pairs called
    tampered) and the miss rate (tampered pairs called in sync)."""
    positive, negative = np.sort(in_sync_scores), np.sort(tampered_scores)
    false_alarm = np.searchsorted(positive, thresholds, side="left") / len(positive)
    miss = 1.0 - np.searchsorted(negative, thresholds, side="left") / len(negative)
    return false_alarm, miss


def candidate_thresholds(in_sync_scores, tampered_scores) -> np.ndarray:
    """Midpoints between consecutive distinct scores, and one below / above them all: every
    distinct verdict a threshold can give on these scores, each placed as far from the scores as it can."""
    values = np.unique(np.concatenate([in_sync_scores, tampered_scores]))
    gap = max(float(np.ptp(values)), 1.0)
    return np.concatenate([[values[0] - gap], (values[:-1] + values[1:]) / 2, [values[-1] + gap]])


def fit_threshold(in_sync_scores, tampered_scores, false_alarm: float | None = None) -> float:
    thresholds = candidate_thresholds(in_sync_scores, tampered_scores)
    false_alarm_rates, miss_rates = error_rates(in_sync_scores, tampered_scores, thresholds)
    if false_alarm is not None:
        allowed = np.flatnonzero(false_alarm_rates <= false_alarm)
        return float(thresholds[allowed[-1]])  # the lowest threshold always qualifies
    balanced_error = (false_alarm_rates + miss_rates) / 2
    best = np.flatnonzero(balanced_error == balanced_error.min())
    return float(thresholds[best[len(best) // 2]])  # the middle of a tie: furthest from both sides


def equal_error_rate(in_sync_scores, tampered_scores) -> float:
    """The error rate where false alarms and misses are equal, on the ROC curve drawn as straight
    lines between the points the thresholds give."""
    thresholds = candidate_thresholds(in_sync_scores, tampered_scores)
    false_alarm_rates, miss_rates = error_rates(in_sync_scores, tampered_scores, thresholds)
    # rises from -1 (every pair called in sync) to +1 (every pair called tampered)
    difference = false_alarm_rates - miss_rates
    after = int(np.argmax(difference >= 0))
    before = after - 1
    fraction = -difference[before] / (difference[after] - difference[before])
    return float(false_alarm_rates[before] + fraction * (false_alarm_rates[after] - false_alarm_rates[before]))


def fit_logistic_slope(in_sync_scores, tampered_scores, threshold: float) -> float:
    """The slope of P(tampered | s) = sigmoid(slope * (s - threshold)): Newton's method on the
    class-balanced log-loss, with a small L2 penalty on the slope of the standardised score."""
    scores = np.concatenate([in_sync_scores, tampered_scores])
    labels = np.concatenate([np.zeros(len(in_sync_scores)), np.ones(len(tampered_scores))])
    weights = np.where(labels == 1, 0.5 / len(tampered_scores), 0.5 / len(in_sync_scores))
    std = max(scores.std(), 1e-12)
    centred = (scores - threshold) / std
    ridge = LOGISTIC_RIDGE / len(scores)
    slope = 0.0
    for _ in range(100):
        probability = 1 / (1 + np.exp(-slope * centred))
        gradient = centred @ (weights * (probability - labels)) + ridge * slope
        hessian = (centred**2) @ (weights * probability * (1 - probability)) + ridge
        step = gradient / hessian
        slope -= step
        if abs(step) < 1e-10:
            break
    return float(slope / std)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))
