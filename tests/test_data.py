"""The shard format and the pair pipeline, on shards written with syncnet.data's own encoder.

The crops here are random noise, so every frame is unique and a window of a batch can be traced back
to the segment and frame it came from; the MFCC is random too, so an audio window can be traced the
same way. That makes "positives are aligned, negatives are not" an exact check.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from syncnet import data
from syncnet import hyperparameters as hp
from syncnet.data import Segment

# (clip, speaker, segment lengths in frames)
CLIPS = [
    ("a/one", "A", [40, 12]),
    ("a/two", "A", [30]),
    ("b/one", "B", [25]),
    ("ab/talk", "A+B", [20]),  # two people: ties A and B together
    ("c/one", "C", [35, 5]),
    ("d/one", "D", [30]),
]


def make_segment(rng, clip, speaker, track, num_frames, shape):
    crops = rng.integers(0, 256, (num_frames, *shape), dtype=np.uint8)
    mfcc = rng.normal(0, 10, (hp.MFCC_NUM_CEPSTRA, 4 * num_frames + 16)).astype(np.float32)
    return Segment(clip, speaker, track, 3 * track, crops, mfcc)


def write_shards(folder, clips, preset="paper", seed=0):
    """One shard per clip and a manifest, as `syncnet preprocess` lays them out; returns the segments."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    segments = []
    with open(folder / data.MANIFEST, "w") as manifest:
        for number, (clip, speaker, lengths) in enumerate(clips):
            shard = f"shard-{number:05d}.tfrecord.gz"
            clip_segments = [make_segment(rng, clip, speaker, track, n, data.crop_shape(preset)) for track, n in enumerate(lengths)]
            write_shard(folder / shard, clip_segments, preset)
            entry = {
                "video": clip + ".mp4",
                "clip": clip,
                "speaker": speaker,
                "preset": preset,
                "status": "ok",
                "shard": shard,
                "segments": len(lengths),
                "track_frames": sum(lengths),
            }
            manifest.write(json.dumps(entry) + "\n")
            segments += clip_segments
    return segments


def write_shard(path, segments, preset):
    with tf.io.TFRecordWriter(str(path), options=data.COMPRESSION) as writer:
        for segment in segments:
            writer.write(data.encode_segment(segment, preset))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    segments = write_shards(folder, CLIPS)
    return folder, data.list_shards(folder), segments


def batches(dataset, count):
    out = []
    for inputs, labels in dataset.take(count):
        out.append((inputs["frames"].numpy(), inputs["audio"].numpy(), labels.numpy()))
    return out


def test_segments_round_trip(shards):
    folder, paths, segments = shards
    assert len(paths) == len(CLIPS)
    read = list(data.read_segments(paths, "paper").as_numpy_iterator())
    assert len(read) == len(segments)
    for got, want in zip(read, segments):
        assert got["crops"].dtype == np.uint8 and got["crops"].shape == want.crops.shape
        np.testing.assert_array_equal(got["crops"], want.crops)
        np.testing.assert_array_equal(got["audio"], want.audio)
        assert got["audio"].shape == (13, 4 * want.num_frames + 16)
        assert (got["clip"].decode(), got["speaker"].decode(), got["track"], got["start"]) == (
            want.clip,
            want.speaker,
            want.track,
            want.start,
        )
    evaluated = list(data.eval_segments(paths, "tiny"))  # tiny takes the same mouth crops
    assert [(crops.shape, start) for crops, _, start in evaluated] == [(s.crops.shape, s.start) for s in segments]


def test_preset_mismatch_is_a_clear_error(shards):
    _, paths, _ = shards
    with pytest.raises(ValueError, match="syncnet_v2"):
        data.read_segments(paths, "syncnet_v2")
    with pytest.raises(ValueError, match="unknown preset"):
        data.make_pair_dataset(paths, "large")


def locate(segments):
    """frame bytes -> (segment number, frame index)."""
    frames = {}
    for number, segment in enumerate(segments):
        for v in range(segment.num_frames):
            frames[segment.crops[v].tobytes()] = (number, v)
    return frames


