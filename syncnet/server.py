"""`syncnet serve`: a web page and a REST API that score uploaded videos.

    syncnet serve [--host 127.0.0.1] [--port 8000] [--model NAME_OR_PATH] [--max-upload-mb 200] [--queue 4]

- `POST /v1/score`, multipart/form-data with a file field `video` and optionally `audio` (a separate
  track, e.g. a .wav): the object `syncnet score --json` prints, from the same `scoring.score_video`,
  plus `id` and `plot` (the URL of `GET /v1/score/{id}/plot.png`). 200 when scored; 422 with the same
  object (status "error") when the video cannot be scored (no audio, no face, silent, too short).
- `GET /` the upload page, `GET /healthz`, OpenAPI at `/docs` and `/openapi.json`.
- Every other failure is `{"status": "error", "error": reason}`: 400 a malformed form, 413 an upload
  over --max-upload-mb, 415 a file that is not a video (or an `audio` without sound), 429 while
  --queue uploads are already in the service, with `Retry-After`: the median seconds the last
  uploads took.

How it keeps a small machine safe: the model is loaded once; one worker thread scores, so the event
loop keeps answering (health checks, 429s) while TensorFlow and dlib hold the CPU; a job holds its
queue place from the first byte of its upload to its answer, so --queue bounds the disk and memory in
use as well as the waiting; the body is streamed to disk and counted as it arrives (a Content-Length
over the limit is refused before a byte is read); files live in a private folder (mkdtemp, 0700),
under names the server makes up, and are deleted when the job ends; the content decides what a file
is (FFmpeg probes it; the client's file name and MIME type are only echoed back in `video`).
"""

import asyncio
import io
import math
import os
import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path, PurePosixPath

from .errors import UserError, install_hint

PLOTS_KEPT = 32  # finished jobs whose plot stays fetchable (about 50 KB each)
UPLOAD_FIELDS = ("video", "audio")
NAME_SHOWN_MAX = 200  # characters of the client's file name echoed back
RECENT_JOBS = 16  # uploads whose wall time sets a 429's Retry-After
DEFAULT_JOB_SECONDS = 10.0  # the guess before any upload has been timed: a 10 s clip on 2 cores

SCORE_REQUEST_BODY = {  # POST /v1/score reads its body itself (streaming); this tells OpenAPI what it takes
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["video"],
                "properties": {
                    "video": {"type": "string", "format": "binary", "description": "a video with a face (and its sound)"},
                    "audio": {"type": "string", "format": "binary", "description": "optional: score against this audio instead"},
                },
            }
        }
    },
}


