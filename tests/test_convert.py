"""`syncnet convert-weights`: syncnet_python's PyTorch SyncNet -> our Keras `syncnet_v2`, checked by parity.

The PyTorch side is syncnet_python's architecture with random weights and random BatchNorm
statistics (the published file cannot be downloaded here), saved as a state dict the way the
published `syncnet_v2.model` is.
"""

import re
import subprocess
import sys

import numpy as np
import pytest
from expert_checks import randomize_batchnorm

from syncnet import hyperparameters as hp
from syncnet.cli import main
from syncnet.convert import convert_weights, keras_weights, load_syncnet_python_state
from syncnet.loading import load_model
from syncnet.models.siamese import SyncNet, build_model

BATCH = 3
RELATIVE_TOLERANCE = 1e-4


def import_torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (the convert extra: pip install -e '.[convert]')")


def syncnet_python_model(torch):
    """joonson/syncnet_python SyncNetModel.py's `S`, its layer lists copied as they are there."""
    nn = torch.nn
    model = nn.Module()
    model.netcnnaud = nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
        nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(192),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
        nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(384),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
        nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
        nn.BatchNorm2d(512),
        nn.ReLU(),
    )
    model.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))
    model.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))
    model.netcnnlip = nn.Sequential(
        nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
        nn.BatchNorm3d(96),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(256),
        nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
        nn.BatchNorm3d(512),
        nn.ReLU(inplace=True),
    )
    return model


# syncnet_python's forward_aud / forward_lip.
def torch_audio_embeddings(model, mfcc):
    return model.netfcaud(model.netcnnaud(mfcc).flatten(1))


def torch_lip_embeddings(model, frames):
    return model.netfclip(model.netcnnlip(frames).flatten(1))


def random_windows(seed, batch=BATCH):
    """Our layout: RGB frames (batch, 5, 224, 224, 3) in [0, 255], MFCC (batch, 13, 20)."""
    rng = np.random.default_rng(seed)
    frames = rng.uniform(0, 255, (batch, 5, 224, 224, 3)).astype(np.float32)
    mfcc = rng.normal(0, 10, (batch, 13, 20)).astype(np.float32)
    return frames, mfcc


def to_syncnet_python(torch, frames, mfcc):
    """syncnet_python's layout: BGR frames (it reads them with OpenCV) as (batch, 3, 5, H, W), MFCC (batch, 1, 13, 20)."""
    bgr = np.ascontiguousarray(frames[..., ::-1].transpose(0, 4, 1, 2, 3))
    return torch.from_numpy(bgr), torch.from_numpy(mfcc[:, None])


def randomize(torch, model):
    """Random weights, random BatchNorm statistics of a realistic scale (through all 8 layers); eval mode."""
    frames, mfcc = to_syncnet_python(torch, *random_windows(seed=100, batch=4))
    return randomize_batchnorm(torch, model, lambda: (torch_audio_embeddings(model, mfcc), torch_lip_embeddings(model, frames)))


@pytest.fixture(scope="module")
def syncnet_python(tmp_path_factory):
    """(torch, the PyTorch model, its state dict file)."""
    torch = import_torch()
    model = randomize(torch, syncnet_python_model(torch))
    path = tmp_path_factory.mktemp("syncnet_python") / "syncnet_v2.model"
    torch.save(model.state_dict(), path)
    return torch, model, path


@pytest.fixture(scope="module")
def converted(syncnet_python, tmp_path_factory):
    """The converted .keras file, written by the command line."""
    _, _, state_path = syncnet_python
    out = tmp_path_factory.mktemp("converted") / "syncnet_v2.keras"
    assert main(["convert-weights", str(state_path), str(out)]) == 0
    return out


def relative_error(reference, ours):
    return float(np.max(np.abs(reference - ours)) / np.max(np.abs(reference)))


def test_converted_model_embeds_like_syncnet_python(syncnet_python, converted):
    torch, torch_model, _ = syncnet_python
    model = load_model(converted)
    assert isinstance(model, SyncNet) and model.preset == "syncnet_v2"
    frames, mfcc = random_windows(seed=1)
    torch_frames, torch_mfcc = to_syncnet_python(torch, frames, mfcc)
    with torch.no_grad():
        torch_audio = torch_audio_embeddings(torch_model, torch_mfcc).numpy()
        torch_lip = torch_lip_embeddings(torch_model, torch_frames).numpy()
    # The reference embeddings differ between windows, so agreement is not agreement on a constant.
    assert np.std(torch_audio, axis=0).max() > 0.1 * np.abs(torch_audio).max()
    assert np.std(torch_lip, axis=0).max() > 0.1 * np.abs(torch_lip).max()
    assert relative_error(torch_audio, model.embed_audio(mfcc).numpy()) <= RELATIVE_TOLERANCE
    assert relative_error(torch_lip, model.embed_frames(frames).numpy()) <= RELATIVE_TOLERANCE


def syncnet_python_evaluate(torch, lip_embeddings, audio_embeddings, vshift):
    """SyncNetInstance.evaluate from the features on: calc_pdist, then (offset, min dist, confidence)."""
    win_size = vshift * 2 + 1
    padded = torch.nn.functional.pad(audio_embeddings, (0, 0, vshift, vshift))
    dists = [
        torch.nn.functional.pairwise_distance(lip_embeddings[[i], :].repeat(win_size, 1), padded[i : i + win_size, :])
        for i in range(len(lip_embeddings))
    ]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    return int(vshift - minidx), float(minval), float(torch.median(mdist) - minval)


