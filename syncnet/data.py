"""Training data: the shard format `syncnet preprocess` writes, and the tf.data pipelines that read it.

A shard is a GZIP TFRecord file of tf.train.Example, one example per face-track segment (one video's
segments per shard): its crops as raw uint8 bytes (n, H, W, C), the audio features that go with them
as float32 bytes (features, steps) - the preset's family's front-end (MFCC 13 x 4 n + 16 for the
MFCC families: column 4 v is where frame v's 20-column window starts; Wav2Lip's 80-bin mel for
`wav2lip`), every frame of the segment with a full window (`segment_audio_steps`) - and string ids
(clip, speaker, preset). The record keeps the key names of its first version ("mfcc") for any family.

`make_pair_dataset` cuts segments into windows (the family's frames: 5) and pairs each with audio: half in sync
(label 1), half not (label 0): the audio of a window from another clip, or for a fraction of the
negatives the same segment's audio shifted by at least `min_shift` frames (the hard ones).
`make_offset_dataset` gives groups of windows of one segment a few frames apart instead, for the
multi-way loss (Chung et al., "Perfect Match", 2019): each window against its own audio and the
group's other audio windows, the same speech at other offsets.
Every random choice is a stateless draw seeded by (seed, element number), so a seed gives the same
batches every time, on any machine.
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from . import hyperparameters as hp
from .errors import UserError
from .models import PRESETS
from .models.towers import LIP_FEATURE_SHAPE

SHARD_GLOB = "shard-*.tfrecord.gz"
COMPRESSION = "GZIP"  # real crops shrink 1.6x (mouths) and 1.45x (faces); reading it costs little CPU
MANIFEST = "manifest.jsonl"


# Pairing and shuffling
PAIR_POOL = 64  # windows pooled to draw the other-clip negatives from
SHUFFLE_WINDOWS = 1024  # ~20 segments' windows, from at least INTERLEAVE_SHARDS clips
SHUFFLE_BUFFER_BYTES = 256 * 2**20  # and at most this much: 1024 mouth windows are 64 MB, 356 face windows 256 MB
INTERLEAVE_SHARDS = 8  # shards read at once, so neighbouring segments come from different clips

# Augmentation (training only), the same for the 5 frames of a window
BRIGHTNESS_DELTA = 25.0  # pixel levels (of 255)
CONTRAST_RANGE = (0.8, 1.2)
CROP_SCALE_RANGE = (0.9, 1.0)  # side of the re-cropped box, as a fraction of the crop; shifted within it
# Audio features are precomputed, so a gain is applied where it lands in them. MFCC: a gain of g dB
# adds g / 10 * ln(10) to c0 (the log frame energy) and changes no other coefficient (a constant
# offset of the log mel energies only moves the DCT's 0th term, which c0 replaces). Wav2Lip's mel:
# every bin moves by g dB scaled to its [-4, 4] range (8 / 100 per dB), clipped there. Noise is
# gaussian jitter on every value, small against their spread in speech (MFCC std 3 to 18).
AUDIO_GAIN_DB = 6.0
MFCC_JITTER_STD = 0.5
MEL_JITTER_STD = 0.05

OFFSET_GROUP = 8  # windows of one segment compared all with all in make_offset_dataset


@dataclass
class Segment:
    """One face track's frames start..start + n: crops and the audio features under them: steps
    family.audio_window_start(start) .. family.audio_window_start(start + n - 1) + the window's steps
    (MFCC: columns 4 start .. 4 (start + n) + 16)."""

    clip: str
    speaker: str
    track: int
    start: int  # first frame, in the clip's 25 fps frames
    crops: np.ndarray  # (n, H, W, C) uint8
    audio: np.ndarray  # (features, segment_audio_steps(family, start, n)) float32

    @property
    def num_frames(self) -> int:
        return len(self.crops)


def family_of(preset: str):
    """The expert family (models.family.ExpertFamily) of a preset."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def segment_audio_steps(family, start: int, num_frames: int) -> int:
    """How many audio steps a segment of `num_frames` frames from frame `start` holds: from its
    first frame's window to the end of its last frame's."""
    return family.audio_window_start(start + num_frames - 1) - family.audio_window_start(start) + family.audio_window_steps


