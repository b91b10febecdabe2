"""syncnet.video: 25 fps by timestamps, audio on the video's timeline, clear errors - on real encoded files."""

import inspect
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from synthetic import FACE_PNG, speech_audio, speech_envelope, write_clip, write_frames

from syncnet import hyperparameters as hp
from syncnet.video import MediaError, is_silent, load_audio, load_media

SHARED_DATA = Path(os.environ.get("SYNCNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))

# --- Frames that show their own index: 8 vertical bars, bar b white when bit b is set ---------


def index_frame(index, width=128, height=48):
    bits = (index >> np.arange(8)) & 1
    return np.repeat(np.repeat(bits * 255, width // 8)[None, :, None], height, axis=0).repeat(3, axis=2).astype(np.uint8)


def read_index(frame):
    bars = frame.reshape(frame.shape[0], 8, -1, 3).mean(axis=(0, 2, 3))
    return int(((bars > 128) << np.arange(8)).sum())


def write_index_clip(path, fps, num_frames):
    write_frames(path, (index_frame(i) for i in range(num_frames)), fps=fps, audio=np.zeros(16000 * 4, np.float32))


def ffmpeg_fps_filter_indices(path):
    """The source indices FFmpeg's own `fps=25` filter picks, run through PyAV's filter graph."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        graph = av.filter.Graph()
        source, fps, sink = graph.add_buffer(template=video), graph.add("fps", "fps=25"), graph.add("buffersink")
        source.link_to(fps)
        fps.link_to(sink)
        graph.configure()
        indices = []
        for frame in [*container.decode(video), None]:
            graph.push(frame)
            while True:
                try:
                    indices.append(read_index(graph.pull().to_ndarray(format="rgb24")))
                except (av.BlockingIOError, av.EOFError):
                    break
    return indices


@pytest.mark.parametrize("source_fps", [30, 50, Fraction(30000, 1001), 25])
def test_resamples_to_25_fps_by_timestamps_like_ffmpeg(tmp_path, source_fps):
    path = tmp_path / "index.mp4"
    num_source = round(2 * source_fps)  # 2 s
    write_index_clip(path, source_fps, num_source)

    media = load_media(path)
    picked = [read_index(frame) for frame in media.frames()]

    # slot k shows the latest source frame i with round(25 i / fps) <= k (round half up)
    slot = [int(Fraction(25 * i) / Fraction(source_fps) + Fraction(1, 2)) for i in range(num_source)]
    expected = [max(i for i in range(num_source) if slot[i] <= k) for k in range(50)]
    assert media.num_frames == 50
    assert picked == expected
    assert picked == ffmpeg_fps_filter_indices(path)
    assert media.source_fps == pytest.approx(float(source_fps), rel=1e-3)
    if source_fps == 25:
        assert picked == list(range(50))


def test_frames_streams_and_seeks(tmp_path):
    path = tmp_path / "index.mp4"
    write_index_clip(path, 30, 90)
    media = load_media(path)

    frames = media.frames()
    assert inspect.isgenerator(frames)
    first = [read_index(frame) for frame in frames]
    second = [read_index(frame) for frame in media.frames()]
    assert first == second and len(first) == media.num_frames == 75
    assert [read_index(frame) for frame in media.frames(40, 50)] == first[40:50]  # via a seek
    assert [read_index(frame) for frame in media.frames(70, 1000)] == first[70:]
    assert list(media.frames(75)) == []
    frame = next(media.frames(3))
    assert frame.dtype == np.uint8 and frame.shape == (media.height, media.width, 3) == (48, 128, 3)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of RGB frames, what a grayscale conversion of the decoded RGB gives."""
    return rgb.astype(float) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("pixel_format", ["yuv420p", "yuvj420p", "yuv444p", "rgb24"])
def test_gray_frames_are_the_luma_of_the_rgb_frames(tmp_path, pixel_format):
    """gray=True reads the Y plane of 8-bit YUV video (range-expanded when it is limited range), or
    lets FFmpeg convert other formats: either way the luma of the RGB frames, to within rounding."""
    portrait = np.asarray(Image.open(FACE_PNG).convert("RGB").resize((96, 64)))
    path = tmp_path / "portrait.mkv"
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264rgb" if pixel_format == "rgb24" else "libx264", rate=25, options={"crf": "12"})
        video.width, video.height, video.pix_fmt = 96, 64, pixel_format
        for shift in range(10):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.roll(portrait, shift, axis=1), format="rgb24")))
        container.mux(video.encode(None))
    write_wav(tmp_path / "audio.wav", speech_audio(speech_envelope(10))[:, None], 16000)

    media = load_media(path, tmp_path / "audio.wav")
    for rgb, gray in zip(media.frames(), media.frames(gray=True), strict=True):
        assert gray.dtype == np.uint8 and gray.shape == (64, 96)
        difference = np.abs(gray - luma(rgb))
        assert difference.mean() < 1.5 and np.percentile(difference, 99) < 6


def test_gray_frames_of_a_frame_folder(tmp_path):
    write_vidtimit(tmp_path / "head", [f"{number:03d}" for number in range(1, 7)])  # JPEG frames: full-range yuvj420p
    media = load_media(tmp_path / "head")
    rgb, gray = next(media.frames()), next(media.frames(gray=True))
    assert gray.shape == (48, 128) and np.abs(gray - luma(rgb)).mean() < 1.5


def burst_envelope(num_frames, loud_frame):
    envelope = np.zeros(num_frames, np.float32)
    envelope[loud_frame] = 1.0
    return envelope


def loudest_10ms(audio):
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    return int(np.argmax((frames**2).mean(axis=1)))


@pytest.mark.parametrize("video_start_seconds", [0.0, 0.4, -0.4])
def test_audio_is_placed_on_the_video_timeline(tmp_path, video_start_seconds):
    """Video after audio: the audio is trimmed; audio after video: left-padded with silence.
    Either way the audio burst lands on the frame whose mouth opens."""
    path = tmp_path / "burst.mp4"
    write_clip(path, envelope=burst_envelope(75, 40), video_start_seconds=video_start_seconds)

    media = load_media(path)
    frames = np.stack(list(media.frames())).astype(np.int16)
    open_frame = int(np.argmax(np.abs(frames - frames[0]).sum(axis=(1, 2, 3))))

    assert media.num_frames == 75
    assert open_frame == 40
    # the burst is loudest at the centre of frame 40: 40.5 / 25 s = 162 steps of 10 ms
    assert abs(loudest_10ms(media.audio) - 162) <= 2
    if video_start_seconds < 0:
        assert not media.audio[: round(-video_start_seconds * 16000) - 1100].any()  # 1024: AAC priming


def write_wav(path, samples, sample_rate):
    """16-bit PCM WAV of float samples shaped (num_samples, channels)."""
    layout = {1: "mono", 2: "stereo"}[samples.shape[1]]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray((samples.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout=layout)
        frame.sample_rate = sample_rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("sample_rate", [44100, 48000, 8000])
def test_load_audio_resamples_to_16k_mono_keeping_time(tmp_path, sample_rate):
    stereo = np.zeros((sample_rate * 2, 2), np.float32)
    stereo[round(1.25 * sample_rate)] = 0.9  # a one-sample click at 1.25 s, both channels
    write_wav(tmp_path / "click.wav", stereo, sample_rate)

    audio = load_audio(tmp_path / "click.wav")

    assert audio.dtype == np.float32 and audio.shape == (2 * 16000,)
    assert abs(int(np.argmax(np.abs(audio))) - 20000) <= 1
    assert np.abs(audio).max() <= 1.0


def test_audio_path_replaces_the_video_audio(tmp_path):
    write_clip(tmp_path / "mute.mp4", seconds=2.0, with_audio=False)
    audio = speech_audio(burst_envelope(50, 30))
    write_wav(tmp_path / "speech.wav", audio[:, None], 16000)

    media = load_media(tmp_path / "mute.mp4", audio_path=tmp_path / "speech.wav")

    assert media.num_frames == 50
    assert len(media.audio) == len(audio)
    assert abs(loudest_10ms(media.audio) - 122) <= 1  # frame 30's centre: 30.5 / 25 s


def write_vidtimit(folder, names, with_wav=True):
    """A VidTIMIT-style sequence: one JPEG per name, showing the name's number as an index frame."""
    folder.mkdir()
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = 128, 48, "yuvj420p", Fraction(1, 25)
    for name in names:
        number = int(name.split(".")[0])
        frame = av.VideoFrame.from_ndarray(index_frame(number), format="rgb24").reformat(format="yuvj420p")
        (folder / name).write_bytes(bytes(encoder.encode(frame)[0]))
    if with_wav:
        write_wav(folder / "audio.wav", speech_audio(speech_envelope(len(names)))[:, None], 16000)


def test_vidtimit_folder(tmp_path):
    write_vidtimit(tmp_path / "head", [f"{number:03d}" for number in range(1, 31)])
    media = load_media(tmp_path / "head")
    assert [read_index(frame) for frame in media.frames()] == list(range(1, 31))
    assert (media.num_frames, media.width, media.height, media.source_fps) == (30, 128, 48, 25.0)
    assert len(media.audio) == 30 * 640
    assert [read_index(frame) for frame in media.frames(10, 12)] == [11, 12]


def test_vidtimit_folder_sorts_numerically_and_takes_audio_path(tmp_path):
    write_vidtimit(tmp_path / "seq", [f"{number}.jpg" for number in range(1, 13)], with_wav=False)
    with pytest.raises(MediaError, match="has no audio track"):
        load_media(tmp_path / "seq")
    write_wav(tmp_path / "other.wav", np.zeros((16000, 1), np.float32), 16000)
    media = load_media(tmp_path / "seq", audio_path=tmp_path / "other.wav")
    assert [read_index(frame) for frame in media.frames()] == list(range(1, 13))
    assert len(media.audio) == 16000


def test_no_audio_track(tmp_path):
    write_clip(tmp_path / "mute.mp4", seconds=1.0, with_audio=False)
    with pytest.raises(MediaError, match=r"mute\.mp4: has no audio track"):
        load_media(tmp_path / "mute.mp4")
    with pytest.raises(MediaError, match="has no audio track"):
        load_audio(tmp_path / "mute.mp4")


def test_no_video_track(tmp_path):
    write_wav(tmp_path / "speech.wav", np.zeros((16000, 1), np.float32), 16000)
    with pytest.raises(MediaError, match=r"speech\.wav: has no video track"):
        load_media(tmp_path / "speech.wav")


@pytest.mark.parametrize(
    "name, content",
    [
        ("random.mp4", np.random.default_rng(0).bytes(50_000)),
        ("notes.txt", b"this is not a video\n" * 50),
        ("empty.avi", b""),
    ],
)
def test_not_media(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MediaError, match=f"{name}: not a media file") as error:
        load_media(tmp_path / name)
    assert "\n" not in str(error.value)


def test_truncated_mp4(tmp_path):
    write_clip(tmp_path / "clip.mp4", seconds=2.0)
    data = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.mp4: .*corrupt or truncated"):
        load_media(tmp_path / "cut.mp4")


def test_truncated_faststart_mp4_scores_what_decodes_and_says_so(tmp_path):
    """A faststart mp4 cut short keeps its index (the header promises 10 s), so it opens: what
    decodes is used, and the warnings say the file is cut."""
    write_clip(tmp_path / "clip.mp4", seconds=10.0)
    with av.open(str(tmp_path / "clip.mp4")) as source, av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "faststart"}) as fast:
        streams = {stream.index: fast.add_stream_from_template(stream) for stream in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                fast.mux(packet)
    assert load_media(tmp_path / "fast.mp4").warnings == ()
    data = (tmp_path / "fast.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 3 // 10])

    media = load_media(tmp_path / "cut.mp4")

    assert 10 < media.num_frames < 150
    assert len(list(media.frames())) == media.num_frames
    truncation = [warning for warning in media.warnings if "truncated" in warning]
    assert any("promises 10.00 s of video" in warning for warning in truncation)
    assert any("promises 10.00 s of audio" in warning for warning in truncation)


def write_timestamped_audio(path, sample_rate, chunk_starts, *, chunk_seconds=0.1, click_at=0.075, channels=1):
    """A 4 s clip (mpeg4 + PCM in Matroska) whose audio chunk k is muxed at chunk_starts[k] seconds,
    however the chunks before it end, with a click `click_at` seconds into each chunk."""
    layout = {1: "mono", 2: "stereo"}[channels]
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=sample_rate, layout=layout)
        audio.time_base = Fraction(1, sample_rate)
        packets, samples = [], round(chunk_seconds * sample_rate)
        for start in chunk_starts:
            chunk = np.zeros((samples, channels), np.int16)
            chunk[round(click_at * sample_rate)] = 30000
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, round(start * sample_rate), audio.time_base
            packets += [(start, packet) for packet in audio.encode(frame)]
        for index in range(100):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            packets += [(index / 25, packet) for packet in video.encode(frame)]
        packets += [(4.0, packet) for packet in video.encode(None)]
        for _, packet in sorted(packets, key=lambda timed: timed[0]):
            container.mux(packet)


def click_samples(audio):
    """Where each click of `write_timestamped_audio` landed (16 kHz samples)."""
    loud = np.flatnonzero(np.abs(audio) > 0.1)
    groups = np.split(loud, np.flatnonzero(np.diff(loud) > 100) + 1)
    return np.array([group[np.argmax(np.abs(audio[group]))] for group in groups])


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_audio_frames_are_placed_at_their_timestamps(tmp_path, sample_rate):
    """A 0.3 s gap in the audio timestamps is filled with silence, a 0.05 s overlap is dropped: every
    click lands at its own timestamp, where counting samples would put the later ones 0.25-0.3 s early."""
    starts = [k * 0.1 for k in range(10)] + [1.3 + k * 0.1 for k in range(10)]  # a gap at 1.0-1.3 s
    starts += [starts[-1] + 0.05 + k * 0.1 for k in range(10)]  # starts 0.05 s before the last chunk ends
    write_timestamped_audio(tmp_path / "joined.mkv", sample_rate, starts)

    media = load_media(tmp_path / "joined.mkv")

    expected = np.round((np.array(starts) + 0.075) * 16000)
    assert len(click_samples(media.audio)) == len(starts)
    assert np.abs(click_samples(media.audio) - expected).max() <= 2
    assert len(media.audio) == pytest.approx((starts[-1] + 0.1) * 16000, abs=2)
    assert any("disagree by up to 0.30 s" in warning for warning in media.warnings)
    assert load_audio(tmp_path / "joined.mkv").shape == media.audio.shape


def test_contiguous_audio_timestamps_give_no_warning(tmp_path):
    write_timestamped_audio(tmp_path / "plain.mkv", 16000, [k * 0.1 for k in range(40)])
    media = load_media(tmp_path / "plain.mkv")
    assert media.warnings == ()
    assert np.abs(click_samples(media.audio) - np.round((np.arange(40) * 0.1 + 0.075) * 16000)).max() <= 1


def test_low_sample_rate_and_differing_channels_are_warned_about(tmp_path):
    write_timestamped_audio(tmp_path / "phone.mkv", 8000, [k * 0.1 for k in range(40)])
    assert any("sampled at 8000 Hz" in warning for warning in load_media(tmp_path / "phone.mkv").warnings)

    rng = np.random.default_rng(0)
    same = np.repeat(speech_audio(speech_envelope(50))[:, None], 2, axis=1)
    write_wav(tmp_path / "same.wav", same, 16000)
    write_wav(tmp_path / "different.wav", np.clip(rng.standard_normal((32000, 2)) * 0.2, -1, 1), 16000)
    write_clip(tmp_path / "mute.mp4", seconds=2.0, with_audio=False)
    assert load_media(tmp_path / "mute.mp4", audio_path=tmp_path / "same.wav").warnings == ()
    warnings = load_media(tmp_path / "mute.mp4", audio_path=tmp_path / "different.wav").warnings
    assert any("two audio channels differ" in warning for warning in warnings)


def test_still_image_is_named_as_such(tmp_path):
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "photo.png")
    with pytest.raises(MediaError, match=r"photo\.png: a still image, not a video"):
        load_media(tmp_path / "photo.png")


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match=r"nothere\.mp4: no such file"):
        load_media(tmp_path / "nothere.mp4")
    with pytest.raises(MediaError, match="no such file"):
        load_audio(tmp_path / "nothere.wav")


