"""`syncnet serve` as a client sees it: a real server process on loopback, real uploads over HTTP.

The server runs with a 1 MB upload limit and a queue of 1, so the 413 and 429 paths are reachable
with small files; TMPDIR points into the test's folder so the upload folder can be inspected.
"""

import json
import os
import select
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import wave
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="syncnet serve needs the `serve` extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("uvicorn", reason="syncnet serve needs the `serve` extra (fastapi, uvicorn, python-multipart)")

from synthetic import speech_audio, write_clip  # noqa: E402

from syncnet.loading import save_model  # noqa: E402

CONTRACT_KEYS = {
    "video",
    "status",
    "error",
    "offset_frames",
    "offset_seconds",
    "min_dist",
    "confidence",
    "sync_probability",
    "in_sync",
    "verdict_reason",
    "frames",
    "face_tracks",
    "model",
    "tracks",
}
START_TIMEOUT = 180  # s: the server imports TensorFlow and loads the model first
REQUEST_TIMEOUT = 120


# --- A server process and a client (test_browser.py and bench/bench_server.py use them too) ----


@contextmanager
def running_server(model_path, tmp_dir, *options):
    """`python -m syncnet.cli serve` on a free loopback port, with TMPDIR=tmp_dir; yields its base URL
    once /healthz answers, and stops it (SIGTERM, then SIGKILL) afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = Path(tmp_dir) / "server.log"
    env = {**os.environ, "TMPDIR": str(tmp_dir)}
    command = [sys.executable, "-m", "syncnet.cli", "serve", "--port", str(port), "--model", str(model_path), *options]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"syncnet serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"syncnet serve did not answer /healthz in {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def multipart_body(files: dict) -> tuple[bytes, str]:
    """files: {field: (file name, bytes)} -> (body, Content-Type header)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for field, (name, data) in files.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_files(url, files: dict, timeout=REQUEST_TIMEOUT) -> tuple[int, dict]:
    """POST a multipart form to `url`: (HTTP status, decoded JSON body)."""
    body, content_type = multipart_body(files)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def get(url, timeout=REQUEST_TIMEOUT) -> tuple[int, str, bytes]:
    """(status, Content-Type, body), for errors too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


# --- Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_path(trained_tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(trained_tiny_model, path)
    return path


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    tmp_dir = tmp_path_factory.mktemp("server_tmp")
    with running_server(model_path, tmp_dir, "--max-upload-mb", "1", "--queue", "1") as (url, _):
        (upload_dir,) = tmp_dir.glob("syncnet-serve-*")
        yield url, upload_dir


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """An in-sync clip, the same clip without its audio track, and that audio as a WAV."""
    folder = tmp_path_factory.mktemp("clips")
    envelope = write_clip(folder / "talking.mp4", seconds=3, seed=7)
    write_clip(folder / "mute.mp4", envelope=envelope, seed=7, with_audio=False)
    samples = (speech_audio(envelope, seed=7) * 32767).astype(np.int16)
    with wave.open(str(folder / "speech.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples.tobytes())
    return folder


def upload_dir_is_empty(upload_dir, timeout=10.0) -> bool:
    """Jobs remove their files before they answer; a dropped connection's cleanup may lag a moment."""
    deadline = time.monotonic() + timeout
    while any(upload_dir.iterdir()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --- Tests ------------------------------------------------------------------------------------


def test_scores_an_upload_and_serves_its_plot(server, clips):
    url, upload_dir = server
    status, result = post_files(f"{url}/v1/score", {"video": ("talking.mp4", (clips / "talking.mp4").read_bytes())})
    assert status == 200, result
    assert CONTRACT_KEYS <= result.keys()
    assert result["status"] == "ok" and result["error"] is None
    assert result["video"] == "talking.mp4"  # the client's name, not the server's file
    assert result["face_tracks"] == 1 and result["frames"] == 75
    assert isinstance(result["offset_frames"], int) and abs(result["offset_frames"]) <= 1  # a trained model, an in-sync clip

    status, content_type, png = get(f"{url}{result['plot']}")
    assert status == 200 and content_type == "image/png"
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert upload_dir_is_empty(upload_dir)


def test_separate_audio_track(server, clips):
    url, upload_dir = server
    files = {"video": ("mute.mp4", (clips / "mute.mp4").read_bytes()), "audio": ("speech.wav", (clips / "speech.wav").read_bytes())}
    status, result = post_files(f"{url}/v1/score", files)
    assert status == 200, result
    assert result["status"] == "ok" and abs(result["offset_frames"]) <= 1
    assert upload_dir_is_empty(upload_dir)


def test_video_without_audio_is_an_error_result(server, clips):
    url, upload_dir = server
    status, result = post_files(f"{url}/v1/score", {"video": ("mute.mp4", (clips / "mute.mp4").read_bytes())})
    assert status == 422
    assert CONTRACT_KEYS <= result.keys()
    assert result["status"] == "error" and "no audio" in result["error"]
    assert result["error"].startswith("mute.mp4:") and "syncnet-serve" not in result["error"]  # no server paths
    assert result["plot"] is None
    assert upload_dir_is_empty(upload_dir)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("notes.mp4", b"this is a text file, whatever its name says\n" * 50, "not a video or audio file"),
        ("face.mp4", (Path(__file__).parent / "data" / "face.png").read_bytes(), "still image"),
        ("speech.mp4", None, "no video track"),  # a WAV under a video's name
    ],
)
def test_non_video_is_415(server, clips, name, content, reason):
    url, upload_dir = server
    content = (clips / "speech.wav").read_bytes() if content is None else content
    status, result = post_files(f"{url}/v1/score", {"video": (name, content)})
    assert status == 415
    assert result["status"] == "error" and reason in result["error"]
    assert upload_dir_is_empty(upload_dir)


