"""What the sync loss sees when it is given the wrong part of the face: pair ROC-AUC of aligned against
5-10-frame-shifted windows, by the region the frames show, on a real clip with the shipped expert.

    python bench/sync_loss_regions.py [CLIP ...] [--model M] [--seed 0]

CLIP: paths or globs under ../shared/data/clips (default: three clean frontal 25 fps talking heads
whose speakers are among the shipped expert's 12 held-out ones: VoxCeleb2, HDTF, MEAD). Every window of 5 frames
[i, i + 5) is scored by `SyncLoss.probability` against its own audio window (placed by time: i / 25 s)
and against the windows 5, 6, ..., 10 frames earlier and later; the AUC is P(an aligned window scores
above a shifted one), 0.5 = no signal; per clip, and over all clips' windows together. The interval:
2.5 / 97.5 % of a block bootstrap over 1 s blocks of windows (seeded: one command, the same table). The regions, all from the same face track (68 dlib landmarks):

  (a) our mouth crop: `syncnet.expert_crops` (what the `paper` expert reads)
  (b) the lower half of the face box (the square box scoring's face crops come from), squashed to the square crop
  (c) a centre square of that lower half
  (d) the whole face box
  (e) the upper half of the face box, squashed
  (f) Wav2Lip's 96 px lower half (expert_crops of the wav2lip family, lower half), squashed

SyncLoss now refuses frames whose aspect ratio is more than 1.3x off the expert's crop, so (b), (e)
and (f) - 2:1 lower or upper halves - would be refused as given: here they are resized to the
crop's square aspect first, as a generator that squashed them would have done, to show what happens
to the signal. The expert is only given its own resolution (112 x 112 gray) in every case.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clips import find_clip  # noqa: E402

import syncnet  # noqa: E402
from syncnet.calibration import roc_auc  # noqa: E402
from syncnet.faces import find_face_tracks  # noqa: E402
from syncnet.models.family import WAV2LIP  # noqa: E402

# Clean, frontal, 25 fps real talking heads of speakers the shipped expert never trained on (its
# model card's held-out list): VoxCeleb2 (S_vox_nph), HDTF (S_katiehill), MEAD (S_mead_M003).
DEFAULT_CLIPS = ["*Audio_Source_681100216.mp4", "*WDA_KatieHill_000.mp4", "*M003_level_1_disgusted_015.mp4"]
SHIFTS = [s for s in range(-10, 11) if abs(s) >= 5]
FPS = 25.0
BATCH = 256
BLOCK = 25  # windows per bootstrap block (1 s): neighbouring windows share 4 of 5 frames
RESAMPLES = 1000


def gray_square(image: np.ndarray, size: int, box=None) -> np.ndarray:
    """The box of an RGB image (black outside it), as size x size gray: ITU-R 601 luma and bilinear, as
    scoring's crops are made."""
    image = Image.fromarray(image)
    if box is not None:
        image = image.crop(tuple(int(round(value)) for value in box))
    return np.asarray(image.convert("L").resize((size, size), Image.BILINEAR))


