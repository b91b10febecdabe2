"""The Wav2Lip expert family: its PyTorch network (written here from Wav2Lip's models/syncnet.py,
random weights and BatchNorm statistics) saved as the published `lipsync_expert.pth` is saved,
converted by `syncnet convert-weights`, and compared; its mel front-end against librosa; the bad
checkpoints a user may hand the converter."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from expert_checks import example_calibration, randomize_batchnorm, refused

from syncnet.cli import main
from syncnet.convert import convert_weights
from syncnet.errors import UserError
from syncnet.loading import load_model, save_model
from syncnet.models.wav2lip import AUDIO_PLAN, FACE_PLAN, Wav2LipSyncNet

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
TOLERANCE = 1e-5
BATCH = 4


def import_torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (the convert extra: pip install -e '.[convert]')")


def wav2lip_expert(torch):
    """Wav2Lip's SyncNet_color: two nn.Sequential encoders of Conv2d blocks (conv_block = Conv2d +
    BatchNorm2d, then + input when residual, then ReLU), embeddings flattened and L2-normalised."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, kernel, stride, padding, residual):
            super().__init__()
            self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
            self.residual = residual

        def forward(self, x):
            out = self.conv_block(x)
            return torch.relu(out + x if self.residual else out)

    def encoder(plan, channels):
        blocks = []
        for filters, kernel, stride, padding, residual in plan:
            blocks.append(Block(channels, filters, kernel, stride, padding, residual))
            channels = filters
        return nn.Sequential(*blocks)

    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.face_encoder = encoder(FACE_PLAN, 15)
            self.audio_encoder = encoder(AUDIO_PLAN, 1)

        def forward(self, audio, faces):
            a = torch.nn.functional.normalize(self.audio_encoder(audio).flatten(1), p=2, dim=1)
            v = torch.nn.functional.normalize(self.face_encoder(faces).flatten(1), p=2, dim=1)
            return a, v

    return Expert()


def random_windows(seed, batch=BATCH):
    """Our layout: RGB lower faces (batch, 5, 48, 96, 3) in [0, 255], mel (batch, 80, 16) in [-4, 4]."""
    rng = np.random.default_rng(seed)
    frames = rng.uniform(0, 255, (batch, 5, 48, 96, 3)).astype(np.float32)
    mel = rng.uniform(-4, 4, (batch, 80, 16)).astype(np.float32)
    return frames, mel


def to_wav2lip(torch, frames, mel):
    """Wav2Lip's layout: BGR in [0, 1], the 5 frames concatenated on the channels (3 t + c), NCHW;
    mel (batch, 1, 80, 16)."""
    bgr = frames[..., ::-1] / 255.0
    stacked = bgr.transpose(0, 2, 3, 1, 4).reshape(len(frames), 48, 96, 15).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(mel[:, None])), torch.from_numpy(np.ascontiguousarray(stacked, np.float32))


def randomize(torch, model):
    """Random weights, random BatchNorm statistics of a realistic scale; eval mode."""
    return randomize_batchnorm(torch, model, lambda: model(*to_wav2lip(torch, *random_windows(seed=100, batch=8))))


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    """(torch, the PyTorch expert, its checkpoint saved as Wav2Lip saves it: legacy format, whole dict)."""
    torch = import_torch()
    model = randomize(torch, wav2lip_expert(torch))
    path = tmp_path_factory.mktemp("wav2lip") / "lipsync_expert.pth"
    checkpoint = {
        "state_dict": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "global_step": 7,
        "global_epoch": 1,
    }
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return torch, model, path