def test_too_short(tmp_path):
    window = hp.WINDOW_FRAMES
    write_clip(tmp_path / "short.mp4", envelope=np.zeros(window - 1, np.float32))
    with pytest.raises(MediaError, match=f"only {window - 1} frames at 25 fps; need at least {window}"):
        load_media(tmp_path / "short.mp4")
    write_clip(tmp_path / "enough.mp4", envelope=np.zeros(window, np.float32))
    assert load_media(tmp_path / "enough.mp4").num_frames == window


def test_too_low_frame_rate(tmp_path):
    write_clip(tmp_path / "slow.avi", fps=12, seconds=2.0)
    with pytest.raises(MediaError, match="12 fps is too low.*frozen"):
        load_media(tmp_path / "slow.avi")
    write_clip(tmp_path / "ok.avi", fps=15, seconds=2.0)
    assert load_media(tmp_path / "ok.avi").num_frames == 50


def test_is_silent():
    rng = np.random.default_rng(0)
    assert is_silent(np.zeros(16000, np.float32))
    assert is_silent(np.zeros(0, np.float32))
    assert is_silent((10 ** (-70 / 20) * rng.standard_normal(16000)).astype(np.float32))
    assert not is_silent((10 ** (-50 / 20) * rng.standard_normal(16000)).astype(np.float32))
    assert not is_silent(speech_audio(speech_envelope(50)))