def encode_segment(segment: Segment, preset: str) -> bytes:
    """A serialized tf.train.Example of a segment."""
    family = family_of(preset)
    crops = np.ascontiguousarray(segment.crops, np.uint8)
    mfcc = np.ascontiguousarray(segment.audio, np.float32)
    expected = (family.front_end.features, segment_audio_steps(family, segment.start, len(crops)))
    if mfcc.shape != expected:
        raise UserError(f"segment of {len(crops)} frames from frame {segment.start} needs audio features {expected}, got {mfcc.shape}")

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def strings(*values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values]))

    features = {
        "crops": tf.train.Feature(bytes_list=tf.train.BytesList(value=[crops.tobytes()])),
        "crops_shape": ints(crops.shape),
        "mfcc": tf.train.Feature(bytes_list=tf.train.BytesList(value=[mfcc.tobytes()])),
        "mfcc_shape": ints(mfcc.shape),
        "clip": strings(segment.clip),
        "speaker": strings(segment.speaker),
        "track": ints([segment.track]),
        "start": ints([segment.start]),
        "preset": strings(preset),
    }
    # deterministic: map fields in key order, not in this process's string-hash order
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


_FEATURES = {
    "crops": tf.io.FixedLenFeature([], tf.string),
    "crops_shape": tf.io.FixedLenFeature([4], tf.int64),
    "mfcc": tf.io.FixedLenFeature([], tf.string),
    "mfcc_shape": tf.io.FixedLenFeature([2], tf.int64),
    "clip": tf.io.FixedLenFeature([], tf.string),
    "speaker": tf.io.FixedLenFeature([], tf.string),
    "track": tf.io.FixedLenFeature([], tf.int64),
    "start": tf.io.FixedLenFeature([], tf.int64),
    "preset": tf.io.FixedLenFeature([], tf.string),
}


def crop_shape(preset: str) -> tuple:
    """(H, W, C) of what a preset's shards hold per frame: the crops its model takes, or for `lips`
    its frame encoder's features (uint8 codes, not pixels)."""
    family = family_of(preset)
    return LIP_FEATURE_SHAPE if family.crop == "lips" else family.frame_shape[1:]


def holds_pixels(preset: str) -> bool:
    """Whether a preset's shards hold pixels (to augment, keyed "frames" in batches) or frame-encoder
    features (keyed "features", see SyncNet)."""
    return family_of(preset).crop != "lips"


def visual_key(preset: str) -> str:
    """The key of the windows in a preset's batches, as SyncNet's call reads them."""
    return "frames" if holds_pixels(preset) else "features"


def list_shards(data_dir) -> list[str]:
    """The shard files `syncnet preprocess` wrote into data_dir, sorted."""
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"no such folder: {data_dir}")
    return sorted(str(path) for path in Path(data_dir).glob(SHARD_GLOB))


def _parse(record, height, width, channels, features):
    example = tf.io.parse_single_example(record, _FEATURES)
    crops = tf.reshape(tf.io.decode_raw(example["crops"], tf.uint8), [-1, height, width, channels])
    audio = tf.reshape(tf.io.decode_raw(example["mfcc"], tf.float32), [features, -1])
    return {
        "crops": crops,
        "audio": audio,
        "clip": example["clip"],
        "speaker": example["speaker"],
        "track": example["track"],
        "start": example["start"],
    }


def _check_shards(shards, preset) -> tuple:
    """The preset's crop shape, after checking on the first record that the shards hold such crops."""
    shards = [os.fspath(shard) for shard in shards]
    if not shards:
        raise UserError("no shards given (run `syncnet preprocess` first)")
    height, width, channels = crop_shape(preset)
    first = next(iter(tf.data.TFRecordDataset(shards[:1], compression_type=COMPRESSION)), None)
    if first is not None:
        example = tf.io.parse_single_example(first, _FEATURES)
        have = tuple(int(d) for d in example["crops_shape"].numpy()[1:])
        if have != (height, width, channels):
            written_for = example["preset"].numpy().decode()
            raise UserError(
                f"{shards[0]} holds {have} crops (preprocessed for preset {written_for!r}); "
                f"preset {preset!r} takes {(height, width, channels)}"
            )
    return height, width, channels


def read_segments(shards, preset: str = "paper") -> tf.data.Dataset:
    """One element per segment, in shard order: {"crops": (n, H, W, C) uint8, "audio": (features,
    steps) float32, "clip", "speaker" (strings), "track", "start" (int64)}."""
    shape = _check_shards(shards, preset)
    features = family_of(preset).front_end.features
    records = tf.data.TFRecordDataset([os.fspath(s) for s in shards], compression_type=COMPRESSION)
    return records.map(lambda record: _parse(record, *shape, features), num_parallel_calls=tf.data.AUTOTUNE)