def test_pairs_are_aligned_or_truly_not(shards):
    _, paths, segments = shards
    where = locate(segments)
    min_shift = hp.HARD_NEGATIVE_MIN_SHIFT
    labels, hard, easy = [], 0, 0
    for frames, mfcc, batch_labels in batches(
        data.make_pair_dataset(paths, batch_size=16, seed=7, hard_negative_fraction=0.5, augment=False), 40
    ):
        assert frames.shape == (16, 5, 112, 112, 1) and frames.dtype == np.float32
        assert mfcc.shape == (16, 13, 20) and batch_labels.dtype == np.float32
        for window, audio, label in zip(frames, mfcc, batch_labels):
            number, v = where[window[0].astype(np.uint8).tobytes()]
            segment = segments[number]
            np.testing.assert_array_equal(window, segment.crops[v : v + 5].astype(np.float32))  # 5 consecutive frames
            aligned = segment.audio[:, 4 * v : 4 * v + 20]
            labels.append(label)
            if label == 1:
                np.testing.assert_array_equal(audio, aligned)
                continue
            assert not np.array_equal(audio, aligned)
            # a negative is this segment's audio >= min_shift frames away, or another clip's
            shifts = [u - v for u in range(segment.num_frames) if np.array_equal(audio, segment.audio[:, 4 * u : 4 * u + 20])]
            if shifts:
                assert abs(shifts[0]) >= min_shift
                hard += 1
            else:
                owners = [s.clip for s in segments for u in range(s.num_frames) if np.array_equal(audio, s.audio[:, 4 * u : 4 * u + 20])]
                assert owners and segment.clip not in owners
                easy += 1
    assert abs(np.mean(labels) - 0.5) < 0.05, np.mean(labels)
    assert 0.3 < hard / (hard + easy) < 0.7  # asked for 0.5


def test_offset_groups_are_one_segments_windows_close_together_each_with_its_own_audio(shards):
    _, paths, segments = shards
    where = locate(segments)
    gaps = set()
    dataset = data.make_offset_dataset(paths, batch_size=3, seed=3, group_size=4, max_shift=6, augment=False)
    for inputs, labels in dataset.take(20):
        frames, mfcc, labels = inputs["frames"].numpy(), inputs["audio"].numpy(), labels.numpy()
        assert frames.shape == (3, 4, 5, 112, 112, 1) and mfcc.shape == (3, 4, 13, 20)
        np.testing.assert_array_equal(labels, np.tile(np.eye(4), (3, 1, 1)))
        for group_frames, group_mfcc in zip(frames, mfcc):
            owners, starts = set(), []
            for window, audio in zip(group_frames, group_mfcc):
                number, v = where[window[0].astype(np.uint8).tobytes()]
                segment = segments[number]
                np.testing.assert_array_equal(window, segment.crops[v : v + 5].astype(np.float32))
                np.testing.assert_array_equal(audio, segment.audio[:, 4 * v : 4 * v + 20])
                owners.add(number)
                starts.append(v)
            assert len(owners) == 1 and len(set(starts)) == 4  # one segment, distinct windows
            assert max(starts) - min(starts) <= 2 * 6  # within the offset search of each other
            gaps |= {abs(u - v) for u in starts for v in starts if u != v}
    assert gaps == set(range(1, 13))  # every offset up to 2 max_shift meets some window


def test_offset_groups_need_segments_of_group_size_windows(shards):
    _, paths, segments = shards
    longest = max(segment.num_frames for segment in segments)
    too_big = longest - hp.WINDOW_FRAMES + 2  # one window more than the longest segment has
    assert not list(data.make_offset_dataset(paths, batch_size=1, group_size=too_big, max_shift=too_big, augment=False, repeat=False))
    for group_size in (1, 2 * 6 + 2):  # a group must fit in the offset search
        with pytest.raises(ValueError, match="group_size"):
            data.make_offset_dataset(paths, group_size=group_size, max_shift=6)


def test_hard_negative_fraction_extremes(shards):
    _, paths, segments = shards
    where = locate(segments)
    min_shift = hp.HARD_NEGATIVE_MIN_SHIFT

    def negatives(fraction):
        """(from its own segment?, could it be?) for each negative."""
        out = []
        for frames, mfcc, labels in batches(
            data.make_pair_dataset(paths, batch_size=32, seed=3, hard_negative_fraction=fraction, augment=False), 6
        ):
            for window, audio in zip(frames[labels == 0], mfcc[labels == 0]):
                number, v = where[window[0].astype(np.uint8).tobytes()]
                segment = segments[number]
                own = any(np.array_equal(audio, segment.audio[:, 4 * u : 4 * u + 20]) for u in range(segment.num_frames))
                out.append((own, v >= min_shift or v + min_shift <= segment.num_frames - 1))
        return out

    assert not any(own for own, _ in negatives(0.0))
    # 1.0: every window with audio min_shift+ frames away in its segment gets it; the rest (the
    # 5-frame segment's window) still get another clip's
    assert all(own == possible for own, possible in negatives(1.0))


