"""`syncnet preprocess` on a folder of real encoded clips: good ones, bad ones, a resumed run."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from shared_data import shared_clip
from synthetic import write_clip, write_frames

from syncnet import data
from syncnet import hyperparameters as hp
from syncnet.audio import mfcc
from syncnet.cli import main
from syncnet.data import MANIFEST, read_manifest
from syncnet.models import build_model
from syncnet.preprocess import (
    Job,
    SyncFilter,
    plan_jobs,
    preprocess_folder,
    preprocess_video,
    process_job,
    read_speakers,
    segment_bounds,
)
from syncnet.video import MediaError, load_media

SECONDS = 2.0
FRAMES = round(SECONDS * hp.VIDEO_FPS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """spk_a: a normal clip and one without audio; spk_b: a two-face clip, a faceless one, a corrupt file."""
    root = tmp_path_factory.mktemp("clips")
    (root / "spk_a").mkdir()
    (root / "spk_b").mkdir()
    write_clip(root / "spk_a" / "normal.mp4", seconds=SECONDS)
    write_clip(root / "spk_a" / "no_audio.mp4", seconds=SECONDS, with_audio=False)
    write_clip(root / "spk_b" / "two_faces.avi", seconds=SECONDS, size=(448, 224), faces=(True, False), seed=1)
    noise = np.random.default_rng(0).normal(0, 0.1, round(SECONDS * hp.AUDIO_SAMPLE_RATE)).astype(np.float32)
    write_frames(root / "spk_b" / "blank.mp4", (np.full((128, 128, 3), 90, np.uint8) for _ in range(FRAMES)), audio=noise)
    (root / "spk_b" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return root


@pytest.fixture(scope="module")
def preprocessed(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    summary = preprocess_folder(clips, out, "paper", workers=1, progress=False)
    return out, summary


def test_manifest_says_what_happened_to_each_video(preprocessed):
    out, summary = preprocessed
    entries = read_manifest(out)
    assert {video: entry["status"] for video, entry in entries.items()} == {
        "spk_a/normal.mp4": "ok",
        "spk_a/no_audio.mp4": "skipped",
        "spk_b/two_faces.avi": "ok",
        "spk_b/blank.mp4": "skipped",
        "spk_b/corrupt.mp4": "skipped",
    }
    assert "no audio track" in entries["spk_a/no_audio.mp4"]["reason"]
    assert "no face track" in entries["spk_b/blank.mp4"]["reason"]
    assert "corrupt" in entries["spk_b/corrupt.mp4"]["reason"] or "not a" in entries["spk_b/corrupt.mp4"]["reason"]
    assert entries["spk_a/normal.mp4"]["tracks"] == 1 and entries["spk_b/two_faces.avi"]["tracks"] == 2
    assert entries["spk_b/two_faces.avi"]["speaker"] == "spk_b"  # the folder it is in

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["videos"] == {"ok": 2, "skipped": 3} and on_disk["tracks"] == 3 and on_disk["segments"] == 3
    assert sum(on_disk["skipped"].values()) == 3 and on_disk["errors"] == {}
    assert [p.name for p in sorted(out.iterdir()) if not p.name.startswith("shard-")] == [MANIFEST, "summary.json"]
    assert len(data.list_shards(out)) == 2


def test_segments_hold_the_crops_and_the_aligned_mfcc(preprocessed, clips):
    out, _ = preprocessed
    segments = list(data.read_segments(data.list_shards(out), "paper").as_numpy_iterator())
    assert sorted((s["clip"].decode(), int(s["track"])) for s in segments) == [
        ("spk_a/normal", 0),
        ("spk_b/two_faces", 0),
        ("spk_b/two_faces", 1),
    ]
    normal = next(s for s in segments if s["clip"] == b"spk_a/normal")
    assert normal["crops"].shape == (FRAMES, 112, 112, 1) and normal["start"] == 0
    # columns [4 start, 4 (start + n) + 16) of the clip's MFCC; the last 16 over zero padding
    audio = load_media(clips / "spk_a" / "normal.mp4").audio
    padded = np.concatenate([audio, np.zeros(hp.AUDIO_SAMPLE_RATE, np.float32)])
    expected = mfcc(padded).numpy()[:, : 4 * FRAMES + 16]
    np.testing.assert_allclose(normal["audio"], expected, atol=1e-3)
    # the pair pipeline reads these shards
    inputs, labels = next(iter(data.make_pair_dataset(data.list_shards(out), batch_size=4)))
    assert inputs["frames"].shape == (4, 5, 112, 112, 1) and inputs["audio"].shape == (4, 13, 20)


def test_rerun_does_only_the_missing_work(preprocessed, clips, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(preprocessed[0], out)
    before = read_manifest(out)
    normal_shard = out / before["spk_a/normal.mp4"]["shard"]
    other_shard = out / before["spk_b/two_faces.avi"]["shard"]
    original = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(normal_shard), compression_type="GZIP")]
    other_mtime = other_shard.stat().st_mtime_ns

    # Lose the normal clip's shard and manifest line; leave what a killed run leaves behind: a
    # half-written temporary and a shard renamed into place just before its manifest line.
    normal_shard.unlink()
    lines = (out / MANIFEST).read_text().splitlines(keepends=True)
    (out / MANIFEST).write_text("".join(line for line in lines if "spk_a/normal.mp4" not in line))
    (out / ".shard-00007.tfrecord.gz.tmp").write_bytes(b"half")
    (out / "shard-00042.tfrecord.gz").write_bytes(b"orphan")

    assert main(["preprocess", str(clips), str(out), "--workers", "2", "--no-progress"]) == 0
    assert "1 videos processed" in capsys.readouterr().out
    after = (out / MANIFEST).read_text().splitlines()
    assert len(after) == len(lines)  # one new line: the normal clip's, the only work done
    redone = json.loads(after[-1])
    assert redone["video"] == "spk_a/normal.mp4" and redone["status"] == "ok"
    rewritten = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(out / redone["shard"]), compression_type="GZIP")]
    assert rewritten == original  # the same examples, byte for byte
    assert other_shard.stat().st_mtime_ns == other_mtime
    assert sorted(p.name for p in out.glob("*shard-*")) == sorted([redone["shard"], other_shard.name])

    # same folder, other preset: refused before any work
    assert main(["preprocess", str(clips), str(out), "--preset", "syncnet_v2", "--no-progress"]) == 1
    assert "preset 'paper'" in capsys.readouterr().err


def test_sync_filter_drops_segments(preprocessed, clips, tmp_path):
    model_path = tmp_path / "tiny.keras"
    build_model("tiny").save(model_path)
    segment = next(iter(_segments(preprocessed[0])))
    assert SyncFilter(str(model_path), min_confidence=-np.inf, max_offset=hp.VSHIFT).keeps(segment)
    assert not SyncFilter(str(model_path), min_confidence=np.inf, max_offset=hp.VSHIFT).keeps(segment)
    faces = data.Segment("x", "y", 0, 0, np.zeros((10, 224, 224, 3), np.uint8), segment.audio[:, : 4 * 10 + 16])
    with pytest.raises(ValueError, match=r"reads \(112, 112, 1\) per frame, the preset's shards hold \(224, 224, 3\)"):
        SyncFilter(str(model_path), 0.0, 1).keeps(faces)

    job = Job(
        "normal.mp4",
        str(clips / "spk_a" / "normal.mp4"),
        None,
        "normal",
        "spk_a",
        "shard-00000.tfrecord.gz",
        "paper",
        str(tmp_path),
        SyncFilter(str(model_path), np.inf, hp.VSHIFT),
    )
    entry = process_job(job)
    assert entry["status"] == "skipped" and entry["filtered"] == 1 and "sync filter" in entry["reason"]
    assert not list(tmp_path.glob("*shard*"))  # no shard, no temporary left


def _segments(folder):
    for segment in data.read_segments(data.list_shards(folder)).as_numpy_iterator():
        yield data.Segment(
            segment["clip"].decode(),
            segment["speaker"].decode(),
            int(segment["track"]),
            int(segment["start"]),
            segment["crops"],
            segment["audio"],
        )


def test_finds_videos_frame_folders_and_speakers(tmp_path):
    root = tmp_path / "in"
    for name in ("spk_x/a.mp4", "spk_x/b.MOV", "top.avi", "notes.txt", "vidtimit/fadg0/audio/sa1.wav"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    for number in (1, 2, 3):  # VidTIMIT: fadg0/video/sa1/001 ..., audio in fadg0/audio/sa1.wav
        (root / "vidtimit/fadg0/video/sa1").mkdir(parents=True, exist_ok=True)
        (root / f"vidtimit/fadg0/video/sa1/{number:03d}").write_bytes(b"")
    tsv = tmp_path / "speakers.tsv"
    tsv.write_text("file\tspeakers\tnotes\nb.MOV\tS_b+S_c\tinterview\n")
    jobs = plan_jobs(root, tmp_path / "out", speakers=read_speakers(tsv))
    assert [(job.video, job.clip, job.speaker, job.audio_path) for job in jobs] == [
        ("spk_x/a.mp4", "spk_x/a", "spk_x", None),
        ("spk_x/b.MOV", "spk_x/b", "S_b+S_c", None),
        ("top.avi", "top", "top", None),
        ("vidtimit/fadg0/video/sa1", "vidtimit/fadg0/video/sa1", "fadg0", str(root / "vidtimit/fadg0/audio/sa1.wav")),
    ]
    assert len({job.shard for job in jobs}) == 4


def test_segment_bounds():
    assert segment_bounds(0, 250) == [(0, 250)]
    assert segment_bounds(10, 261) == [(10, 135), (135, 261)]
    assert segment_bounds(0, 600) == [(0, 200), (200, 400), (400, 600)]
    assert segment_bounds(0, 5) == [(0, 5)]


def test_bad_inputs_raise_media_error(tmp_path, clips):
    with pytest.raises(MediaError, match="no such file"):
        preprocess_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="unknown preset"):
        preprocess_video(clips / "spk_a" / "normal.mp4", preset="huge")
    assert main(["preprocess", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1


def test_shared_example_is_one_long_track():
    path = shared_clip("*data_example.avi")
    record = preprocess_video(path)
    assert len(record.tracks) == 1
    track = record.tracks[0]
    assert track.end - track.start >= 0.95 * record.num_frames
    lengths = [segment.num_frames for segment in record.segments()]
    assert sum(lengths) == track.end - track.start and max(lengths) <= 250 and len(lengths) == 2


def test_beam_pipeline_writes_the_same_layout(clips, tmp_path):
    pytest.importorskip("apache_beam", reason="Apache Beam is an optional extra (pip install -e '.[beam]')")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clips / "spk_a" / "normal.mp4", folder / "normal.mp4")
    shutil.copy(clips / "spk_b" / "corrupt.mp4", folder / "corrupt.mp4")
    summary = preprocess_folder(folder, tmp_path / "out", runner="beam", beam_args=["--runner=DirectRunner"])
    assert summary["videos"] == {"ok": 1, "skipped": 1}
    segment = next(_segments(tmp_path / "out"))
    assert segment.crops.shape == (FRAMES, 112, 112, 1) and segment.clip == "normal"
