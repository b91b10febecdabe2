"""Face tracks, landmarks and crops with the real dlib models, on a still portrait, synthetic clips
(real encoders and decoder) and, when present, syncnet_python's own example clip."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from shared_data import shared_clip
from synthetic import BACKGROUND_RGB, FACE_PNG, MOUTH_CENTRE_XY, MOUTH_HALF_WIDTH, write_clip

from syncnet import hyperparameters as hp
from syncnet.faces import FaceTrack, crop_tracks, find_face_tracks
from syncnet.video import load_media

FPS = 25


def decoded_frames(path) -> list[np.ndarray]:
    return list(load_media(path).frames())


@pytest.fixture(scope="module")
def one_face(tmp_path_factory):
    """A 3 s 224x224 clip of one talking face: its decoded frames and the mouth opening per frame."""
    path = tmp_path_factory.mktemp("faces") / "one_face.mp4"
    envelope = write_clip(path, seconds=3, size=(224, 224))
    return decoded_frames(path), envelope


def only_track(result) -> FaceTrack:
    assert len(result.tracks) == 1, result
    return result.tracks[0]


def test_still_portrait_landmarks_and_mouth_crop():
    portrait = np.asarray(Image.open(FACE_PNG).convert("RGB"))
    result = find_face_tracks([portrait] * hp.WINDOW_FRAMES)
    track = only_track(result)
    assert (track.start, track.end, result.skipped) == (0, hp.WINDOW_FRAMES, {})
    assert track.detected.all()

    # the outer lip points lie on her mouth (measured once by hand on face.png: centre (103, 147), 46 px wide)
    outer_lips = track.landmarks[0, 48:60]
    np.testing.assert_allclose(outer_lips.mean(axis=0), MOUTH_CENTRE_XY, atol=4)
    mouth_width = outer_lips[:, 0].max() - outer_lips[:, 0].min()
    assert abs(mouth_width - 2 * MOUTH_HALF_WIDTH) < 6

    index, crops = next(crop_tracks([portrait] * hp.WINDOW_FRAMES, result.tracks, "mouth"))
    crop = crops[track.track_id]
    assert index == 0 and crop.shape == (hp.MOUTH_CROP_SIZE, hp.MOUTH_CROP_SIZE) and crop.dtype == np.uint8
    # between the nose (top rows) and the chin (bottom rows), the strongest horizontal edges are the
    # lips and teeth, at the crop's centre
    edges = np.abs(np.diff(crop.astype(float), axis=0)).mean(axis=1)
    edges = np.convolve(edges, np.ones(9) / 9, mode="same")
    strongest_row = 16 + np.argmax(edges[16:96])
    assert 44 <= strongest_row <= 68, strongest_row


def test_one_face_is_one_track_over_all_frames(one_face):
    frames, envelope = one_face
    result = find_face_tracks(frames)
    track = only_track(result)
    assert (track.start, track.end, result.num_frames) == (0, len(frames), len(frames))
    assert result.skipped == {} and result.shot_cuts == []
    assert track.landmarks.shape == (len(frames), 68, 2) and track.landmarks.dtype == np.float32

    mouth_boxes = track.mouth_boxes()
    sides = mouth_boxes[:, 2] - mouth_boxes[:, 0]
    np.testing.assert_allclose(mouth_boxes[:, 3] - mouth_boxes[:, 1], sides)
    assert sides.std() < 1.0  # one scale over the whole track while the mouth opens and closes

    crops = dict(crop_tracks(frames, result.tracks, "mouth"))
    assert sorted(crops) == list(range(len(frames)))
    mouths = np.stack([crops[index][track.track_id] for index in range(len(frames))]).astype(float)
    # the drawn mouth opening (dark) sits at the crop centre, and gets darker as the mouth opens
    centre = mouths[:, 46:66, 36:76].mean(axis=(1, 2))
    wide_open, closed = envelope > 0.7, envelope < 0.05
    assert centre[wide_open].mean() < 60 < centre[closed].mean()
    assert np.corrcoef(centre, envelope)[0, 1] < -0.8


def test_face_crop_matches_syncnet_python_geometry(one_face):
    frames, _ = one_face
    result = find_face_tracks(frames)
    track = only_track(result)
    crops = [crops[track.track_id] for _, crops in crop_tracks(frames, result.tracks, "face")]
    assert len(crops) == len(frames) and crops[0].shape == (hp.FACE_CROP_SIZE, hp.FACE_CROP_SIZE, 3)

    # the crop spans 2.8 half-sides of the face box, whose centre is one half-side below its top;
    # in syncnet_python's own crops (example.avi) dlib puts the lips' centre at (112, 120)
    x0, y0, x1, y1 = track.face_boxes()[0]
    bs = (x1 - x0) / 2
    scale = hp.FACE_CROP_SIZE / (2.8 * bs)
    lips = track.landmarks[0, 48:68].mean(axis=0)
    lips_in_crop = (lips - [(x0 + x1) / 2 - 1.4 * bs, (y0 + y1) / 2 - bs]) * scale
    np.testing.assert_allclose(lips_in_crop, [112, 120], atol=8)


def test_face_crop_is_padded_with_syncnet_grey():
    """Cut the portrait just below the chin: the crop reaches below the frame, and syncnet_python
    fills that part with grey 110."""
    portrait = np.asarray(Image.open(FACE_PNG).convert("RGB"))[:185]
    result = find_face_tracks([portrait] * hp.WINDOW_FRAMES)
    _, crops = next(crop_tracks([portrait] * hp.WINDOW_FRAMES, result.tracks, "face"))
    crop = only_track(result) and crops[0]
    assert np.abs(crop[-20:].astype(int) - 110).max() <= 1
    assert np.abs(crop[-60:-50].astype(int) - 110).max() > 20  # her suit, above the padding


def test_two_faces_give_two_disjoint_tracks(tmp_path):
    path = tmp_path / "two_faces.mp4"
    write_clip(path, seconds=2, size=(448, 224), faces=(True, False))
    frames = decoded_frames(path)
    result = find_face_tracks(frames)
    assert len(result.tracks) == 2, result
    for track in result.tracks:
        assert (track.start, track.end) == (0, len(frames))
    left, right = sorted(result.tracks, key=lambda track: track.landmarks[0, :, 0].mean())
    assert left.face_boxes()[:, 2].max() < right.face_boxes()[:, 0].min()
    assert left.landmarks[..., 0].max() < 224 < right.landmarks[..., 0].min()

    crop_frames = list(crop_tracks(frames, result.tracks, "mouth"))
    assert len(crop_frames) == len(frames)
    assert all(set(crops) == {left.track_id, right.track_id} for _, crops in crop_frames)


def upside_down_face(frame: np.ndarray) -> np.ndarray:
    """The frame with its face region flipped vertically: the frontal detector misses it, but the
    grey-level histogram (the shot-cut test) does not change."""
    frame = frame.copy()
    frame[20:204, 40:184] = frame[20:204, 40:184][::-1]
    return frame


def test_short_gap_is_bridged(one_face):
    frames, _ = one_face
    gap = range(30, 33)
    result = find_face_tracks(upside_down_face(frame) if index in gap else frame for index, frame in enumerate(frames))
    track = only_track(result)
    assert (track.start, track.end, result.skipped) == (0, len(frames), {})
    assert np.flatnonzero(~track.detected).tolist() == list(gap)
    # the bridged landmarks lie between their neighbours
    lips = track.landmarks[:, 48:68].mean(axis=1)
    assert np.abs(lips[31] - (lips[29] + lips[33]) / 2).max() < 2


def test_long_gap_ends_the_track_and_counts_frames_without_face(one_face):
    frames, _ = one_face
    gap = range(30, 45)
    result = find_face_tracks(upside_down_face(frame) if index in gap else frame for index, frame in enumerate(frames))
    first, second = result.tracks
    assert (first.start, first.end, second.end) == (0, 30, len(frames))
    # once a track is gone, the face is found again at the next whole-frame scan: 25 frames after
    # the last one (at frame 25), which saw a face (`rescan_every`)
    assert 45 <= second.start < 55
    assert result.skipped == {"no_face": second.start - 30} and result.shot_cuts == []


def on_canvas(frame: np.ndarray, left: int, width: int = 320) -> np.ndarray:
    canvas = np.empty((frame.shape[0], width, 3), np.uint8)
    canvas[:] = BACKGROUND_RGB
    canvas[:, left : left + frame.shape[1]] = frame
    return canvas


def test_decoded_gray_frames_give_the_tracks_of_rgb_frames(tmp_path):
    """Scoring tracks faces on the luma plane it decodes (`frames(gray=True)`); RGB frames are
    converted to gray here. The two agree to within the luma rounding."""
    path = tmp_path / "one_face.mp4"
    write_clip(path, seconds=1, size=(224, 224))
    media = load_media(path)
    from_rgb, from_gray = find_face_tracks(media.frames()), find_face_tracks(media.frames(gray=True))
    assert [(track.start, track.end) for track in from_gray.tracks] == [(track.start, track.end) for track in from_rgb.tracks] == [(0, 25)]
    np.testing.assert_allclose(from_gray.tracks[0].mouth_boxes(), from_rgb.tracks[0].mouth_boxes(), atol=1.5)


def test_mouth_crops_from_gray_frames_are_those_from_rgb_frames(one_face):
    """Mouth crops are grayscale, so scoring decodes only the luma for them; face crops need RGB."""
    frames, _ = one_face
    frames = frames[:10]
    gray = [np.asarray(Image.fromarray(frame).convert("L")) for frame in frames]
    tracks = find_face_tracks(gray).tracks
    from_rgb, from_gray = list(crop_tracks(frames, tracks, "mouth")), list(crop_tracks(gray, tracks, "mouth"))
    assert [index for index, _ in from_gray] == [index for index, _ in from_rgb] == list(range(10))
    for (_, rgb_crops), (_, gray_crops) in zip(from_rgb, from_gray):
        assert gray_crops[0].shape == (hp.MOUTH_CROP_SIZE, hp.MOUTH_CROP_SIZE)
        assert np.abs(gray_crops[0].astype(int) - rgb_crops[0]).max() <= 1  # resizing before or after the luma
    with pytest.raises(ValueError, match="face crops are RGB"):
        list(crop_tracks(gray, tracks, "face"))


def test_tracking_in_several_threads_at_once(one_face):
    """dlib's detector keeps scratch buffers (two threads sharing one crash the process): each
    call borrows detectors of its own, and the results do not depend on what else runs."""
    frames = one_face[0][:30]
    expected = find_face_tracks(frames).tracks[0].landmarks
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: find_face_tracks(frames), range(3)))
    for result in results:
        np.testing.assert_array_equal(only_track(result).landmarks, expected)


def test_landmarks_between_predictions_are_interpolated(one_face):
    """The shape predictor runs on every 2nd frame of a track; the frames between get the mean of
    their neighbours' landmarks, and every frame the face was found in counts as detected."""
    frames, _ = one_face
    track = only_track(find_face_tracks(frames[:21]))
    assert track.detected.all()
    odd = track.landmarks[1:-1:2]
    np.testing.assert_allclose(odd, (track.landmarks[0:-2:2] + track.landmarks[2::2]) / 2, atol=1e-4)


