"""How good an expert is, on shards of speakers it never trained on.

    syncnet evaluate SHARDS --model MODEL [--val-speakers A,B]

Two figures, the ones the SyncNet papers and `syncnet train`'s validation report:

- pair ROC-AUC and accuracy: the head's P(in sync) on half in-order, half shuffled pairs (each
  negative is another clip's audio, as in the training recipe; its own audio 5+ frames away when no
  other clip is at hand), every window of every segment once;
- offset accuracy: the fraction of windows whose argmin distance over +-15 frames lands within +-1
  frame of the truth, for single windows and for curves averaged over 15 consecutive windows;
- still ROC-AUC: P(in sync) of in-order windows against the same kind of windows made into mouths
  that do not speak (frozen, flat, textured: data.still_windows) under their own audio - whether the
  expert can be fooled the way a generator gaming the sync loss fools it (pixel presets only).
"""

import json
import math

import numpy as np

from . import data
from . import hyperparameters as hp
from .calibration import roc_auc
from .embedding import segment_embeddings
from .errors import UserError
from .loading import load_model
from .models.siamese import SyncNet

PAIR_BATCH = 64


def offset_accuracy(model: SyncNet, segments, vshift: int = hp.VSHIFT, averages=(1, 15), tolerance=1):
    """Fraction of windows whose best offset in -vshift..vshift is within `tolerance` of 0, over
    shard segments (crops, audio, first frame) embedded by `model` (see `embedded_offset_accuracy`)."""
    embedded = (segment_embeddings(model, crops, audio, start) for crops, audio, start in segments)
    return embedded_offset_accuracy(embedded, vshift, averages, tolerance, model.family.comparison)


def embedded_offset_accuracy(embedded, vshift: int = hp.VSHIFT, averages=(1, 15), tolerance=1, comparison: str = "l2"):
    """Fraction of windows whose best offset in -vshift..vshift is within `tolerance` of 0, from
    each segment's (visual, audio) window embeddings, two aligned (windows, d) arrays.

    For each average length k, distance curves of k consecutive windows are averaged before the
    argmin (the papers' "context" evaluation). Only windows whose whole search range lies inside
    the segment count, so no padding biases the result. `comparison`: the family's distance, "l2" or
    "cosine" (1 - the cosine of unit embeddings).
    """
    hits = {k: 0 for k in averages}
    totals = {k: 0 for k in averages}
    for visual, audio in embedded:
        n = len(visual)
        if n < 2 * vshift + 1:
            continue
        # curves[i, j]: distance of frame window i to audio window i + j - vshift.
        centres = np.arange(vshift, n - vshift)
        shifted = [audio[centres + s] for s in range(-vshift, vshift + 1)]
        if comparison == "cosine":
            curves = np.stack([1.0 - np.einsum("ij,ij->i", visual[centres], other) for other in shifted], axis=1)
        else:
            curves = np.stack([np.linalg.norm(visual[centres] - other, axis=1) for other in shifted], axis=1)
        for k in averages:
            if len(curves) < k:
                continue
            kernel = np.ones(k) / k
            averaged = np.stack([np.convolve(curves[:, j], kernel, mode="valid") for j in range(curves.shape[1])], axis=1)
            best = np.argmin(averaged, axis=1) - vshift
            hits[k] += int(np.sum(np.abs(best) <= tolerance))
            totals[k] += len(best)
    return {k: hits[k] / totals[k] if totals[k] else float("nan") for k in averages}


def _probabilities(model: SyncNet, pairs) -> tuple[np.ndarray, np.ndarray]:
    """The head's P(in sync) and the labels over a pass of a pair dataset."""
    probabilities, labels = [], []
    for inputs, label in pairs:
        probabilities.append(model(inputs, training=False)["probability"].numpy())
        labels.append(label.numpy())
    return np.concatenate(probabilities), np.concatenate(labels).astype(bool)


def pair_metrics(model: SyncNet, shards, seed: int = hp.SEED) -> dict:
    """ROC-AUC and accuracy (P > 0.5) of the head on one seeded pass of in-order / shuffled pairs."""
    pairs = data.make_pair_dataset(shards, model.preset, PAIR_BATCH, seed=seed, hard_negative_fraction=0.0, augment=False, repeat=False)
    probabilities, labels = _probabilities(model, pairs)
    return {
        "pair_auc": roc_auc(probabilities[labels], probabilities[~labels]),
        "pair_accuracy": float(np.mean((probabilities > 0.5) == labels)),
        "pairs": int(len(labels)),
    }


def still_auc(model: SyncNet, shards, seed: int = hp.SEED) -> float:
    """ROC-AUC of P(in sync): in-order windows against windows made still under their own audio."""
    pairs = data.make_pair_dataset(shards, model.preset, PAIR_BATCH, seed=seed, augment=False, repeat=False, still_negative_fraction=1.0)
    probabilities, labels = _probabilities(model, pairs)
    return roc_auc(probabilities[labels], probabilities[~labels])


def evaluate(model: SyncNet, shards, vshift: int = hp.VSHIFT, seed: int = hp.SEED) -> dict:
    """Pair, offset and (for pixel presets) still figures of `model` on `shards` (see the module's docstring)."""
    accuracy = offset_accuracy(model, data.eval_segments(shards, model.preset), vshift)
    figures = {**pair_metrics(model, shards, seed), "offset_acc_1": accuracy[1], "offset_acc_15": accuracy[15]}
    if data.holds_pixels(model.preset):
        figures["still_auc"] = still_auc(model, shards, seed)
    return figures


def configure_parser(parser):
    parser.add_argument("data_dir", help="folder of shards made by `syncnet preprocess`")
    parser.add_argument("--model", default=None, help="the .keras SyncNet (default: the shipped expert)")
    parser.add_argument(
        "--val-speakers",
        type=lambda text: [name for name in text.split(",") if name],
        help="evaluate only these speakers' shards (and whoever shares a clip with them); default: every shard",
    )
    parser.add_argument("--vshift", type=int, default=hp.VSHIFT)
    parser.add_argument("--seed", type=int, default=hp.SEED, help="draws the shuffled pairs")


def run_command(args) -> int:
    shards = data.list_shards(args.data_dir)
    if args.val_speakers:
        _, shards = data.split_by_speaker(args.data_dir, val_speakers=args.val_speakers)
    if not shards:
        raise UserError(f"no shards in {args.data_dir} (run `syncnet preprocess` first)")
    figures = evaluate(load_model(args.model), shards, args.vshift, args.seed)
    # a figure with nothing to measure (no pair of one label, no segment long enough) is NaN: null in JSON
    print(json.dumps({k: (round(v, 4) if math.isfinite(v) else None) if isinstance(v, float) else v for k, v in figures.items()}))
    return 0