@pytest.fixture(scope="module")
def converted(expert, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "wav2lip.keras"
    assert main(["convert-weights", str(expert[2]), str(out)]) == 0
    return out


def test_published_key_layout_is_exactly_what_the_network_holds(expert):
    published = [line.split("\t") for line in (REFERENCE / "lipsync_expert_keys.tsv").read_text().splitlines()]
    if not published:
        pytest.skip("../shared/reference is absent")
    torch, model, _ = expert
    ours = [(key, ",".join(str(d) for d in value.shape)) for key, value in model.state_dict().items()]
    assert ours == [(key, shape) for key, shape in published]
    assert sum(p.numel() for p in model.parameters()) == 16_435_072


def test_converted_expert_embeds_like_pytorch(expert, converted):
    torch, torch_model, _ = expert
    model = load_model(converted)
    assert isinstance(model, Wav2LipSyncNet) and model.family.name == "wav2lip"
    frames, mel = random_windows(seed=1)
    with torch.no_grad():
        audio_ref, visual_ref = (x.numpy() for x in torch_model(*to_wav2lip(torch, frames, mel)))
    cosine_ref = np.sum(audio_ref * visual_ref, axis=1)
    assert np.std(visual_ref, axis=0).max() > 0.01 and np.std(cosine_ref) > 1e-3  # not agreement on a constant
    visual, audio = model.embed_frames(frames).numpy(), model.embed_audio(mel).numpy()
    np.testing.assert_allclose(visual, visual_ref, atol=TOLERANCE)
    np.testing.assert_allclose(audio, audio_ref, atol=TOLERANCE)
    out = model({"frames": frames, "audio": mel})
    np.testing.assert_allclose(out["probability"].numpy(), cosine_ref, atol=TOLERANCE)


def test_batch_statistics_match_pytorch_train_mode_and_leave_the_expert_unchanged(expert, converted):
    torch, torch_model, _ = expert
    model = load_model(converted)
    before = [w.numpy().copy() for w in model.weights]
    frames, mel = random_windows(seed=2, batch=6)
    reference = wav2lip_expert(torch)
    reference.load_state_dict(torch_model.state_dict())
    reference.train()  # Wav2Lip's generator training: the expert never switched to eval()
    with torch.no_grad():
        audio_ref, visual_ref = (x.numpy() for x in reference(*to_wav2lip(torch, frames, mel)))
    visual = model.embed_frames(frames, batch_statistics=True).numpy()
    audio = model.embed_audio(mel, batch_statistics=True).numpy()
    np.testing.assert_allclose(visual, visual_ref, atol=1e-4)
    np.testing.assert_allclose(audio, audio_ref, atol=1e-4)
    assert not np.allclose(visual, model.embed_frames(frames).numpy(), atol=1e-3)  # the mode matters
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))


def test_round_trip_keeps_family_and_calibration(converted, tmp_path):
    model = load_model(converted)
    model.calibration = example_calibration()
    save_model(model, tmp_path / "again.keras")
    again = load_model(tmp_path / "again.keras")
    assert again.family.name == "wav2lip" and again.calibration.to_dict() == model.calibration.to_dict()
    frames, mel = random_windows(seed=3)
    np.testing.assert_array_equal(again.embed_frames(frames).numpy(), model.embed_frames(frames).numpy())


def test_dataparallel_prefix_and_bare_state_dict_zip_format(expert, tmp_path):
    torch, model, _ = expert
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "bare.pth")  # zip format, no training dict around it
    converted = convert_weights(tmp_path / "bare.pth", tmp_path / "bare.keras")
    assert converted.family.name == "wav2lip"


# --- Bad checkpoints: one clear line, nothing written ---------------------------------------------


def test_truncated_published_file_is_refused(capsys, tmp_path):
    import_torch()
    source = REFERENCE / "lipsync_expert_header_only.pth"
    if not source.is_file():
        pytest.skip("../shared/reference is absent")
    copy = tmp_path / "lipsync_expert.pth"
    shutil.copy(source, copy)
    refused(capsys, tmp_path, copy, "cut short")


def test_generator_and_quality_discriminator_are_named(expert, capsys, tmp_path):
    torch, _, _ = expert
    generator = {
        "face_encoder_blocks.0.0.conv_block.0.weight": torch.zeros(16, 6, 7, 7),
        "audio_encoder.0.conv_block.0.weight": torch.zeros(32, 1, 3, 3),
        "face_decoder_blocks.0.0.conv_block.0.weight": torch.zeros(1),
        "output_block.0.conv_block.0.weight": torch.zeros(1),
    }
    torch.save({"state_dict": generator}, tmp_path / "wav2lip.pth")
    refused(capsys, tmp_path, tmp_path / "wav2lip.pth", "Wav2Lip's generator")
    disc = {"face_encoder_blocks.0.0.conv_block.0.weight": torch.zeros(1), "binary_pred.weight": torch.zeros(1)}
    torch.save({"state_dict": disc}, tmp_path / "visual_quality_disc.pth")
    refused(capsys, tmp_path, tmp_path / "visual_quality_disc.pth", "visual quality discriminator")