def test_jump_ends_the_track(one_face):
    """The face moves 96 px between two frames with the same histogram: no cut is seen, but the
    box overlap breaks, so the face gets a new track from the jump on."""
    frames, _ = one_face
    jump = 40
    result = find_face_tracks(on_canvas(frame, 0 if index < jump else 96) for index, frame in enumerate(frames))
    assert result.shot_cuts == []
    assert [(track.start, track.end) for track in result.tracks] == [(0, jump), (jump, len(frames))]


def test_shot_cut_ends_the_track(one_face):
    """A cut to a close-up: the histogram changes, the tracks break at the cut."""
    frames, _ = one_face
    cut = 40
    close_up = [np.asarray(Image.fromarray(frame[40:200, 32:192]).resize((224, 224), Image.BILINEAR)) for frame in frames[cut:]]
    result = find_face_tracks(frames[:cut] + close_up)
    assert result.shot_cuts == [cut]
    assert [(track.start, track.end) for track in result.tracks] == [(0, cut), (cut, len(frames))]


def test_frames_without_faces():
    rng = np.random.default_rng(0)
    noise = (rng.integers(0, 256, (20, 96, 128, 3))).astype(np.uint8)
    result = find_face_tracks(iter(noise))
    assert result.tracks == [] and result.skipped == {"no_face": 20} and result.num_frames == 20
    assert list(crop_tracks(iter(noise), result.tracks, "mouth")) == []
    assert find_face_tracks(iter([])).num_frames == 0


