"""syncnet_python's offset search in plain numpy, and the one verdict read off it.

- `score_windows`: the (windows, 2 vshift + 1) table of distances between each frame window and
  the audio windows around it (syncnet_python's `calc_pdist`).
- `search_offset`: the offset, LSE-D, LSE-C and per-frame confidence from that table
  (syncnet_python's `evaluate`), to float precision.
- `Verdict`: in sync or not, why, and P(tampered), from those numbers and a calibration.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from . import hyperparameters as hp
from .errors import UserError

# A video counts as in sync when its offset is within a frame of 0 and the sync is trustworthy: by
# the model's calibration (`syncnet calibrate`; `load_model` attaches the shipped expert's) when it has one,
# else by this placeholder rule, LSE-C above this. A conservative default: real talking heads score
# far above it with syncnet_v2 weights (LRS2's real videos average 7.8), unrelated audio gives a
# flat curve and a low one.
IN_SYNC_MIN_CONFIDENCE = 1.5
IN_SYNC_MAX_OFFSET = 1  # frames

PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds it to the difference


def score_windows(frame_embeddings, audio_embeddings, vshift: int, comparison: str = "l2") -> np.ndarray:
    """syncnet_python's `calc_pdist`: (n, d), (n, d) -> (n, 2 vshift + 1) distances.

    Column j holds ||frame_i - audio_{i + j - vshift} + 1e-6|| with audio windows outside 0..n-1 taken
    as zero vectors (syncnet_python pads the audio embeddings with vshift zeros at both ends).
    `comparison="cosine"` (the families whose P(in sync) is a cosine similarity: Wav2Lip's, LatentSync's)
    holds 1 - frame_i . audio_{i + j - vshift} instead, of unit embeddings: 0 for identical directions,
    1 for orthogonal ones and for the zero padding. LSE-D and LSE-C read off it the same way; their
    scale is the family's own (docs/experts.md).
    """
    frame_embeddings = np.asarray(frame_embeddings, np.float32)
    audio_embeddings = np.asarray(audio_embeddings, np.float32)
    if frame_embeddings.shape != audio_embeddings.shape or frame_embeddings.ndim != 2:
        raise UserError(
            f"need frame and audio embeddings of the same shape (n, d), got {frame_embeddings.shape} and {audio_embeddings.shape}"
        )
    n = len(frame_embeddings)
    padded = np.pad(audio_embeddings, ((vshift, vshift), (0, 0)))
    distances = np.empty((n, 2 * vshift + 1), np.float32)
    for j in range(2 * vshift + 1):
        if comparison == "cosine":
            distances[:, j] = 1.0 - np.einsum("ij,ij->i", frame_embeddings, padded[j : j + n])
        else:
            difference = frame_embeddings - padded[j : j + n] + PAIRWISE_EPS
            distances[:, j] = np.sqrt(np.einsum("ij,ij->i", difference, difference))
    return distances


def offset_column(distances: np.ndarray, offset: int) -> int:
    """The column of a `score_windows` table that holds `offset` (clipped to the table's search range)."""
    vshift = (distances.shape[1] - 1) // 2
    return vshift - int(np.clip(offset, -vshift, vshift))


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
    from scipy.signal import medfilt  # scipy.signal takes 0.3 s to import: only when scoring

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


@dataclass(frozen=True)
class Verdict:
    """The one definition of "in sync": the offset is within IN_SYNC_MAX_OFFSET frames of 0, and
    - with a calibration: P(tampered) < 0.5, its logistic read at its score (the same as the score
      reaching its threshold: the logistic is centred there);
    - without one: LSE-C > min_confidence (a placeholder; P(tampered) is then None).
    `verdict_reason` names the figure that decided, with its bar."""

    calibration: object = None  # calibration.Calibration
    min_confidence: float = IN_SYNC_MIN_CONFIDENCE

    def decide(self, track) -> dict:
        """`in_sync`, `verdict_reason` and `tampered` of a track's numbers (a scoring.TrackScore:
        its offset, LSE-C and whatever the calibration's score reads)."""
        tampered = None
        if self.calibration is None:
            trusted = track.confidence > self.min_confidence
            figure = f"LSE-C {track.confidence:.2f} {'>' if trusted else '<='} {self.min_confidence:g}"
        else:
            score = self.calibration.score_of(track)
            tampered = self.calibration.tampered_likelihood(score)
            trusted = self.calibration.in_sync(score)
            figure = f"P(tampered) {tampered:.3f} {'<' if trusted else '>='} 0.5"
        near_zero = abs(track.offset_frames) <= IN_SYNC_MAX_OFFSET
        reason = figure if near_zero else f"offset {track.offset_frames:+d} frames is more than {IN_SYNC_MAX_OFFSET} from 0; {figure}"
        return {"in_sync": bool(near_zero and trusted), "verdict_reason": reason, "tampered": tampered}