# --- The shared real clips (research-only; never in the repo) -------------------------------------


def shared_clip(suffix):
    clips = sorted((SHARED_DATA / "clips").glob(f"*{suffix}"))
    if not clips:
        pytest.skip(f"shared clips not found: no *{suffix} under {SHARED_DATA / 'clips'} (set SYNCNET_DATA_DIR)")
    return clips[0]


@pytest.mark.parametrize("suffix", ["data_example.avi", "demo_output_test_offset_0.avi"])
def test_shared_syncnet_example(suffix):
    media = load_media(shared_clip(suffix))  # 12.68 s, 25 fps mpeg4, 16 kHz PCM
    assert media.num_frames == 317
    assert (media.width, media.height, media.source_fps) == (224, 224, 25.0)
    assert len(media.audio) == 317 * 640
    assert sum(1 for _ in media.frames()) == 317


def test_shared_delayed_audio_is_longer():
    media = load_media(shared_clip("demo_output_test_offset_12.avi"))  # adelay 480 ms, MP3
    assert media.num_frames == 319
    assert len(media.audio) / 16000 == pytest.approx(13.25, abs=0.05)
    assert is_silent(media.audio[: round(0.4 * 16000)])  # the delay's padding


def test_shared_clip_whose_video_starts_late():
    media = load_media(shared_clip("short_hamilton_clip.mp4"))  # video from 0.852 s, audio from 0.008 s
    assert media.first_slot == 21  # round(0.852 * 25)
    assert media.num_frames == 230 and media.source_fps == pytest.approx(29.97, abs=0.01)
    assert len(media.audio) / 16000 == pytest.approx(10.016 - 21 / 25, abs=0.03)  # audio ends at 10.016 s


