"""syncnet.fixing: the audio moves by the offset, the video packets do not change, the input is safe.

Sign convention: offset > 0 means the audio leads the video, and fixing delays the audio by `offset`
frames. A clip written with its audio delayed by k frames scores at offset -k, so fixing advances it
by k frames.
"""

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from shared_data import shared_clip
from synthetic import write_clip

from syncnet import hyperparameters as hp
from syncnet.fixing import fix_video, shift_audio
from syncnet.scoring import score_video
from syncnet.video import MediaError, load_media

REPO = Path(__file__).resolve().parents[1]
TEST_SEED = 6  # held-out speech for the trained tiny model


def video_packets(path):
    """(pts, dts, is_keyframe, bytes) of every video packet, in file order."""
    with av.open(str(path)) as container:
        return [(packet.pts, packet.dts, packet.is_keyframe, bytes(packet)) for packet in container.demux(video=0) if packet.size]


@pytest.mark.parametrize("suffix, delay", [(".mp4", 3), (".avi", -4)])
def test_fix_restores_sync_and_copies_the_video_packets_unchanged(trained_tiny_model, tmp_path, suffix, delay):
    clip = tmp_path / f"delayed{suffix}"
    write_clip(clip, seconds=3.0, seed=TEST_SEED, audio_shift_frames=delay)
    fixed = tmp_path / f"fixed{suffix}"

    applied = fix_video(clip, fixed, model=trained_tiny_model)

    assert applied == -delay  # detected, then the audio moved back by as much
    rescored = score_video(fixed, trained_tiny_model)
    assert rescored.status == "ok" and rescored.offset_frames == 0
    assert video_packets(fixed) == video_packets(clip)
    original, repaired = load_media(clip), load_media(fixed)
    assert repaired.num_frames == original.num_frames
    assert abs(len(repaired.audio) - len(original.audio)) <= 1024  # one AAC frame of encoder padding at most
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([clip.name, fixed.name])  # no temp file left


@pytest.mark.parametrize("offset", [5, -3, 0])
def test_explicit_offset_shifts_pcm_audio_by_exactly_that_many_frames(tmp_path, offset):
    clip = tmp_path / "clip.avi"  # PCM audio: the shift is the only change
    write_clip(clip, seconds=2.0, seed=TEST_SEED)
    fixed = tmp_path / "fixed.avi"
    shift_audio(clip, fixed, offset)

    before, after = load_media(clip).audio, load_media(fixed).audio
    assert len(after) == len(before)
    shift = abs(offset) * hp.SAMPLES_PER_FRAME
    if offset >= 0:  # delayed: silence, then the audio from its start
        expected = np.concatenate([np.zeros(shift, np.float32), before[: len(before) - shift]])
    else:  # advanced: the audio from `shift` on, then silence
        expected = np.concatenate([before[shift:], np.zeros(shift, np.float32)])
    np.testing.assert_allclose(after, expected, atol=2 / 32768)  # 16-bit PCM rounding
    assert video_packets(fixed) == video_packets(clip)


def remux(source, target):
    """Copy every stream of `source` into another container, packet for packet."""
    with av.open(str(source)) as reader, av.open(str(target), mode="w") as writer:
        streams = {stream.index: writer.add_stream_from_template(stream) for stream in reader.streams}
        for packet in reader.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                writer.mux(packet)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
@pytest.mark.parametrize("offset", [4, -2])
def test_in_every_container_the_audio_moves_by_the_offset_and_the_video_stays(tmp_path, suffix, offset):
    clip = tmp_path / f"clip{suffix}"
    if suffix == ".mkv":  # write_clip makes .mp4 and .avi; Matroska has pts-only video packets
        write_clip(tmp_path / "source.mp4", seconds=2.0, seed=TEST_SEED)
        remux(tmp_path / "source.mp4", clip)
    else:
        write_clip(clip, seconds=2.0, seed=TEST_SEED)
    fixed = tmp_path / f"fixed{suffix}"
    shift_audio(clip, fixed, offset)
    assert video_packets(fixed) == video_packets(clip)
    assert audio_lag(load_media(fixed).audio, load_media(clip).audio) == offset * hp.SAMPLES_PER_FRAME


def test_refuses_to_overwrite_its_input_by_any_path(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=1.0)
    original = clip.read_bytes()
    (tmp_path / "sub").mkdir()
    os.symlink(clip, tmp_path / "link.mp4")
    os.link(clip, tmp_path / "hardlink.mp4")
    for same_file in (clip, tmp_path / "sub" / ".." / "clip.mp4", tmp_path / "link.mp4", tmp_path / "hardlink.mp4"):
        with pytest.raises(ValueError, match="is the input video"):
            shift_audio(clip, same_file, 2)
    assert clip.read_bytes() == original


def test_bad_requests_fail_with_one_line_and_leave_no_files(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=1.0)
    mute = tmp_path / "mute.mp4"
    write_clip(mute, seconds=1.0, with_audio=False)
    with pytest.raises(ValueError, match="keep the input's container"):
        shift_audio(clip, tmp_path / "out.mkv", 1)
    with pytest.raises(MediaError, match="no audio track"):
        shift_audio(mute, tmp_path / "out.mp4", 1)
    with pytest.raises(MediaError, match="no such file"):
        shift_audio(tmp_path / "missing.mp4", tmp_path / "out.mp4", 1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4", "mute.mp4"]  # no temp, no output


def run_cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "syncnet.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_cli_fix_with_offset_and_refusal(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=1.0)
    run = run_cli("fix", clip, "-o", tmp_path / "fixed.mp4", "--offset", "-2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "advanced by 2 frames" in run.stdout and (tmp_path / "fixed.mp4").is_file()

    run = run_cli("fix", clip, "-o", clip, "--offset", "1", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("syncnet fix: error:") and "is the input video" in run.stderr


def test_fixing_a_real_clip_moves_its_audio_by_exactly_the_offset(tmp_path):
    # The shared *offset_12.avi is *offset_0.avi with its audio delayed by 12 frames and re-encoded as
    # MP3, whose 1105 priming samples delay it a little more: advancing it 12 frames leaves just those.
    delayed, reference = shared_clip("*demo_output_test_offset_12.avi"), shared_clip("*demo_output_test_offset_0.avi")
    fixed = tmp_path / "fixed.avi"
    shift_audio(delayed, fixed, -12)
    assert video_packets(fixed) == video_packets(delayed)
    lag_before = audio_lag(load_media(delayed).audio, load_media(reference).audio)
    lag_after = audio_lag(load_media(fixed).audio, load_media(reference).audio)
    assert lag_before == 12 * hp.SAMPLES_PER_FRAME + 1105
    assert lag_after == lag_before - 12 * hp.SAMPLES_PER_FRAME


def audio_lag(audio, reference) -> int:
    """Samples by which `audio` is late against `reference` (peak of the cross-correlation)."""
    length = min(len(audio), len(reference))
    a, b = audio[:length] - audio[:length].mean(), reference[:length] - reference[:length].mean()
    spectrum = np.fft.rfft(a, 2 * length) * np.conj(np.fft.rfft(b, 2 * length))
    correlation = np.fft.irfft(spectrum)
    lag = int(np.argmax(correlation))
    return lag if lag < length else lag - 2 * length