def eval_segments(shards, preset: str = "paper"):
    """Whole segments as numpy (crops (n, H, W, C) uint8, audio (features, steps) float32, first
    frame), for offset-accuracy evaluation."""
    for segment in read_segments(shards, preset).as_numpy_iterator():
        yield segment["crops"], segment["audio"], int(segment["start"])


def split_by_speaker(data_dir, val_fraction: float = 0.2, seed: int = hp.SEED, val_speakers=None) -> tuple[list[str], list[str]]:
    """(train shards, validation shards) with no speaker on both sides; the same split for a seed.

    Speakers come from data_dir's manifest.jsonl. A clip labelled "A+B" (two people) ties speakers A
    and B together, so every clip of either lands on one side. Whole speaker groups, in seeded random
    order, go to validation until it holds `val_fraction` of the frames; with one group only,
    validation is empty. `val_speakers` (names) chooses the validation groups instead: exactly the
    groups holding one of them (a benchmark's fixed held-out people).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    videos, groups, group_of = speaker_groups(data_dir)
    if val_speakers is not None:
        unknown = set(val_speakers) - set(group_of)
        if unknown:
            raise UserError(f"--val-speakers: no video of {', '.join(sorted(unknown))} in {data_dir}")
        chosen = {group_of[name] for name in val_speakers}
        val = [video for key in sorted(chosen) for video in groups[key]]
    else:
        ordered = [groups[key] for key in sorted(groups)]
        order = np.random.default_rng(seed).permutation(len(ordered))
        total = sum(video["track_frames"] for video in videos)
        val, val_frames = [], 0
        for index in order[:-1]:  # the last group always trains
            if val_frames >= val_fraction * total:
                break
            val.extend(ordered[index])
            val_frames += sum(video["track_frames"] for video in ordered[index])
    val_names = {video["shard"] for video in val}
    train_names = {video["shard"] for video in videos} - val_names
    return [str(Path(data_dir) / name) for name in sorted(train_names)], [str(Path(data_dir) / name) for name in sorted(val_names)]


def speaker_groups(data_dir) -> tuple[list[dict], dict[str, list[dict]], dict[str, str]]:
    """The manifest lines of data_dir's shards, those lines by speaker group, and each speaker's
    group. Groups are the connected components of "appear in the same clip" (a clip labelled "A+B"
    ties A and B), each keyed by one of its speakers."""
    present = {Path(shard).name for shard in list_shards(data_dir)}
    if not (Path(data_dir) / MANIFEST).is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {data_dir}: point at a folder `syncnet preprocess` wrote")
    videos = [video for video in read_manifest(data_dir).values() if video["status"] == "ok" and video["shard"] in present]
    parent = {}

    def root(name):
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for video in videos:
        names = video["speaker"].split("+")
        for name in names[1:]:
            parent[root(name)] = root(names[0])
    groups = {}
    for video in videos:
        groups.setdefault(root(video["speaker"].split("+")[0]), []).append(video)
    return videos, groups, {name: root(name) for name in list(parent)}


def balanced_shards(data_dir, shards, power: float) -> list[str]:
    """`shards` with each repeated so that a speaker group's share of the windows goes as its
    frames to the power 1 - `power` (as near as whole repeats get: each count is rounded): 0 leaves
    the list as it is (shares follow the footage), 1 gives every speaker group the same share. One
    speaker with most of the footage (GRID's 50 minutes of one man) otherwise teaches that face and
    voice, not sync."""
    if not 0.0 <= power <= 1.0:
        raise UserError(f"speaker balance must be in [0, 1], got {power}")
    if power == 0 or not shards:
        return [os.fspath(shard) for shard in shards]
    videos, groups, _ = speaker_groups(data_dir)
    chosen = {Path(shard).name for shard in shards}
    frames = {key: sum(video["track_frames"] for video in members if video["shard"] in chosen) for key, members in groups.items()}
    weight = {video["shard"]: frames[key] ** -power for key, members in groups.items() for video in members if frames[key]}
    lightest = min(weight[Path(shard).name] for shard in shards)
    return [os.fspath(shard) for shard in shards for _ in range(round(weight[Path(shard).name] / lightest))]


def read_manifest(data_dir) -> dict[str, dict]:
    """The latest manifest.jsonl line of each video in data_dir, by video (empty when there is none)."""
    latest = {}
    path = Path(data_dir) / MANIFEST
    if path.is_file():
        with open(path) as lines:
            for line in lines:
                if line.strip():
                    entry = json.loads(line)
                    latest[entry["video"]] = entry
    return latest


# --- Pairs -----------------------------------------------------------------------------------------


def make_pair_dataset(
    shards,
    preset: str = "paper",
    batch_size: int = hp.BATCH_SIZE,
    seed: int = hp.SEED,
    hard_negative_fraction: float = 0.25,
    min_shift: int = hp.HARD_NEGATIVE_MIN_SHIFT,
    augment: bool = True,
    repeat: bool = True,
    still_negative_fraction: float = 0.0,
) -> tf.data.Dataset:
    """Batches of ({"frames": (b, T, H, W, C) float32 0..255, "audio": (b, *audio_shape) float32}, label
    (b,) float32) - T and audio_shape the preset's family's: (5, ...) and (13, 20) for MFCC families -
    ("features" in place of "frames" for a preset whose shards hold features, see `visual_key`).

    Each pass over the data cuts every segment into back-to-back 5-frame windows from a random first
    frame. Half of each pool of windows keep their own audio (label 1); the others get the audio of a
    window from another clip, or with probability `hard_negative_fraction` their segment's audio
    `min_shift` or more frames away (a window that has neither is dropped). With probability
    `still_negative_fraction` a negative is instead a mouth that does not speak under the window's own
    audio (`still_windows`: frozen, flat or a texture), so an expert learns that such frames - what a
    generator gaming the sync loss emits - are not in sync (pixels only). repeat=False: one pass, the
    last batch may be short.
    """
    for name, fraction in (("hard_negative_fraction", hard_negative_fraction), ("still_negative_fraction", still_negative_fraction)):
        if not 0.0 <= fraction <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {fraction}")
    if still_negative_fraction and not holds_pixels(preset):
        raise UserError(f"still negatives are made of pixels; preset {preset!r}'s shards hold features")
    if min_shift < 1:
        raise UserError(f"min_shift must be >= 1 frame, got {min_shift}")
    family = family_of(preset)
    windows = _shuffled_windows(shards, preset, seed, repeat, lambda segment, index: _cut_windows(segment, seed, index, min_shift, family))
    pairs = (
        windows.batch(PAIR_POOL, drop_remainder=repeat)  # static pool shapes keep TF's cost model quiet
        .enumerate()
        .map(
            lambda index, pool: _make_pairs(pool, seed, index, hard_negative_fraction, still_negative_fraction, augment, preset),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .unbatch()
    )
    return pairs.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)


def make_offset_dataset(
    shards,
    preset: str = "paper",
    batch_size: int = hp.BATCH_SIZE,
    seed: int = hp.SEED,
    group_size: int = OFFSET_GROUP,
    max_shift: int = hp.VSHIFT,
    augment: bool = True,
    repeat: bool = True,
) -> tf.data.Dataset:
    """Batches of groups for the multi-way loss: ({"frames": (b, k, T, H, W, C) float32 0..255,
    "audio": (b, k, *audio_shape) float32}, labels (b, k, k) float32 = identity), k = group_size
    ("features" in place of "frames" as in `make_pair_dataset`).

    A group is k windows of one segment at distinct first frames less than 2 max_shift + 1 frames
    apart, each with its own audio. The model compares every window of a group with every audio
    window of it, so each window meets its own audio and k - 1 of its segment's audio windows
    1..2 max_shift frames away - the offset search `syncnet score` does, as a training task - while
    each audio window is embedded once, not once per candidate. A segment gives back-to-back groups
    from a random first frame; one shorter than k + 4 frames gives none."""
    if max_shift < 1:
        raise UserError(f"max_shift must be >= 1 frame, got {max_shift}")
    if not 2 <= group_size <= 2 * max_shift + 1:
        raise UserError(f"group_size must be in 2..{2 * max_shift + 1} (distinct windows within the offset search), got {group_size}")
    family = family_of(preset)
    groups = _shuffled_windows(
        shards, preset, seed, repeat, lambda segment, index: _cut_groups(segment, seed, index, group_size, max_shift, family), group_size
    )
    labels = tf.eye(group_size)

    def finish(index, batch):
        frames = tf.cast(batch["frames"], tf.float32)
        audio = batch["audio"]
        if augment:  # per window, as make_pair_dataset does
            shape = tf.shape(frames)
            flat_frames, flat_audio = _augment(
                tf.reshape(frames, tf.concat([[-1], shape[2:]], 0)),
                tf.reshape(audio, [-1, *family.audio_shape]),
                _seeds(seed, index, 1)[0],
                family,
                holds_pixels(preset),
            )
            frames, audio = tf.reshape(flat_frames, shape), tf.reshape(flat_audio, tf.shape(audio))
        return {visual_key(preset): frames, "audio": audio}, tf.tile(labels[None], [tf.shape(frames)[0], 1, 1])

    batches = groups.batch(batch_size, drop_remainder=repeat).enumerate()
    return batches.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _shuffled_windows(shards, preset, seed, repeat, cut, windows_per_element=1) -> tf.data.Dataset:
    """The shards' segments (shards shuffled and interleaved), each cut into elements of
    `windows_per_element` windows by `cut(segment, index)`, the elements shuffled within a bounded buffer."""
    height, width, channels = _check_shards(shards, preset)
    family = family_of(preset)
    element_bytes = family.window_frames * height * width * channels * windows_per_element
    files = tf.data.Dataset.from_tensor_slices([os.fspath(s) for s in shards])
    files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    segments = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=COMPRESSION),
        cycle_length=min(len(shards), INTERLEAVE_SHARDS),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).map(lambda record: _parse(record, height, width, channels, family.front_end.features), num_parallel_calls=tf.data.AUTOTUNE)
    segments = segments.filter(lambda segment: tf.shape(segment["crops"])[0] >= family.window_frames)
    return (
        segments.enumerate()
        .map(lambda index, segment: cut(segment, index), num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
        .shuffle(max(1, min(SHUFFLE_WINDOWS // windows_per_element, SHUFFLE_BUFFER_BYTES // element_bytes)), seed=seed)
    )


def _seeds(seed, index, count):
    """`count` independent stateless seeds for element `index`."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(index, tf.int64)])
    return tf.random.experimental.stateless_split(base, num=count)


def _cut_windows(segment, seed, index, min_shift, family):
    """A segment's back-to-back windows from a random first frame, each with its own audio and a
    hard-negative audio window at least `min_shift` frames away (where the segment is long enough)."""
    crops = segment["crops"]
    num_frames = tf.shape(crops)[0]
    phase_seed, shift_seed = tf.unstack(_seeds(seed, index, 2))
    starts = _window_starts(num_frames, phase_seed, family.window_frames)

    # Hard negative: a frame u in 0..n-1 (every frame has its full audio window) with |u - v| >= min_shift,
    # uniformly among those before v (`before` of them) and after it.
    before = tf.maximum(starts - min_shift + 1, 0)
    after = tf.maximum(num_frames - starts - min_shift, 0)
    choice = tf.random.stateless_uniform(tf.shape(starts), shift_seed, dtype=tf.float32)
    pick = tf.cast(tf.floor(choice * tf.cast(before + after, tf.float32)), tf.int32)
    shifted = tf.where(pick < before, pick, starts + min_shift + pick - before)

    count = tf.shape(starts)[0]
    return {
        "frames": tf.gather(crops, starts[:, None] + tf.range(family.window_frames)),
        "audio": _audio_windows(segment, starts, family),
        "hard_audio": _audio_windows(segment, tf.minimum(shifted, num_frames - 1), family),
        "has_hard": before + after > 0,
        "clip": tf.fill([count], segment["clip"]),
    }


def _window_starts(num_frames, seed, window_frames):
    """First frames of back-to-back windows, from a random first frame in 0..window_frames - 1."""
    last_start = num_frames - window_frames
    phase = tf.random.stateless_uniform([], seed, 0, tf.minimum(window_frames, last_start + 1), tf.int32)
    return tf.range(phase, last_start + 1, window_frames)


def _audio_windows(segment, frames, family):
    """The family's audio windows under a segment's frames (any shape of indices into the segment)
    -> (*frames.shape, features, steps). The window rule is the family's, int(rate * v / 25) of the
    clip's frame v, in integers: (rate * v) // 25."""
    rate = family.front_end.rate
    start = tf.cast(segment["start"], tf.int32)
    first = (rate * (start + tf.cast(frames, tf.int32))) // hp.VIDEO_FPS - (rate * start) // hp.VIDEO_FPS
    columns = first[..., None] + tf.range(family.audio_window_steps)
    windows = tf.gather(segment["audio"], columns, axis=1)  # (features, *frames.shape, steps)
    rank = tf.rank(columns)
    return tf.transpose(windows, tf.concat([tf.range(1, rank), [0, rank]], axis=0))


def _cut_groups(segment, seed, index, group_size, max_shift, family):
    """A segment's groups of `group_size` windows: back-to-back spans of 2 max_shift + 1 first frames
    (fewer in a short segment) from a random first span, `group_size` distinct first frames drawn
    from each span."""
    crops = segment["crops"]
    positions = tf.shape(crops)[0] - family.window_frames + 1  # first frames 0..positions - 1
    span = tf.minimum(positions, 2 * max_shift + 1)
    phase_seed, pick_seed = tf.unstack(_seeds(seed, index, 2))
    phase = tf.random.stateless_uniform([], phase_seed, 0, positions - span + 1, tf.int32)  # span <= positions
    phase = tf.minimum(phase, span - 1)
    span_starts = tf.range(phase, positions - span + 1, span)
    span_starts = span_starts[: tf.where(span >= group_size, tf.shape(span_starts)[0], 0)]
    # group_size distinct offsets in 0..span - 1 per span: the first of a random permutation
    draw = tf.random.stateless_uniform([tf.shape(span_starts)[0], 2 * max_shift + 1], pick_seed)
    draw += tf.where(tf.range(2 * max_shift + 1) < span, 0.0, 2.0)  # offsets past the span sort last
    offsets = tf.argsort(draw, axis=1)[:, :group_size]
    starts = span_starts[:, None] + offsets  # (groups, group_size)
    return {
        "frames": tf.gather(crops, starts[..., None] + tf.range(family.window_frames)),  # (groups, k, T, H, W, C)
        "audio": _audio_windows(segment, starts, family),  # (groups, k, features, steps)
    }


def _make_pairs(pool, seed, index, hard_negative_fraction, still_negative_fraction, augment, preset):
    """Labels, negative audio (or still frames) and augmentation for a pool of windows; returns the usable pairs."""
    label_seed, hard_seed, partner_seed, augment_seed, still_seed, kind_seed = tf.unstack(_seeds(seed, index, 6))
    size = tf.shape(pool["clip"])[0]
    # Exactly half in sync: the windows whose rank under a random draw is even.
    ranks = tf.argsort(tf.argsort(tf.random.stateless_uniform([size], label_seed)))
    positive = ranks % 2 == 0

    other_clip = pool["clip"][:, None] != pool["clip"][None, :]
    has_partner = tf.reduce_any(other_clip, axis=1)
    logits = tf.where(other_clip, 0.0, -1e9)
    partner = tf.random.stateless_categorical(logits, 1, partner_seed, dtype=tf.int32)[:, 0]
    partner = tf.where(has_partner, tf.clip_by_value(partner, 0, size - 1), tf.range(size))
    want_hard = tf.random.stateless_uniform([size], hard_seed) < hard_negative_fraction
    use_hard = pool["has_hard"] & (want_hard | ~has_partner)

    audio = tf.where(
        positive[:, None, None],
        pool["audio"],
        tf.where(use_hard[:, None, None], pool["hard_audio"], tf.gather(pool["audio"], partner)),
    )
    frames = tf.cast(pool["frames"], tf.float32)
    if still_negative_fraction:  # a still mouth under its own audio: only the motion says "not in sync"
        still = ~positive & (tf.random.stateless_uniform([size], still_seed) < still_negative_fraction)
        frames = tf.where(still[:, None, None, None, None], still_windows(frames, kind_seed), frames)
        audio = tf.where(still[:, None, None], pool["audio"], audio)
        use_hard = use_hard | still  # usable whatever partner it lacks
    if augment:
        frames, audio = _augment(frames, audio, augment_seed, family_of(preset), holds_pixels(preset))
    usable = positive | use_hard | has_partner
    inputs = {visual_key(preset): tf.boolean_mask(frames, usable), "audio": tf.boolean_mask(audio, usable)}
    return inputs, tf.boolean_mask(tf.cast(positive, tf.float32), usable)


STILL_TEXTURE_CELL = 8  # pixels of a still texture's noise cell


def still_windows(frames, seed):
    """(b, T, H, W, C) float pixel windows made into mouths that do not speak, one kind per window
    drawn at random: the window's first frame frozen over it; flat at the window's mean level; or
    a tiled noise texture at the window's mean and spread. What a generator that games a sync loss
    emits - a frozen, blank or textured mouth - and what a sync expert must not call in sync."""
    size = tf.shape(frames)[0]
    window, height, width, channels = frames.shape[1:]
    kind_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    kind = tf.random.stateless_uniform([size], kind_seed, 0, 3, tf.int32)[:, None, None, None, None]
    frozen = tf.tile(frames[:, :1], [1, window, 1, 1, 1])
    mean = tf.reduce_mean(frames, axis=[1, 2, 3, 4], keepdims=True)
    flat = tf.broadcast_to(mean, tf.shape(frames))
    cell = STILL_TEXTURE_CELL
    noise = tf.random.stateless_normal([size, 1, cell, cell, channels], noise_seed)
    tiles = tf.tile(noise, [1, window, -(-height // cell), -(-width // cell), 1])[:, :, :height, :width]
    texture = tf.clip_by_value(mean + tf.math.reduce_std(frames, axis=[1, 2, 3, 4], keepdims=True) * tiles, 0.0, 255.0)
    return tf.where(kind == 0, frozen, tf.where(kind == 1, flat, texture))


def _augment(frames, audio, seed, family, pixels: bool = True):
    """Random brightness, contrast, crop shift and scale per window (all its frames alike), unless
    the frames are features (`pixels` False: the lips tower's dropout stands in); gain and jitter
    on the audio features."""
    size = frames.shape[0] or tf.shape(frames)[0]  # static when it can be: TF's cost model warns otherwise
    height, width, channels = frames.shape[2], frames.shape[3], frames.shape[4]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=6))
    if pixels:
        frames = _augment_pixels(frames, seeds[:5], size, height, width, channels)
    gain_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[5], num=2))
    gain_db = tf.random.stateless_uniform([size, 1], gain_seed, -AUDIO_GAIN_DB, AUDIO_GAIN_DB)
    features = family.front_end.features
    # (size, features) -> (size, [1 per candidate axis,] features, 1): one gain per window, all its candidates alike
    shape = tf.concat([[size], tf.ones([tf.rank(audio) - 3], tf.int32), [features, 1]], axis=0)
    if family.audio == "mfcc":
        offset = tf.reshape(tf.pad(gain_db / 10.0 * math.log(10.0), [[0, 0], [0, features - 1]]), shape)
        return frames, audio + offset + tf.random.stateless_normal(tf.shape(audio), jitter_seed, stddev=MFCC_JITTER_STD)
    offset = tf.reshape(tf.tile(gain_db * (2.0 * hp.MEL_MAX_ABS_VALUE / -hp.MEL_MIN_LEVEL_DB), [1, features]), shape)
    audio = audio + offset + tf.random.stateless_normal(tf.shape(audio), jitter_seed, stddev=MEL_JITTER_STD)
    return frames, tf.clip_by_value(audio, -hp.MEL_MAX_ABS_VALUE, hp.MEL_MAX_ABS_VALUE)