def test_still_negatives_are_still_mouths_under_their_own_audio(shards):
    _, paths, segments = shards
    kinds = {"frozen": 0, "flat": 0, "texture": 0}
    for frames, audio, labels in batches(
        data.make_pair_dataset(paths, batch_size=32, seed=5, hard_negative_fraction=0.0, augment=False, still_negative_fraction=1.0), 4
    ):
        assert 0 < labels.sum() < len(labels)
        for window, sound in zip(frames[labels == 0], audio[labels == 0]):
            # the audio is a window of some segment (its own: the frames no longer say which)
            assert any(np.array_equal(sound, s.audio[:, 4 * u : 4 * u + 20]) for s in segments for u in range(s.num_frames))
            assert np.all(window == window[:1])  # no motion, whatever the kind
            first = window[0]
            if np.ptp(first) == 0:
                kinds["flat"] += 1
            elif np.array_equal(first[8:16, 8:16], first[:8, :8]):  # tiled noise repeats every 8 px
                kinds["texture"] += 1
            else:
                kinds["frozen"] += 1
    assert all(count > 0 for count in kinds.values()), kinds
    with pytest.raises(ValueError, match="still_negative_fraction must be in"):
        data.make_pair_dataset(paths, still_negative_fraction=1.5)


def test_same_seed_same_batches(shards):
    _, paths, _ = shards
    first = batches(data.make_pair_dataset(paths, batch_size=8, seed=11), 3)
    again = batches(data.make_pair_dataset(paths, batch_size=8, seed=11), 3)
    other = batches(data.make_pair_dataset(paths, batch_size=8, seed=12), 3)
    for (f1, m1, l1), (f2, m2, l2) in zip(first, again):
        np.testing.assert_array_equal(f1, f2)
        np.testing.assert_array_equal(m1, m2)
        np.testing.assert_array_equal(l1, l2)
    assert not all(np.array_equal(f1, f3) for (f1, _, _), (f3, _, _) in zip(first, other))


def test_augmentation_transforms_a_window_as_one(tmp_path):
    # A face that never moves: its windows' 5 frames stay equal to each other only if all 5 get the
    # same brightness, contrast, shift and scale. (The noise clips' frames are never equal.)
    write_shards(tmp_path, [("noise", "N", [40]), ("more", "M", [40])])
    rng = np.random.default_rng(1)
    still = make_segment(rng, "still", "S", 0, 40, (112, 112, 1))
    still.crops[:] = still.crops[0]
    write_shard(tmp_path / "shard-00002.tfrecord.gz", [still], "paper")
    paths = data.list_shards(tmp_path)

    segments = [segment for segment in data.read_segments(paths).as_numpy_iterator()]
    audio_windows = np.stack([s["audio"][:, 4 * u : 4 * u + 20] for s in segments for u in range(len(s["crops"]))])

    stored = {
        window[0].tobytes() for frames, _, _ in batches(data.make_pair_dataset(paths, batch_size=32, augment=False), 3) for window in frames
    }
    still_windows = changed = 0
    gains, jitter = [], []
    for frames, mfcc, _ in batches(data.make_pair_dataset(paths, batch_size=32, augment=True), 3):
        assert frames.min() >= 0.0 and frames.max() <= 255.0 and np.isfinite(mfcc).all()
        still_windows += sum(np.ptp(window, axis=0).max() < 1e-3 for window in frames)
        changed += sum(window[0].tobytes() not in stored for window in frames)
        for audio in mfcc:  # the stored window it came from: the nearest one in c1..c12
            source = audio_windows[np.argmin(np.abs(audio_windows[:, 1:] - audio[1:]).mean(axis=(1, 2)))]
            gains.append(np.mean(audio[0] - source[0]))
            jitter.append(audio[1:] - source[1:])
    assert still_windows > 10
    assert changed > 90  # of 96: augmented frames are not the stored pixels
    # gain: one offset on c0 per window, within +-6 dB = +-1.38; noise: std 0.5 on every coefficient
    assert max(np.abs(gains)) < data.AUDIO_GAIN_DB / 10 * np.log(10) + 0.5 and np.std(gains) > 0.3
    assert abs(np.std(jitter) - data.MFCC_JITTER_STD) < 0.05 and abs(np.mean(jitter)) < 0.05