def test_oversize_upload_is_413_before_and_while_streaming(server):
    url, upload_dir = server
    host, port = url.removeprefix("http://").split(":")
    # Content-Length over the limit: refused from the headers alone (the body is never sent)
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT) as connection:
        connection.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n"
        )
        assert read_status(connection) == 413

    # No length given (chunked): counted as it arrives and cut off past the limit, long before the
    # 50 MB this client would send
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT) as connection:
        connection.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunks = [b'--x\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n\r\n']
        chunks += [bytes(65536)] * (50_000_000 // 65536)
        sent = 0
        for chunk in chunks:
            if select.select([connection], [], [], 0)[0]:
                break  # the server answered early
            try:
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        assert read_status(connection) == 413
        assert sent < 20_000_000
    assert upload_dir_is_empty(upload_dir)


def read_status(connection) -> int:
    """The status code of the HTTP response arriving on a raw socket."""
    head = b""
    while b"\r\n" not in head:
        data = connection.recv(4096)
        if not data:
            raise AssertionError(f"connection closed before a status line: {head!r}")
        head += data
    return int(head.split(b" ", 2)[1])


def test_full_queue_is_429(server, clips):
    url, upload_dir = server
    host, port = url.removeprefix("http://").split(":")
    # The queue (1) holds an upload from its first byte: a client that is still sending fills it.
    with socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT) as slow_client:
        slow_client.sendall(
            b"POST /v1/score HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b'Content-Length: 500000\r\n\r\n--x\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\n\r\n'
        )
        deadline = time.monotonic() + 10
        while json.loads(get(f"{url}/healthz")[2])["jobs"] != 1:
            assert time.monotonic() < deadline, "the slow upload never entered the queue"
            time.sleep(0.05)
        body, content_type = multipart_body({"video": ("talking.mp4", (clips / "talking.mp4").read_bytes())})
        request = urllib.request.Request(f"{url}/v1/score", data=body, headers={"Content-Type": content_type}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT)
        with refused.value as response:
            assert response.code == 429
            assert int(response.headers["Retry-After"]) >= 1
            result = json.load(response)
        assert result["status"] == "error" and "busy" in result["error"]
        assert f"retry in {response.headers['Retry-After']} s" in result["error"]
    # the slow client went away: its place and its partial file are freed
    deadline = time.monotonic() + 10
    while json.loads(get(f"{url}/healthz")[2])["jobs"] != 0:
        assert time.monotonic() < deadline, "the dropped upload still holds the queue"
        time.sleep(0.05)
    assert upload_dir_is_empty(upload_dir)


def test_client_paths_never_reach_the_file_system(server, clips):
    url, upload_dir = server
    status, result = post_files(f"{url}/v1/score", {"video": ("../../../escape.mp4", (clips / "talking.mp4").read_bytes())})
    assert status == 200 and result["video"] == "escape.mp4"
    assert stat.S_IMODE(upload_dir.stat().st_mode) == 0o700
    server_tmp = upload_dir.parent  # the server's TMPDIR (TensorFlow's autograph writes there too)
    assert not list(server_tmp.parent.rglob("escape.mp4"))  # not where the name points, nor anywhere else
    assert upload_dir_is_empty(upload_dir)


def test_errors_are_json(server):
    url, _ = server
    for path, code in (("/v1/score/0123/plot.png", 404), (f"/v1/score/{uuid.uuid4().hex}/plot.png", 404), ("/nowhere", 404)):
        status, content_type, body = get(f"{url}{path}")
        assert (status, content_type) == (code, "application/json")
        assert json.loads(body)["status"] == "error"
    status, result = post_files(f"{url}/v1/score", {"picture": ("a.mp4", b"x")})
    assert status == 400 and "unexpected form field" in result["error"]


def test_page_health_and_openapi(server):
    url, _ = server
    status, content_type, page = get(f"{url}/")
    assert status == 200 and content_type.startswith("text/html")
    assert b'name="video"' in page and b'name="audio"' in page
    health = json.loads(get(f"{url}/healthz")[2])
    assert health["status"] == "ok" and health["queue"] == 1
    api = json.loads(get(f"{url}/openapi.json")[2])
    assert "multipart/form-data" in api["paths"]["/v1/score"]["post"]["requestBody"]["content"]