def test_small_faces_and_short_tracks_are_counted(one_face):
    frames, _ = one_face
    # dlib's box around this face is about 130 px wide
    result = find_face_tracks(frames[:20], min_face_size=200)
    assert result.tracks == [] and result.skipped == {"too_small": 20}
    result = find_face_tracks(frames[:4])
    assert result.tracks == [] and result.skipped == {"short_track": 4}


def test_bad_input_is_one_clear_error(one_face):
    frames, _ = one_face
    with pytest.raises(ValueError, match="frame 0: expected an RGB uint8"):
        find_face_tracks([frames[0].astype(np.float32)])
    with pytest.raises(ValueError, match="frame 1: size 100x100 differs"):
        find_face_tracks([frames[0], frames[0][:100, :100]])
    with pytest.raises(ValueError, match="crop kind must be 'mouth', 'face', 'lips', 'lower_face' or 'latentsync_face', not 'eyes'"):
        list(crop_tracks(frames, [], "eyes"))


def test_syncnet_example_clip(tmp_path):
    """syncnet_python's example.avi is its own face-crop output: one face throughout, the mouth
    crops sit on the moving lips, and cropping it again as syncnet_python does gives it back."""
    media = load_media(shared_clip("*data_example.avi"))
    num_frames = 150
    result = find_face_tracks(media.frames(0, num_frames))
    track = max(result.tracks, key=lambda track: track.end - track.start)
    assert track.end - track.start >= 0.95 * num_frames

    boxes = track.mouth_boxes()
    lips = track.landmarks[:, 48:68].mean(axis=1)
    lips_in_crop = (lips - boxes[:, :2]) / (boxes[:, 2:] - boxes[:, :2]) * hp.MOUTH_CROP_SIZE
    np.testing.assert_allclose(lips_in_crop.mean(axis=0), hp.MOUTH_CROP_SIZE / 2, atol=6)

    mouths = np.stack([crops[track.track_id] for _, crops in crop_tracks(media.frames(0, num_frames), [track], "mouth")])
    # the lips move while he speaks: between his nose (top rows) and chin (bottom rows) the crop
    # changes most over time at the centre
    motion = mouths.astype(float).std(axis=0).mean(axis=1)
    motion = np.convolve(motion, np.ones(9) / 9, mode="same")
    most_motion_row = 24 + np.argmax(motion[24:88])
    assert 44 <= most_motion_row <= 68, most_motion_row
    sheet = np.concatenate([np.concatenate(list(mouths[row * 10 : row * 10 + 10]), axis=1) for row in range(4)])
    Image.fromarray(sheet).save(tmp_path / "mouth_crops.png")

    faces = [crops[track.track_id] for _, crops in crop_tracks(media.frames(0, num_frames), [track], "face")]
    originals = list(media.frames(track.start, track.end))
    error = np.mean([np.abs(face.astype(float) - original).mean() for face, original in zip(faces, originals)])
    assert error < 20  # about a 3 px misalignment; the face box 10 % too small or large gives 26-29
