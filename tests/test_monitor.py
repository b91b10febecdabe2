"""`syncnet monitor` on real streams: an HLS playlist served over HTTP on loopback (one segment's
audio shifted), a file, a stream that refuses at first, dead and stalled URLs, and Ctrl-C."""

import functools
import http.server
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
from synthetic import speech_envelope, write_clip

from syncnet import cli
from syncnet import hyperparameters as hp
from syncnet.loading import save_model
from syncnet.monitor import RollingOffset, read_chunks
from syncnet.video import load_media

SHIFT = 6  # frames the middle segment's audio is delayed: the monitor must report -SHIFT for it
CLIP_SECONDS = 4


@pytest.fixture(scope="module")
def model_path(trained_tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(trained_tiny_model, path)
    return path


def write_hls(playlist, clips, segment_seconds=2):
    """Decode `clips` one after the other and encode them as one HLS stream (h264 + AAC in MPEG-TS
    segments), timestamps running on across clips."""
    options = {
        "hls_time": str(segment_seconds),
        "hls_playlist_type": "vod",
        "hls_segment_filename": str(playlist.parent / f"{playlist.stem}_%03d.ts"),
    }
    with av.open(str(playlist), "w", format="hls", options=options) as output:
        video = output.add_stream("libx264", rate=hp.VIDEO_FPS, options={"g": str(hp.VIDEO_FPS), "preset": "veryfast"})
        audio = output.add_stream("aac", rate=hp.AUDIO_SAMPLE_RATE, layout="mono")
        medias = [load_media(clip) for clip in clips]
        video.width, video.height = medias[0].width, medias[0].height
        frame_index = 0
        samples = []
        for media in medias:
            for rgb in media.frames():
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = frame_index
                frame_index += 1
                output.mux(video.encode(frame))
            # exactly the clip's length of audio, so the next clip's sound starts with its pictures
            length = media.num_frames * hp.AUDIO_SAMPLE_RATE // hp.VIDEO_FPS
            samples.append(np.pad(media.audio[:length], (0, max(length - len(media.audio), 0))))
        output.mux(video.encode(None))
        sound = np.concatenate(samples)
        for begin in range(0, len(sound), 1024):
            frame = av.AudioFrame.from_ndarray(sound[None, begin : begin + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = hp.AUDIO_SAMPLE_RATE, begin
            output.mux(audio.encode(frame))
        output.mux(audio.encode(None))
    return playlist


@contextmanager
def http_folder(folder, refuse_first=0):
    """Serve `folder` on a loopback port; the first `refuse_first` requests get 503."""
    refused = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if len(refused) < refuse_first:
                refused.append(self.path)
                self.send_error(503, "warming up")
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def live_hls(folder, vod_playlist, publish_at):
    """Serve `vod_playlist`'s segments as a LIVE playlist at /live.m3u8: segment i is listed from
    publish_at[i] seconds on (the first at once), #EXT-X-ENDLIST once all are. Yields the URL."""
    lines = (folder / vod_playlist).read_text().splitlines()
    segments = [(line, lines[index + 1]) for index, line in enumerate(lines) if line.startswith("#EXTINF")]
    header = [line for line in lines if line.startswith(("#EXTM3U", "#EXT-X-VERSION", "#EXT-X-TARGETDURATION"))]
    started = time.monotonic()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/live.m3u8":
                return super().do_GET()
            published = max(1, sum(moment <= time.monotonic() - started for moment in publish_at))
            playlist = header + ["#EXT-X-MEDIA-SEQUENCE:0"] + [line for segment in segments[:published] for line in segment]
            body = "\n".join(playlist + (["#EXT-X-ENDLIST"] if published == len(segments) else [])).encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apple.mpegurl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/live.m3u8"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def hls_folder(tmp_path_factory):
    """stream.m3u8: three 4-s clips, the middle one's audio delayed by SHIFT frames; short.m3u8: one 4-s clip."""
    folder = tmp_path_factory.mktemp("hls")
    clips = [folder / "before.mp4", folder / "shifted.mp4", folder / "after.mp4"]
    write_clip(clips[0], seconds=CLIP_SECONDS, seed=21)
    write_clip(clips[1], seconds=CLIP_SECONDS, seed=22, audio_shift_frames=SHIFT)
    write_clip(clips[2], seconds=CLIP_SECONDS, seed=23)
    write_hls(folder / "stream.m3u8", clips)
    write_hls(folder / "short.m3u8", clips[:1])
    return folder


def monitor(capsys, *args) -> tuple[int, list, str]:
    """`syncnet monitor ... --json` in this process: (exit code, the JSON objects printed, stderr)."""
    code = cli.main(["monitor", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_hls_stream_reports_the_shifted_segment(capsys, model_path, hls_folder):
    with http_folder(hls_folder) as url:
        code, objects, err = monitor(capsys, f"{url}/stream.m3u8", "--model", model_path, "--chunk", CLIP_SECONDS, "--min-confidence", 0)
    assert code == 0, err
    *chunks, summary = objects
    assert [(chunk["chunk"], chunk["start"], chunk["end"]) for chunk in chunks] == [(0, 0, 4), (1, 4, 8), (2, 8, 12)]
    offsets = [chunk["offset_frames"] for chunk in chunks]
    assert abs(offsets[0]) <= 1 and abs(offsets[2]) <= 1, offsets
    assert abs(offsets[1] + SHIFT) <= 1, offsets
    assert chunks[1]["verdict"] == "out of sync"
    assert summary["summary"] and summary["chunks"] == 3 and summary["stream_seconds"] == 12
    assert abs(summary["rolling_offset_frames"]) <= 1  # two in-sync chunks outweigh the shifted one


def test_file_source_and_a_silent_chunk(capsys, model_path, tmp_path):
    clip = tmp_path / "talk_then_silence.mp4"
    write_clip(clip, envelope=np.concatenate([speech_envelope(100, seed=31), np.zeros(100, np.float32)]), seed=31)
    code, objects, err = monitor(capsys, clip, "--model", model_path, "--min-confidence", 0)
    assert code == 0, err
    first, second, summary = objects
    assert first["verdict"] in ("in sync", "out of sync") and abs(first["offset_frames"]) <= 1
    assert second["verdict"] == "silent" and second["offset_frames"] is None
    assert second["rolling_offset_frames"] == first["rolling_offset_frames"] == first["offset_frames"]
    assert summary["verdicts"]["silent"] == 1 and summary["interrupted"] is False


def test_reconnects_to_a_stream_that_refuses_at_first(capsys, model_path, hls_folder):
    with http_folder(hls_folder, refuse_first=2) as url:
        code, objects, err = monitor(capsys, f"{url}/short.m3u8", "--model", model_path, "--chunk", 2, "--retries", 3)
    assert code == 0, err
    assert err.count("reconnecting in") == 2 and "reconnecting in 1 s" in err and "reconnecting in 2 s" in err
    assert [chunk["start"] for chunk in objects[:-1]] == [0, 2]  # the whole stream, from its start


def test_live_stream_that_stalls_is_followed_across_the_stall(capsys, model_path, hls_folder):
    # six 2-s segments: three at once, then nothing for 7 s (the monitor times out after 3 s and
    # reconnects), then the rest and the end of the stream
    with live_hls(hls_folder, "stream.m3u8", publish_at=[0, 0, 0, 7, 7.2, 7.4]) as url:
        code, objects, err = monitor(capsys, url, "--model", model_path, "--chunk", 2, "--timeout", 3, "--retries", 4)
    assert code == 0, err
    *chunks, summary = objects
    # the stall ends the connection one of two ways, by FFmpeg's timing: its HLS reader gives up on
    # the playlist, or our 3 s read time-out interrupts it
    assert re.search(r"(the live stream stopped|no data for 3 s); reconnecting in 1 s", err), err
    starts = [chunk["start"] for chunk in chunks]
    assert starts == sorted(set(starts)) and set(starts) <= {0, 2, 4, 6, 8, 10}  # the stream's own clock: no repeats
    assert len(chunks) + summary["dropped"] == 6 and starts[-1] == 10  # every chunk scored or skipped to keep up


def test_unreachable_url_gives_one_line_and_fails(capsys, model_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    code, objects, err = monitor(capsys, f"http://127.0.0.1:{port}/live.m3u8", "--model", model_path, "--retries", 1, "--timeout", 2)
    assert code == 1
    assert time.monotonic() - began < 20
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "gave up after 1 retry" in errors[0] and "Traceback" not in err
    assert objects[-1]["summary"] and objects[-1]["chunks"] == 0


def test_stalled_server_times_out(capsys, model_path):
    with socket.socket() as listener:  # accepts connections (the kernel does) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/live.m3u8"
        began = time.monotonic()
        code, _, err = monitor(capsys, url, "--model", model_path, "--retries", 1, "--timeout", 1)
    assert code == 1
    assert time.monotonic() - began < 20
    assert "reconnecting in 1 s" in err and "gave up after 1 retry" in err


def test_ctrl_c_prints_a_summary_and_exits_0(model_path, hls_folder):
    with http_folder(hls_folder) as url:
        command = [
            sys.executable,
            "-m",
            "syncnet.cli",
            "monitor",
            f"{url}/stream.m3u8",
            "--model",
            str(model_path),
            "--chunk",
            "2",
            "--json",
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = json.loads(process.stdout.readline())  # scoring has begun
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert first["chunk"] == 0 and summary["interrupted"] is True and 1 <= summary["chunks"] < 6


def test_rolling_offset_is_a_confidence_weighted_median():
    rolling = RollingOffset(window=3)
    assert rolling.offset_frames is None
    rolling.add(0, 3.0)
    rolling.add(-6, 1.0)
    assert rolling.offset_frames == 0  # one weak outlier does not move it
    rolling.add(-6, 2.5)
    assert rolling.offset_frames == -6  # 3.5 of 6.5 is more than half
    rolling.add(-6, 0.5)  # the window holds the last 3: the 0 has left
    assert rolling.offset_frames == -6


SHARED_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"
DELAYED_12 = SHARED_CLIPS / "R-V-Abhishek__Syncnet_FCN__demo_output_test_offset_12.avi"


@pytest.mark.skipif(not DELAYED_12.exists(), reason=f"needs the shared clip {DELAYED_12} (../shared/data is absent)")
def test_the_shipped_expert_reports_a_12_frame_delay_out_of_sync(capsys):
    # the clip's audio is 12 frames (480 ms) behind syncnet_python's demo, itself 4 frames off for
    # this expert: -8 in every 4 s chunk, which must read as out of sync with the shipped calibration
    code, objects, err = monitor(capsys, DELAYED_12)
    assert code == 0, err
    *chunks, summary = objects
    assert len(chunks) == 3 and all(chunk["offset_frames"] == -8 for chunk in chunks), chunks
    assert all(chunk["verdict"] == "out of sync" for chunk in chunks), [chunk["verdict_reason"] for chunk in chunks]
    assert all("P(tampered)" in chunk["verdict_reason"] and "beats chance" in chunk["verdict_reason"] for chunk in chunks)
    assert all(chunk["tampered"] is not None and chunk["windows"] == 95 for chunk in chunks)
    assert summary["rolling_offset_frames"] == -8 and summary["verdicts"]["out of sync"] == 3


def test_a_file_streamed_is_the_file_loaded_whole(tmp_path):
    # the audio starts 0.3 s before the video: both readers start the timeline at the first frame
    clip = tmp_path / "late_video.mp4"
    write_clip(clip, seconds=3, video_start_seconds=0.3, seed=41)
    media = load_media(clip)
    (chunk,) = read_chunks(str(clip), chunk_seconds=media.duration)
    assert chunk.num_frames == media.num_frames and chunk.start == 0
    length = min(len(chunk.audio), len(media.audio))
    assert length >= media.num_frames * hp.SAMPLES_PER_FRAME - hp.SAMPLES_PER_FRAME
    np.testing.assert_array_equal(chunk.audio[:length], media.audio[:length])
    for streamed, whole in zip(chunk.frames(gray=True), media.frames(gray=True)):
        np.testing.assert_array_equal(streamed, whole)


def test_bad_files_get_the_words_score_uses(capsys, tmp_path, model_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    code, _, err = monitor(capsys, text, "--model", model_path)
    assert code == 1 and "not a media file, or corrupt or truncated" in err, err
    code, _, err = monitor(capsys, tmp_path / "missing.mp4", "--model", model_path)
    assert code == 1 and "no such file" in err, err


def test_the_chance_bar_scales_with_the_evidence():
    from syncnet.calibration import CHANCE_LSE_C, CHANCE_WINDOWS, offset_beats_chance

    just_above = CHANCE_LSE_C * 1.01
    assert offset_beats_chance(just_above, CHANCE_WINDOWS, calibrated=True, placeholder=1.5)[0]
    # a quarter of the windows needs twice the LSE-C
    assert not offset_beats_chance(just_above, CHANCE_WINDOWS // 4, calibrated=True, placeholder=1.5)[0]
    assert offset_beats_chance(2.1 * CHANCE_LSE_C, CHANCE_WINDOWS // 4, calibrated=True, placeholder=1.5)[0]
    # a calibration's own chance bar replaces the constant
    assert not offset_beats_chance(just_above, CHANCE_WINDOWS, calibrated=True, placeholder=1.5, chance=2 * CHANCE_LSE_C)[0]
    beats, reason = offset_beats_chance(1.0, 10, calibrated=False, placeholder=1.5)
    assert not beats and reason == "LSE-C 1.00 <= 1.5"