def test_score_video_with_the_converted_model_matches_syncnet_python(syncnet_python, converted, tmp_path):
    from synthetic import write_clip

    from syncnet.audio import mfcc
    from syncnet.faces import crop_tracks, find_face_tracks
    from syncnet.scoring import score_video
    from syncnet.video import load_media

    torch, torch_model, _ = syncnet_python
    clip = tmp_path / "talking.mp4"
    write_clip(clip, seconds=1.2, size=(224, 224), audio_shift_frames=2)  # 25 windows: seconds of CPU
    vshift = 5
    result = score_video(clip, load_model(converted), vshift=vshift)
    assert result.status == "ok", result.error

    # syncnet_python's evaluate on the same face crops and MFCC: one face track over the whole clip,
    # so its crops are the video syncnet_python's pipeline would hand to evaluate.
    media = load_media(clip)
    tracks = find_face_tracks(media.frames(gray=True)).tracks  # as score_video tracks them
    assert len(tracks) == 1 and (tracks[0].start, tracks[0].end) == (0, media.num_frames)
    crops = np.stack([crop[tracks[0].track_id] for _, crop in crop_tracks(media.frames(), tracks, "face")])
    last_frame = min(len(crops), len(media.audio) // hp.SAMPLES_PER_FRAME) - hp.WINDOW_FRAMES
    video = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1].transpose(3, 0, 1, 2)).astype(np.float32))[None]
    coefficients = torch.from_numpy(mfcc(media.audio).numpy())[None, None]
    steps = [hp.MFCC_STEPS_PER_FRAME * v for v in range(last_frame)]
    with torch.no_grad():
        lip = torch_lip_embeddings(torch_model, torch.cat([video[:, :, v : v + hp.WINDOW_FRAMES] for v in range(last_frame)]))
        audio = torch_audio_embeddings(torch_model, torch.cat([coefficients[..., step : step + hp.WINDOW_MFCC_STEPS] for step in steps]))
    offset, min_dist, confidence = syncnet_python_evaluate(torch, lip, audio, vshift)

    assert result.offset_frames == offset
    assert result.min_dist == pytest.approx(min_dist, abs=1e-3)
    assert result.confidence == pytest.approx(confidence, abs=1e-3)


def corrupt_wrong_shape(state):
    state["netcnnlip.4.weight"] = state["netcnnlip.4.weight"][..., 1:4, 1:4].clone()
    return "netcnnlip.4.weight: expected (256, 96, 1, 5, 5), got (256, 96, 1, 3, 3)"


def corrupt_missing_key(state):
    del state["netfcaud.3.bias"]
    return "missing key netfcaud.3.bias"


def corrupt_unexpected_key(state):
    state["netfcaud.4.weight"] = state["netfcaud.3.weight"].clone()
    return "unexpected key netfcaud.4.weight"


@pytest.mark.parametrize("corrupt", [corrupt_wrong_shape, corrupt_missing_key, corrupt_unexpected_key])
def test_mismatching_state_dict_is_refused_naming_the_key(syncnet_python, tmp_path, corrupt):
    torch, model, _ = syncnet_python
    state = dict(model.state_dict())
    problem = corrupt(state)
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(ValueError, match=re.escape(problem)):
        convert_weights(tmp_path / "bad.model", tmp_path / "out.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.model"]  # no output, no temp file


def test_state_dict_without_batchnorm_counters_is_accepted(syncnet_python):
    # Files saved before PyTorch 0.4.1 have no num_batches_tracked.
    _, _, path = syncnet_python
    state = {k: v for k, v in load_syncnet_python_state(path).items() if "num_batches_tracked" not in k}
    weights = keras_weights(state, build_model("syncnet_v2"))
    assert weights["visual_conv0"][0].shape == (7, 7, 15, 96)  # Conv3d (96, 3, 5, 7, 7), frames stacked
    assert weights["audio_fc1"][0].shape == (512, 1024)


def test_pickled_module_is_read_only_when_allowed(syncnet_python, tmp_path):
    torch, model, path = syncnet_python
    torch.save(model, tmp_path / "module.model")
    with pytest.raises(ValueError, match="--allow-pickle"):
        load_syncnet_python_state(tmp_path / "module.model")
    from_module = load_syncnet_python_state(tmp_path / "module.model", allow_pickle=True)
    from_state = load_syncnet_python_state(path)
    assert list(from_module) == list(from_state)
    assert all(np.array_equal(from_module[k], from_state[k]) for k in from_state)


def test_input_is_never_overwritten_and_non_torch_files_are_refused(tmp_path):
    import_torch()
    weights = tmp_path / "weights.keras"
    weights.write_bytes(b"not a PyTorch file")
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        convert_weights(weights, weights)
    with pytest.raises(ValueError, match="cannot read .* as a PyTorch file"):
        convert_weights(weights, tmp_path / "out.keras")
    assert weights.read_bytes() == b"not a PyTorch file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.keras"]


def test_command_without_torch_prints_the_install_line(tmp_path):
    script = (
        # keras first: it imports scikit-learn when present (librosa, a test extra, brings it), whose
        # scipy probes sys.modules['torch'] - a None there breaks that import, not ours
        "import sys, keras; sys.modules['torch'] = None; from syncnet.cli import main; "
        f"sys.exit(main(['convert-weights', {str(tmp_path / 'syncnet_v2.model')!r}, {str(tmp_path / 'out.keras')!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    # (TensorFlow may log its own start-up lines around ours)
    errors = [line for line in result.stderr.splitlines() if line.startswith("syncnet convert-weights:")]
    assert len(errors) == 1 and "pip install torch (the 'convert' extra; in a checkout: pip install -e '.[convert]')" in errors[0], (
        result.stderr
    )