class Rejected(Exception):
    """A request the service refuses: HTTP status, a one-line reason for the client, and headers."""

    def __init__(self, status: int, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class ScoringService:
    """The model, the scoring thread, the queue count, the upload folder and the recent plots."""

    def __init__(self, model, model_name: str, *, max_upload_bytes: int, queue: int):
        if queue < 1:
            raise UserError(f"--queue must be at least 1, got {queue}")
        if max_upload_bytes < 1:
            raise UserError("--max-upload-mb must be positive")
        self.model = model
        self.model_name = model_name
        self.max_upload_bytes = max_upload_bytes
        self.queue = queue
        self.jobs = 0  # uploads in the service (receiving, waiting or scoring); only the event loop touches it
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncnet-score")
        self.upload_dir = None  # made at start-up, removed at shutdown
        self.plots = OrderedDict()  # job id -> PNG bytes, the last PLOTS_KEPT
        self.recent_seconds = deque([DEFAULT_JOB_SECONDS], maxlen=RECENT_JOBS)  # wall time of the last uploads

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the median time the recent uploads took."""
        return max(1, math.ceil(statistics.median(self.recent_seconds)))

    def start(self):
        self.upload_dir = Path(tempfile.mkdtemp(prefix="syncnet-serve-"))  # mode 0700

    def stop(self):
        self.worker.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.upload_dir, ignore_errors=True)

    async def score_upload(self, request) -> tuple[int, dict]:
        """Receive, check and score one upload: (HTTP status, JSON body). Raises Rejected."""
        if self.jobs >= self.queue:
            wait = self.retry_after()
            raise Rejected(
                429,
                f"busy: {self.jobs} uploads are being handled (--queue {self.queue}); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        self.jobs += 1
        began = time.monotonic()
        job_id = uuid.uuid4().hex
        job_dir = self.upload_dir / job_id
        job_dir.mkdir(mode=0o700)
        try:
            uploads = await receive_upload(request, job_dir, self.max_upload_bytes)
            if "video" not in uploads:
                raise Rejected(400, "the form has no `video` file, or it is empty")
            for field, (path, _) in uploads.items():
                problem = await asyncio.to_thread(sniff_media, path, field)
                if problem:
                    raise Rejected(415, f"{field}: {problem}")
            loop = asyncio.get_running_loop()
            result, png = await loop.run_in_executor(self.worker, self.score, uploads)
            self.recent_seconds.append(time.monotonic() - began)  # scored uploads only: a refusal is quick
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
            self.jobs -= 1

        body = {**result.to_dict(), "id": job_id, "plot": None}
        if png is not None:
            self.plots[job_id] = png
            while len(self.plots) > PLOTS_KEPT:
                self.plots.popitem(last=False)
            body["plot"] = f"/v1/score/{job_id}/plot.png"
        return (200 if result.status == "ok" else 422), body

    def score(self, uploads) -> tuple:
        """On the worker thread: scoring.score_video, then the plot. The client sees its own file
        names, never the server's paths."""
        from .scoring import plot_result, score_video

        video, video_name = uploads["video"]
        audio, audio_name = uploads.get("audio", (None, None))
        result = score_video(video, self.model, audio_path=audio)
        result.video, result.model = video_name, self.model_name
        if result.error:
            result.error = result.error.replace(str(video), video_name)
            if audio is not None:
                result.error = result.error.replace(str(audio), audio_name)
        if result.status != "ok":
            return result, None
        png = io.BytesIO()
        plot_result(result, png)
        return result, png.getvalue()


async def receive_upload(request, folder: Path, max_bytes: int) -> dict:
    """Stream a multipart body into `folder`, counting bytes as they arrive: {field: (path, client's
    file name)} for the file fields `video` and `audio`. The files are named after their field; the
    client's names are only kept as text."""
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise Rejected(413, f"upload of {int(length) / 1e6:.1f} MB is over the {max_bytes / 1e6:g} MB limit")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise Rejected(415, "send multipart/form-data with a `video` file field (and optionally `audio`)")

    uploads = {}
    part = {"headers": {}, "name": b"", "value": b"", "file": None}

    def on_header_field(data, start, end):
        part["name"] += data[start:end]

    def on_header_value(data, start, end):
        part["value"] += data[start:end]

    def on_header_end():
        part["headers"][part["name"].lower()] = part["value"]
        part["name"], part["value"] = b"", b""

    def on_headers_finished():
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        field = disposition.get(b"name", b"").decode("utf-8", "replace")
        if field not in UPLOAD_FIELDS or b"filename" not in disposition:
            raise Rejected(400, f"unexpected form field {field[:40]!r}: send the files `video` and optionally `audio`")
        if field in uploads:
            raise Rejected(400, f"more than one `{field}` file")
        path = folder / field
        # the write is synchronous: the body arrives in chunks of ~64 KB, each a page-cache copy
        part["file"] = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        uploads[field] = (path, shown_name(disposition[b"filename"].decode("utf-8", "replace"), field))

    def on_part_data(data, start, end):
        part["file"].write(data[start:end])

    def on_part_end():
        part["file"].close()
        part.update(headers={}, file=None)

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise Rejected(413, f"upload is over the {max_bytes / 1e6:g} MB limit")
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:
        raise Rejected(400, "the client went away during the upload") from None
    except ValueError as error:  # python-multipart's MultipartParseError
        raise Rejected(400, f"malformed multipart body: {error}") from None
    finally:
        if part["file"] is not None:
            part["file"].close()
    # a form whose file input was left blank sends an empty part with no file name
    return {field: upload for field, upload in uploads.items() if upload[0].stat().st_size > 0}


def shown_name(filename: str, default: str) -> str:
    """The client's file name as text to echo back: its last component, printable, bounded."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    name = "".join(character for character in name if character.isprintable())[:NAME_SHOWN_MAX]
    return name or default


def sniff_media(path: Path, field: str) -> str | None:
    """Why FFmpeg, probing the bytes (the file has no extension to go by), says this is not a video
    (field "video") or not a sound (field "audio"); None when it is."""
    import av

    from .video import is_still_image

    try:
        with av.open(str(path)) as container:
            still_image = is_still_image(container)
            has_video, has_audio = bool(container.streams.video), bool(container.streams.audio)
    except av.FFmpegError:
        return "not a video or audio file FFmpeg can read"
    if still_image:
        return "a still image, not a video"
    if field == "video" and not has_video:
        return "has no video track"
    if field == "audio" and not has_audio:
        return "has no audio track"
    return None


def create_app(service: ScoringService):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    from .errors import one_line

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="syncnet", summary="Lip-sync scoring: audio-video offset, LSE-D, LSE-C", lifespan=lifespan)

    def error(status: int, reason: str, headers: dict | None = None):
        return JSONResponse({"status": "error", "error": reason}, status_code=status, headers=headers)

    @app.exception_handler(Rejected)
    async def rejected(request, exception: Rejected):
        return error(exception.status, exception.reason, exception.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exception: HTTPException):
        return error(exception.status_code, str(exception.detail))

    @app.exception_handler(Exception)
    async def bug(request, exception: Exception):  # still logged with its traceback by the server
        return error(500, f"internal error: {type(exception).__name__}: {one_line(exception)}")

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exception: RequestValidationError):
        return error(422, "; ".join(str(item.get("msg", item)) for item in exception.errors()) or "invalid request")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("syncnet").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": service.model_name, "jobs": service.jobs, "queue": service.queue}

    @app.post("/v1/score", openapi_extra={"requestBody": SCORE_REQUEST_BODY})
    async def score(request: Request):
        """Score one video (multipart field `video`, optional `audio`): the `syncnet score --json`
        object plus `id` and `plot`."""
        status, body = await service.score_upload(request)
        return JSONResponse(body, status_code=status)

    @app.get("/v1/score/{job_id}/plot.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def plot(job_id: str):
        png = service.plots.get(job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
        if png is None:
            raise Rejected(404, f"no plot for job {job_id[:40]!r} (unknown, failed, or one of more than the last {PLOTS_KEPT})")
        return Response(png, media_type="image/png")

    return app


# --- Command line -----------------------------------------------------------------------------


def configure_parser(parser):
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default %(default)s")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH", help="a .keras SyncNet (default: the shipped expert)")
    parser.add_argument("--max-upload-mb", type=float, default=200, help="largest request body, MB (default %(default)s)")
    parser.add_argument(
        "--queue", type=int, default=4, help="uploads handled at once (receiving, waiting or scoring); more get 429 (default %(default)s)"
    )


def run_command(args) -> int:
    try:
        import fastapi  # noqa: F401  (the `serve` extra)
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(f"syncnet serve needs FastAPI and uvicorn: {install_hint('serve', 'fastapi uvicorn python-multipart')}") from None
    from .loading import load_model

    model = load_model(args.model)  # once: every job shares it
    service = ScoringService(model, args.model or "default", max_upload_bytes=int(args.max_upload_mb * 1e6), queue=args.queue)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="info")
    return 0
