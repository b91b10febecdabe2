"""syncnet.expert_crops: what a generator trained with an expert emits, cut as scoring cuts it."""

import numpy as np
import pytest
from synthetic import write_clip

import syncnet
from syncnet.errors import UserError
from syncnet.faces import crop_tracks, expert_crops, find_face_tracks
from syncnet.models import build_model
from syncnet.models.family import FAMILIES
from syncnet.video import load_media


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """(frames, audio) of a 1.2 s synthetic talking head."""
    path = tmp_path_factory.mktemp("expert_crops") / "talk.mp4"
    write_clip(path, seconds=1.2, size=(224, 224))
    media = load_media(path)
    return np.stack(list(media.frames())), media.audio


@pytest.fixture(scope="module")
def tracking(clip):
    return find_face_tracks(clip[0])


def _scoring_crops(frames, tracks, kind):
    """The crops scoring makes (embedding.py: crop_tracks of find_face_tracks' tracks)."""
    return np.stack([crops[tracks[0].track_id] for _, crops in crop_tracks(frames, tracks, kind)])


@pytest.mark.parametrize("name", ["paper", "syncnet_v2", "lips", "wav2lip", "latentsync"])
def test_each_family_gets_what_its_expert_reads(clip, tracking, name):
    frames, _ = clip
    family = FAMILIES[name]
    crops = expert_crops(family, frames)
    size = family.generator_face or family.frame_size
    assert crops.shape == (len(frames), *size, family.channels)
    assert crops.dtype == np.uint8
    assert len(tracking.tracks) == 1 and tracking.tracks[0].start == 0 and tracking.tracks[0].end == len(frames)
    expected = _scoring_crops(frames, tracking.tracks, family.crop)
    if family.generator_face is not None:  # whole faces: their lower half is what scoring reads
        crops = crops[:, size[0] // 2 :]
    np.testing.assert_array_equal(crops.reshape(expected.shape), expected)


def test_given_landmarks_give_the_same_crops_without_tracking(clip, tracking, monkeypatch):
    frames, _ = clip
    tracked = expert_crops(FAMILIES["paper"], frames)

    def no_tracking(*args, **kwargs):
        raise AssertionError("find_face_tracks ran although landmarks were given")

    monkeypatch.setattr("syncnet.faces.find_face_tracks", no_tracking)
    given = expert_crops(FAMILIES["paper"], frames, landmarks=tracking.tracks[0].landmarks)
    np.testing.assert_array_equal(given, tracked)


def test_crops_of_a_model_go_into_its_sync_loss(clip):
    frames, audio = clip
    for model in (syncnet.load_model(), build_model("wav2lip_tiny")):
        crops = syncnet.expert_crops(model, frames[:10])
        starts = np.arange(0, 6)
        windows = np.stack([crops[start : start + 5] for start in starts])
        audio_windows = model.audio_windows(audio, times=starts / 25.0)
        loss = syncnet.SyncLoss(model, value_range=(0, 255), channel_order="rgb")(windows, audio_windows)
        assert np.isfinite(float(loss))


def test_bad_input_is_one_clear_error(clip):
    frames, _ = clip
    family = FAMILIES["paper"]
    with pytest.raises(UserError, match="expert model or its family"):
        expert_crops("paper", frames)
    with pytest.raises(UserError, match="uint8"):
        expert_crops(family, frames.astype(np.float32))
    with pytest.raises(UserError, match="landmarks must be"):
        expert_crops(family, frames, landmarks=np.zeros((3, 68, 2)))
    blank = np.full((6, 224, 224, 3), 110, np.uint8)
    with pytest.raises(UserError, match="no face found"):
        expert_crops(family, blank)
    with pytest.raises(UserError, match=r"followed in frames 0\.\.9 of 0\.\.15 only"):
        expert_crops(family, np.concatenate([frames[:10], blank]))