def regions(frames: np.ndarray, track, model) -> dict[str, np.ndarray]:
    """Region name -> (n, 112, 112, 1) uint8 gray crops of the track's frames."""
    size = model.family.frame_size[0]
    boxes = track.face_boxes()

    def cut(box_of):
        return np.stack([gray_square(frame, size, box_of(box)) for frame, box in zip(frames, boxes)])[..., None]

    def lower(box):
        x0, y0, x1, y1 = box
        return x0, (y0 + y1) / 2, x1, y1

    def centre_square(box):
        x0, y0, x1, y1 = box
        side, centre = (y1 - y0) / 2, (x0 + x1) / 2
        return centre - side / 2, (y0 + y1) / 2, centre + side / 2, y1

    def upper(box):
        x0, y0, x1, y1 = box
        return x0, y0, x1, (y0 + y1) / 2

    wav2lip_faces = syncnet.expert_crops(WAV2LIP, frames, landmarks=track.landmarks)
    wav2lip_lower = wav2lip_faces[:, WAV2LIP.generator_face[0] // 2 :]
    return {
        "(a) our mouth crop (expert_crops)": syncnet.expert_crops(model, frames, landmarks=track.landmarks),
        "(b) lower half of the face, squashed": cut(lower),
        "(c) centre square of the lower face": cut(centre_square),
        "(d) whole face": cut(lambda box: box),
        "(e) upper half of the face, squashed": cut(upper),
        "(f) Wav2Lip's 96 px lower half, squashed": np.stack([gray_square(crop, size) for crop in wav2lip_lower])[..., None],
    }


def probabilities(sync_loss, crops, audio_windows, pairs) -> np.ndarray:
    """P(in sync) of each (frame window start, audio window index) pair."""
    out = []
    for begin in range(0, len(pairs), BATCH):
        chunk = pairs[begin : begin + BATCH]
        windows = np.stack([crops[start : start + 5] for start, _ in chunk])
        audio = audio_windows[[index for _, index in chunk]]
        out.append(sync_loss.probability(windows, audio).numpy())
    return np.concatenate(out)


def region_scores(path, model, sync_loss) -> dict[str, tuple]:
    """Region -> (P(in sync) of each aligned window (w,), of each shifted one (w, len(SHIFTS)), NaN
    where the shifted audio window leaves the audio), for the clip's longest face track."""
    media = syncnet.load_media(path)
    frames = np.stack(list(media.frames()))
    track = max(find_face_tracks(frames).tracks, key=lambda track: track.end - track.start)
    frames = frames[track.start : track.end]
    rate, steps = model.family.front_end.rate, model.audio_shape[-1]
    audio_steps = np.asarray(model.audio_features(media.audio)).shape[-1]

    def has_audio(frame):  # the audio window under a window starting at this frame of the track lies in the audio
        return track.start + frame >= 0 and np.floor((track.start + frame) / FPS * rate + 1e-6) + steps <= audio_steps

    starts = [i for i in range(len(frames) - 4) if has_audio(i)]
    # every audio window any pair needs, by frame offset from the track's start
    audio_frames = sorted({i + s for i in starts for s in [0, *SHIFTS] if has_audio(i + s)})
    index_of = {frame: index for index, frame in enumerate(audio_frames)}
    audio_windows = model.audio_windows(media.audio, times=(track.start + np.array(audio_frames)) / FPS)
    aligned_pairs = [(i, index_of[i]) for i in starts]
    shifted_pairs = [(i, index_of[i + s]) for i in starts for s in SHIFTS if i + s in index_of]
    shifted_slots = tuple(np.array([(w, k) for w, i in enumerate(starts) for k, s in enumerate(SHIFTS) if i + s in index_of]).T)
    print(
        f"{path.name}: {len(frames)} frames tracked, {len(aligned_pairs)} aligned and {len(shifted_pairs)} shifted windows", file=sys.stderr
    )
    scores = {}
    for name, crops in regions(frames, track, model).items():
        shifted = np.full((len(starts), len(SHIFTS)), np.nan)
        shifted[shifted_slots] = probabilities(sync_loss, crops, audio_windows, shifted_pairs)
        scores[name] = (probabilities(sync_loss, crops, audio_windows, aligned_pairs), shifted)
    return scores


def block_auc(per_clip, chosen_blocks) -> float:
    """The pair AUC over the windows of the chosen (clip, first window) blocks."""
    aligned = np.concatenate([per_clip[c][0][b : b + BLOCK] for c, b in chosen_blocks])
    shifted = np.concatenate([per_clip[c][1][b : b + BLOCK].ravel() for c, b in chosen_blocks])
    return roc_auc(aligned, shifted[~np.isnan(shifted)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", default=DEFAULT_CLIPS, help="clip paths or globs under the shared clips")
    parser.add_argument("--model", default=None, help="expert .keras (default: the shipped expert)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    args = parser.parse_args()

    model = syncnet.load_model(args.model)
    if model.family.crop != "mouth":
        sys.exit("the regions are cut for a square-mouth expert (the paper family): pass one, or none for the shipped expert")
    sync_loss = syncnet.SyncLoss(model, value_range=(0, 255))
    scores: dict[str, list] = {}  # region -> per clip (aligned (w,), shifted (w, len(SHIFTS)) with NaN where outside)
    for clip in args.clips:
        for name, clip_scores in region_scores(find_clip(clip), model, sync_loss).items():
            scores.setdefault(name, []).append(clip_scores)

    rng = np.random.default_rng(args.seed)
    blocks = [(clip, begin) for clip, (aligned, _) in enumerate(next(iter(scores.values()))) for begin in range(0, len(aligned), BLOCK)]
    draws = [rng.integers(0, len(blocks), len(blocks)) for _ in range(RESAMPLES)]
    names = [Path(clip).name.strip("*") for clip in args.clips]
    print(f"| region given to the expert | {' | '.join(names)} | all | 95 % interval (all) |")
    print("| --- |" + " --- |" * (len(names) + 2))
    for name, per_clip in scores.items():
        per_clip_auc = [block_auc(per_clip, [block for block in blocks if block[0] == clip]) for clip in range(len(names))]
        low, high = np.percentile([block_auc(per_clip, [blocks[k] for k in draw]) for draw in draws], [2.5, 97.5])
        print(
            f"| {name} | {' | '.join(f'{value:.2f}' for value in per_clip_auc)} | {block_auc(per_clip, blocks):.3f} | {low:.2f}-{high:.2f} |"
        )


if __name__ == "__main__":
    main()