def _augment_pixels(frames, seeds, size, height, width, channels):
    """Brightness, contrast, crop shift and scale, one draw per window of (size, 5, H, W, C) frames."""
    scale = tf.random.stateless_uniform([size], seeds[0], *CROP_SCALE_RANGE)
    top = tf.random.stateless_uniform([size], seeds[1]) * (1.0 - scale)
    left = tf.random.stateless_uniform([size], seeds[2]) * (1.0 - scale)
    window_frames = frames.shape[1]
    boxes = tf.repeat(tf.stack([top, left, top + scale, left + scale], axis=1), window_frames, axis=0)
    images = tf.reshape(frames, [-1, height, width, channels])
    images = tf.image.crop_and_resize(images, boxes, tf.range(size * window_frames), [height, width])
    frames = tf.reshape(images, [size, window_frames, height, width, channels])

    contrast = tf.random.stateless_uniform([size, 1, 1, 1, 1], seeds[3], *CONTRAST_RANGE)
    brightness = tf.random.stateless_uniform([size, 1, 1, 1, 1], seeds[4], -BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    mean = tf.reduce_mean(frames, axis=[1, 2, 3, 4], keepdims=True)
    return tf.clip_by_value((frames - mean) * contrast + mean + brightness, 0.0, 255.0)