def test_audio_gaps_adding_up_to_more_than_ten_minutes_are_a_broken_file(tmp_path):
    """Each jump is under the limit, together they would fill 13 minutes with silence: refused
    before the memory is spent."""
    write_timestamped_audio(tmp_path / "jumps.mkv", 16000, [0.0, 400.0, 800.0])
    with pytest.raises(MediaError, match="more than 600 s of gaps"):
        load_media(tmp_path / "jumps.mkv")


class DecodedPacket:
    """What PyAV's demuxer hands `_AudioDecoder.add`: a packet whose decode() gives audio frames."""

    def __init__(self, *frames):
        self.frames = frames

    def decode(self):
        return list(self.frames)


def audio_frame(samples, layout="mono", sample_rate=16000, pts=None):
    frame = av.AudioFrame.from_ndarray(np.asarray(samples, np.float32).reshape(1, -1), format="flt", layout=layout)
    frame.sample_rate, frame.time_base, frame.pts = sample_rate, Fraction(1, sample_rate), pts
    return frame


def test_untimed_leading_audio_frames_run_up_to_the_first_timestamp_and_formats_may_change():
    """Frames without timestamps before the first timed one end where it starts (not after it); a
    joined file that switches from mono to stereo and to another rate gets a fresh resampler."""
    from syncnet.video import _AudioDecoder

    decoder = _AudioDecoder()
    click = np.zeros(1600, np.float32)
    click[0] = 0.9
    decoder.add(DecodedPacket(audio_frame(click), audio_frame(np.zeros(1600))))  # 0.2 s untimed
    decoder.add(DecodedPacket(audio_frame(click, pts=3200)))  # at 0.2 s: the untimed ones are 0-0.2 s
    decoder.add(DecodedPacket(audio_frame(np.repeat(click, 2), layout="stereo", pts=4800)))
    decoder.add(DecodedPacket(audio_frame(np.zeros(4410), sample_rate=44100, pts=None)))
    audio = decoder.samples()
    assert decoder.start_time == 0
    assert np.flatnonzero(np.abs(audio) > 0.3).tolist() == [0, 3200, 4800]
    assert decoder.warnings() == []


def test_channels_of_unsigned_8_bit_audio_are_compared_around_their_middle(tmp_path):
    """u8 PCM is centred on 128: phase-inverted channels must still read as differing."""
    voice = speech_audio(speech_envelope(50))
    inverted = np.stack([voice, -voice], axis=1)
    with av.open(str(tmp_path / "inverted.wav"), mode="w") as container:
        stream = container.add_stream("pcm_u8", rate=16000, layout="stereo")
        samples = np.clip(np.round(inverted * 127 + 128), 0, 255).astype(np.uint8).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="u8", layout="stereo")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    write_clip(tmp_path / "mute.mp4", seconds=2.0, with_audio=False)
    warnings = load_media(tmp_path / "mute.mp4", audio_path=tmp_path / "inverted.wav").warnings
    assert any("two audio channels differ (correlation -1.00)" in warning for warning in warnings)