def test_mismatched_keys_are_named(expert, capsys, tmp_path):
    torch, model, _ = expert
    state = dict(model.state_dict())
    del state["audio_encoder.13.conv_block.0.bias"]
    state["face_encoder.3.conv_block.0.weight"] = torch.zeros(64, 64, 5, 5)
    state["face_encoder.17.conv_block.0.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    refused(
        capsys,
        tmp_path,
        tmp_path / "odd.pth",
        "Wav2Lip's expert",
        "face_encoder.3.conv_block.0.weight has shape (64, 64, 5, 5)",
        "missing audio_encoder.13.conv_block.0.bias",
    )


def test_unknown_and_latentsync_checkpoints_list_the_supported(expert, capsys, tmp_path):
    torch, _, _ = expert
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    refused(capsys, tmp_path, tmp_path / "other.pth", "lipsync_expert.pth", "syncnet_v2.model")


def test_wrong_shapes_into_the_model_are_refused():
    model = Wav2LipSyncNet(width=0.0625)
    with pytest.raises(UserError, match=r"\(batch, 5, 48, 96, 3\)"):
        model.embed_frames(np.zeros((2, 5, 96, 96, 3), np.float32))
    with pytest.raises(UserError, match=r"\(batch, 80, 16\)"):
        model.embed_audio(np.zeros((2, 13, 20), np.float32))