@pytest.mark.parametrize("preset, shape", [("paper", (112, 112, 1)), ("tiny", (112, 112, 1)), ("syncnet_v2", (224, 224, 3))])
def test_shapes_per_preset(tmp_path, preset, shape):
    write_shards(tmp_path, [("x", "X", [60]), ("y", "Y", [50])], preset="syncnet_v2" if shape[-1] == 3 else "paper")
    ((frames, mfcc, labels),) = batches(data.make_pair_dataset(data.list_shards(tmp_path), preset, batch_size=4, augment=False), 1)
    assert frames.shape == (4, 5, *shape) and frames.dtype == np.float32
    assert mfcc.shape == (4, 13, 20) and labels.shape == (4,)


def test_one_pass_without_repeat(shards):
    _, paths, segments = shards
    windows = sum(len(list(batch[2])) for batch in batches(data.make_pair_dataset(paths, batch_size=8, repeat=False, augment=False), 1000))
    # back-to-back windows from a random first frame: between (n - 4) / 5 and n / 5 per segment,
    # less what does not fill a last pool of 64
    most = sum(s.num_frames // 5 for s in segments)
    assert most - data.PAIR_POOL < windows <= most


def test_split_by_speaker(shards):
    folder, paths, _ = shards
    train, val = data.split_by_speaker(folder, 0.3, seed=1)
    assert (train, val) == data.split_by_speaker(folder, 0.3, seed=1)  # deterministic
    assert sorted(train + val) == paths and train and val

    def speakers(selected):
        names = set()
        for path in selected:
            segment = next(data.read_segments([path]).as_numpy_iterator())
            names.update(segment["speaker"].decode().split("+"))
        return names

    assert not speakers(train) & speakers(val)  # "A+B" pulls every clip of A and of B to one side
    splits = {tuple(data.split_by_speaker(folder, 0.3, seed=s)[1]) for s in range(8)}
    assert len(splits) > 1  # the seed matters
    assert data.split_by_speaker(folder, 0.0) == (paths, [])


def test_split_with_named_validation_speakers(tmp_path):
    write_shards(tmp_path, [("x", "A", [10]), ("y", "A+B", [10]), ("z", "C", [10]), ("w", "D", [10])])
    train, val = data.split_by_speaker(tmp_path, val_speakers=["B"])
    clips = {path: next(data.read_segments([path]).as_numpy_iterator())["clip"].decode() for path in train + val}
    assert sorted(clips[path] for path in val) == ["x", "y"]  # B, and A who shares a clip with B
    assert sorted(clips[path] for path in train) == ["w", "z"]
    with pytest.raises(ValueError, match="no video of Q"):
        data.split_by_speaker(tmp_path, val_speakers=["B", "Q"])


def test_split_needs_two_speaker_groups(tmp_path):
    write_shards(tmp_path, [("x", "A", [10]), ("y", "A+B", [10]), ("z", "B", [10])])
    train, val = data.split_by_speaker(tmp_path, 0.5)
    assert len(train) == 3 and val == []
    (tmp_path / "copied").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest"):
        data.split_by_speaker(tmp_path / "copied", 0.5)


def test_speaker_balance_repeats_shards_toward_equal_speaker_shares(tmp_path):
    # speaker A: 4 clips of 100 frames; B: 1 clip of 25 frames (16x fewer)
    write_shards(tmp_path, [*[(f"a{i}", "A", [100]) for i in range(4)], ("b", "B", [25])])
    paths = data.list_shards(tmp_path)
    frames = dict(zip(paths, [100] * 4 + [25]))

    def share_of_b(power):
        balanced = data.balanced_shards(tmp_path, paths, power)
        return sum(frames[path] for path in balanced if path == paths[-1]) / sum(frames[path] for path in balanced)

    assert data.balanced_shards(tmp_path, paths, 0.0) == paths  # as the footage has them
    assert share_of_b(0.0) == pytest.approx(25 / 425)
    assert share_of_b(1.0) == pytest.approx(0.5)  # every speaker alike
    assert share_of_b(0.5) == pytest.approx(1 / (1 + 16**0.5))  # shares go as frames ** 0.5
    with pytest.raises(ValueError, match="speaker balance must be in"):
        data.balanced_shards(tmp_path, paths, 1.5)