# --- The mel front-end ----------------------------------------------------------------------------


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_mel_matches_librosa(pad_mode):
    librosa = pytest.importorskip("librosa", reason="librosa is not installed (the test extra)")
    from scipy.signal import lfilter

    from syncnet.audio import mel

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    wav[8000:12000] = 0  # silence: the -100 dB floor and the clipping at -4
    # Wav2Lip's audio.melspectrogram with its hparams, librosa 0.7's reflect padding made explicit
    spectrum = np.abs(librosa.stft(y=lfilter([1, -0.97], [1], wav), n_fft=800, hop_length=200, win_length=800, pad_mode=pad_mode))
    decibels = 20 * np.log10(np.maximum(1e-5, librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spectrum)) - 20
    reference = np.clip(8 * ((decibels + 100) / 100) - 4, -4, 4)
    ours = mel(wav, pad_mode=pad_mode).numpy()
    assert ours.shape == reference.shape == (80, 1 + len(wav) // 200)
    assert reference.min() == -4 and reference.max() > 0
    np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_window_rule_is_wav2lips():
    from syncnet.models.family import WAV2LIP

    assert WAV2LIP.audio_shape == (80, 16)
    assert [WAV2LIP.audio_window_start(frame) for frame in (0, 1, 2, 3, 10, 24)] == [int(80 * f / 25) for f in (0, 1, 2, 3, 10, 24)]


# --- The sync loss, as Wav2Lip's generator training computes it ---------------------------------


def test_sync_loss_is_wav2lips_get_sync_loss(expert, converted):
    """Wav2Lip's `get_sync_loss`: whole 96 x 96 BGR faces in [0, 1] from the generator, the lower
    half taken, the 5 frames concatenated on the channels, BCE of the cosine against 1."""
    from syncnet.sync_loss import SyncLoss

    torch, torch_model, _ = expert
    rng = np.random.default_rng(4)
    faces = rng.uniform(0, 1, (BATCH, 5, 96, 96, 3)).astype(np.float32)  # (b, t, h, w, c), BGR
    mel = rng.uniform(-4, 4, (BATCH, 80, 16)).astype(np.float32)
    g = torch.from_numpy(faces.transpose(0, 4, 1, 2, 3).copy())  # Wav2Lip's (b, c, t, h, w)
    g = g[:, :, :, g.size(3) // 2 :]
    g = torch.cat([g[:, :, i] for i in range(5)], dim=1)
    with torch.no_grad():
        a, v = torch_model(torch.from_numpy(mel[:, None]), g)
        d = torch.nn.functional.cosine_similarity(a, v)
        reference = torch.nn.functional.binary_cross_entropy(d.unsqueeze(1), torch.ones(BATCH, 1)).item()
    sync_loss = SyncLoss(load_model(converted))  # Wav2Lip's conventions by default: BGR, (0, 1)
    assert sync_loss.channel_order == "bgr" and sync_loss.value_range == (0.0, 1.0)
    np.testing.assert_allclose(sync_loss.probability(faces, mel).numpy(), d.numpy(), atol=TOLERANCE)
    assert float(sync_loss(faces, mel)) == pytest.approx(reference, abs=1e-4)
    with pytest.raises(UserError, match=r"audio must have shape \(batch, 80, 16\)"):
        sync_loss(faces, np.zeros((BATCH, 13, 20), np.float32))
    with pytest.raises(UserError, match="cannot be what the wav2lip expert reads"):
        sync_loss(faces[:, :, 48:], mel)  # a lower half given where whole faces are due


def test_score_command_runs_through_the_family(tmp_path, capsys):
    """`syncnet score --model` with a Wav2Lip-family expert: its crops (lower faces), its mel windows,
    its comparison (1 - cosine), and the family named in the result."""
    import json

    from synthetic import write_clip

    from syncnet.models.wav2lip import build

    clip = tmp_path / "talking.mp4"
    write_clip(clip, seconds=1.2, size=(160, 160))
    save_model(build("wav2lip_tiny"), tmp_path / "small_wav2lip.keras")
    assert main(["score", "--json", "--vshift", "3", "--model", str(tmp_path / "small_wav2lip.keras"), str(clip)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "ok", result["error"]
    assert result["family"] == "wav2lip" and result["tracks"][0]["vshift"] == 3
    assert 0.0 <= result["min_dist"] <= 1.0  # 1 - cosine of ReLU'd unit vectors
    assert len(result["tracks"][0]["mean_distance"]) == 7


# --- Training the family from raw videos -------------------------------------------------------


def test_train_the_family_from_raw_videos_with_its_recipe(tmp_path, capsys):
    """preprocess -> train -> evaluate with a Wav2Lip-family preset: lower-face crops and mel in the
    shards, the family's window rule, Wav2Lip's recipe filled in for the options not given."""
    import json

    from synthetic import write_clip

    from syncnet import data
    from syncnet.models.family import WAV2LIP

    for speaker, seed in (("spk_a", 0), ("spk_b", 1), ("spk_c", 2)):
        (tmp_path / "in" / speaker).mkdir(parents=True)
        write_clip(tmp_path / "in" / speaker / "talk.mp4", seconds=2.0, size=(160, 160), seed=seed)
    assert main(["preprocess", str(tmp_path / "in"), str(tmp_path / "shards"), "--preset", "wav2lip_tiny", "--workers", "1"]) == 0
    capsys.readouterr()
    segments = list(data.read_segments(data.list_shards(tmp_path / "shards"), "wav2lip_tiny").as_numpy_iterator())
    assert len(segments) == 3
    for segment in segments:
        frames = len(segment["crops"])
        assert segment["crops"].shape[1:] == (48, 96, 3)
        assert segment["audio"].shape == (80, data.segment_audio_steps(WAV2LIP, int(segment["start"]), frames))
    pairs, labels = next(iter(data.make_pair_dataset(data.list_shards(tmp_path / "shards"), "wav2lip_tiny", 4, augment=True)))
    assert pairs["frames"].shape == (4, 5, 48, 96, 3) and pairs["audio"].shape == (4, 80, 16)
    assert float(tf_max(pairs["audio"])) <= 4.0 and float(tf_min(pairs["audio"])) >= -4.0  # the mel's range survives the gain

    run = tmp_path / "run"
    args = ["train", str(tmp_path / "shards"), "--out", str(run), "--preset", "wav2lip_tiny", "--epochs", "1"]
    assert main([*args, "--steps-per-epoch", "2", "--batch-size", "8", "--val-steps", "1", "--val-speakers", "spk_c"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["hard_negative_fraction"], config["learning_rate"], config["batch_size"]) == (
        1.0,
        1e-4,
        8,
    )  # the recipe, --batch-size kept
    trained = load_model(run / "last.keras")
    assert isinstance(trained, Wav2LipSyncNet) and trained.width == 0.0625
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "shards"), "--model", str(run / "last.keras"), "--val-speakers", "spk_c", "--vshift", "5"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert {"pair_auc", "offset_acc_1", "offset_acc_15"} <= set(figures)


def tf_max(tensor):
    return np.max(np.asarray(tensor))


def tf_min(tensor):
    return np.min(np.asarray(tensor))
