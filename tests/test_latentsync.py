"""LatentSync's expert family: its PyTorch network (written here from LatentSync's
latentsync/models/stable_syncnet.py and configs/syncnet/*.yaml; random weights) on a narrow
configuration with every block type of the published ones, saved as `stable_syncnet.pt` is saved,
converted by `syncnet convert-weights`, and compared; the full-size configurations built (not run)
and checked key for key and parameter for parameter against the same PyTorch network; the bad
checkpoints a user may hand the converter."""

import numpy as np
import pytest
from expert_checks import example_calibration, refused

from syncnet.cli import main
from syncnet.convert import convert_weights, recognise
from syncnet.errors import UserError
from syncnet.loading import load_model, save_model
from syncnet.models.family import FAMILIES, LATENTSYNC
from syncnet.models.latentsync import PUBLISHED, LatentSyncNet, expected_keys, infer_config

TOLERANCE = 1e-5
BATCH = 3
# LatentSync 1.5's stages, downsampling factors and attention placement at 32 to 256 channels
# (GroupNorm's 32 groups need multiples of 32): every block type, a 1 x 1 shortcut where the
# channels change, and an identity one where they don't. The last stage keeps 8 channels a group
# (the published ones 64): GroupNorm over 1 x 1 maps of 2 channels a group would turn float32's
# rounding into differences of 1e-4.
TINY = {
    encoder: {
        **PUBLISHED["1.5"][0][encoder],
        "block_out_channels": [32] * (stages - 3) + [64, 128, 256],
    }
    for encoder, stages in (("audio_encoder", 7), ("visual_encoder", 8))
}
# The published networks' sizes: 1.5 / 1.6 about 401 M parameters (LatentSync's figure), 1.0 less
# its four attention blocks.
PARAMETERS = {"1.5": 401_306_080, "1.0": 371_766_496}


def import_torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (the convert extra: pip install -e '.[convert]')")


def stable_syncnet(torch, config):
    """LatentSync's StableSyncNet for a `model:` configuration: two DownEncoder2Ds (conv_in, a
    ResnetBlock2D per stage - with its downsampling conv after right / bottom zero padding - and an
    AttentionBlock2D where attn_blocks says, GroupNorm + ReLU out), embeddings L2-normalised."""
    nn, F = torch.nn, torch.nn.functional

    class Resnet(nn.Module):
        def __init__(self, cin, cout, factor):
            super().__init__()
            self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
            self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
            self.downsample_conv = None
            if factor != 1:
                stride = tuple(factor) if isinstance(factor, list) else factor
                self.downsample_conv = nn.Conv2d(cout, cout, 3, stride=stride)
                # F.pad's (left, right, top, bottom)
                self.pad = (0, 1, 0, 1)
                if isinstance(factor, list) and factor[0] == 1:
                    self.pad = (0, 1, 1, 1)
                elif isinstance(factor, list) and factor[1] == 1:
                    self.pad = (1, 1, 0, 1)

        def forward(self, x):
            h = self.conv1(F.silu(self.norm1(x)))
            h = self.conv2(F.silu(self.norm2(h)))
            h = h + (x if self.conv_shortcut is None else self.conv_shortcut(x))
            if self.downsample_conv is not None:
                h = self.downsample_conv(F.pad(h, self.pad))
            return h

    class GEGLU(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.proj = nn.Linear(dim, 8 * dim)

        def forward(self, x):
            value, gate = self.proj(x).chunk(2, dim=-1)
            return value * F.gelu(gate)

    class Attention(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, bias=True) for _ in range(3))
            self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = (layer(x).view(b, n, 8, c // 8).transpose(1, 2) for layer in (self.to_q, self.to_k, self.to_v))
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
            return self.to_out[0](out)

    class AttentionBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.norm1 = nn.GroupNorm(32, dim, eps=1e-6)
            self.norm2 = nn.LayerNorm(dim)
            self.norm3 = nn.LayerNorm(dim)
            self.ff = nn.Module()
            self.ff.net = nn.ModuleList([GEGLU(dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])
            self.conv_in = nn.Conv2d(dim, dim, 1)
            self.conv_out = nn.Conv2d(dim, dim, 1)
            self.attn = Attention(dim)

        def forward(self, x):
            b, c, h, w = x.shape
            tokens = self.conv_in(self.norm1(x)).flatten(2).transpose(1, 2)
            tokens = self.attn(self.norm2(tokens)) + tokens
            net = self.ff.net
            tokens = net[2](net[0](self.norm3(tokens))) + tokens
            return self.conv_out(tokens.transpose(1, 2).reshape(b, c, h, w)) + x

    class Encoder(nn.Module):
        def __init__(self, in_channels, block_out_channels, downsample_factors, attn_blocks, **_):
            super().__init__()
            self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
            self.down_blocks = nn.ModuleList()
            channels = block_out_channels[0]
            for out, factor, attention in zip(block_out_channels, downsample_factors, attn_blocks):
                self.down_blocks.append(Resnet(channels, out, factor))
                if attention:
                    self.down_blocks.append(AttentionBlock(out))
                channels = out
            self.norm_out = nn.GroupNorm(32, block_out_channels[-1], eps=1e-6)

        def forward(self, x):
            x = self.conv_in(x)
            for block in self.down_blocks:
                x = block(x)
            return F.relu(self.norm_out(x)).reshape(len(x), -1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.audio_encoder = Encoder(**config["audio_encoder"])
            self.visual_encoder = Encoder(**config["visual_encoder"])

        def forward(self, frames, audio):
            return F.normalize(self.visual_encoder(frames), dim=1), F.normalize(self.audio_encoder(audio), dim=1)

    return Net()


def random_windows(seed, batch=BATCH):
    """Our layout: RGB lower faces (batch, 16, 128, 256, 3) in [0, 255], mel (batch, 80, 52) in [-4, 4]."""
    rng = np.random.default_rng(seed)
    frames = rng.uniform(0, 255, (batch, 16, 128, 256, 3)).astype(np.float32)
    mel = rng.uniform(-4, 4, (batch, 80, 52)).astype(np.float32)
    return frames, mel


def to_latentsync(torch, frames, mel):
    """LatentSync's layout: RGB in [-1, 1], "b f c h w -> b (f c) h w"; mel (batch, 1, 80, 52)."""
    stacked = (frames / 127.5 - 1.0).transpose(0, 1, 4, 2, 3).reshape(len(frames), 48, 128, 256)
    return torch.from_numpy(np.ascontiguousarray(stacked, np.float32)), torch.from_numpy(np.ascontiguousarray(mel[:, None]))


def randomize(torch, model):
    """PyTorch's initial weights, with the norms' scales and offsets made random too."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
    return model.eval()


class Shape:
    """A stand-in for a tensor where only its shape is read."""

    def __init__(self, shape):
        self.shape = tuple(shape)


def shapes_of(torch, config) -> dict:
    """The state dict's keys and shapes of the PyTorch network, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = stable_syncnet(torch, config)
    return {key: Shape(value.shape) for key, value in net.state_dict().items()}, sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    """(torch, the tiny PyTorch expert, its checkpoint saved as LatentSync saves its SyncNet)."""
    torch = import_torch()
    model = randomize(torch, stable_syncnet(torch, TINY))
    path = tmp_path_factory.mktemp("latentsync") / "stable_syncnet.pt"
    torch.save({"state_dict": model.state_dict(), "global_step": 1000}, path)
    return torch, model, path


@pytest.fixture(scope="module")
def converted(expert, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "latentsync.keras"
    assert main(["convert-weights", str(expert[2]), str(out)]) == 0
    return out


def test_family_is_registered_with_its_window():
    assert FAMILIES["latentsync"] is LATENTSYNC is LatentSyncNet.family
    assert LATENTSYNC.frame_shape == (16, 128, 256, 3) and LATENTSYNC.generator_face == (256, 256)
    assert LATENTSYNC.audio_shape == (80, 52)  # ceil(80 * 16 / 25)
    assert [LATENTSYNC.audio_window_start(f) for f in (0, 1, 2, 3, 16, 24)] == [int(80 * f / 25) for f in (0, 1, 2, 3, 16, 24)]


def test_converted_expert_embeds_like_pytorch(expert, converted, capsys):
    torch, torch_model, _ = expert
    model = load_model(converted)
    assert isinstance(model, LatentSyncNet) and model.family.name == "latentsync" and model.version is None
    frames, mel = random_windows(seed=1)
    with torch.no_grad():
        visual_ref, audio_ref = (x.numpy() for x in torch_model(*to_latentsync(torch, frames, mel)))
    cosine_ref = np.sum(audio_ref * visual_ref, axis=1)
    assert np.std(visual_ref, axis=0).max() > 0.01 and np.std(audio_ref, axis=0).max() > 0.01  # not agreement on a constant
    assert np.ptp(cosine_ref) > 1e-3
    visual, audio = model.embed_frames(frames).numpy(), model.embed_audio(mel).numpy()
    assert visual.shape == audio.shape == (BATCH, 256)
    np.testing.assert_allclose(visual, visual_ref, atol=TOLERANCE)
    np.testing.assert_allclose(audio, audio_ref, atol=TOLERANCE)
    out = model({"frames": frames, "audio": mel})
    np.testing.assert_allclose(out["probability"].numpy(), cosine_ref, atol=TOLERANCE)
    np.testing.assert_allclose(out["distance"].numpy(), 1 - cosine_ref, atol=TOLERANCE)


def test_convert_weights_says_what_it_found(expert, tmp_path, capsys):
    assert main(["convert-weights", str(expert[2]), str(tmp_path / "again.keras")]) == 0
    said = capsys.readouterr().out
    assert "latentsync (a LatentSync StableSyncNet of its own configuration" in said, said


def test_round_trip_keeps_family_configuration_and_calibration(converted, tmp_path):
    model = load_model(converted)
    model.calibration = example_calibration()
    save_model(model, tmp_path / "again.keras")
    again = load_model(tmp_path / "again.keras")
    assert again.family is LATENTSYNC and again.calibration.to_dict() == model.calibration.to_dict()
    assert again.config == model.config and again.version is None
    frames, mel = random_windows(seed=3, batch=1)
    np.testing.assert_array_equal(again.embed_frames(frames).numpy(), model.embed_frames(frames).numpy())
    np.testing.assert_array_equal(again.embed_audio(mel).numpy(), model.embed_audio(mel).numpy())


def test_stored_in_float16_it_stays_within_a_thousandth(converted, tmp_path):
    """LatentSync applies its expert in float16; stored so, the file is half the size."""
    model = load_model(converted)
    save_model(model, tmp_path / "half.keras", float16_weights=True)
    half = load_model(tmp_path / "half.keras")
    assert (tmp_path / "half.keras").stat().st_size < 0.6 * converted.stat().st_size
    frames, mel = random_windows(seed=5, batch=2)
    inputs = {"frames": frames, "audio": mel}
    np.testing.assert_allclose(half(inputs)["probability"].numpy(), model(inputs)["probability"].numpy(), atol=1e-3)


def test_sync_loss_reads_whole_faces_in_the_generators_range(converted):
    """SyncLoss through the family: (batch, 16, 256, 256, 3) faces in [-1, 1], the lower half taken."""
    import syncnet

    model = load_model(converted)
    frames, mel = random_windows(seed=4, batch=2)
    faces = np.concatenate([np.zeros_like(frames), frames], axis=2) / 127.5 - 1.0  # the upper half ignored
    loss = syncnet.SyncLoss(model)
    expected = model({"frames": frames, "audio": mel})["probability"].numpy()
    np.testing.assert_allclose(np.asarray(loss.probability(faces, mel)), expected, atol=1e-5)
    import tensorflow as tf

    faces = tf.Variable(faces)
    with tf.GradientTape() as tape:
        value = loss(faces, mel)
    gradient = tape.gradient(value, faces).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(gradient))
    assert not gradient[:, :, :128].any() and np.abs(gradient[:, :, 128:]).max() > 0  # only the lower half counts


@pytest.mark.parametrize("version", ["1.5", "1.0"])
def test_full_size_network_is_latentsyncs(version):
    """Built, not run: its keys and shapes are exactly the PyTorch network's of LatentSync's config,
    the parameter count the same, and the keys alone say which version it is."""
    torch = import_torch()
    config, description = PUBLISHED[version]
    shapes, torch_parameters = shapes_of(torch, config)
    assert torch_parameters == PARAMETERS[version]
    assert infer_config(shapes) == (config, version)
    assert recognise(shapes)[0] == "latentsync"
    model = LatentSyncNet(config=config, version=version)
    assert model.count_params() == PARAMETERS[version]
    assert {key: shape for key, shape in expected_keys(model).items()} == {key: value.shape for key, value in shapes.items()}
    assert list(expected_keys(model)) == list(shapes)  # the same order too
    assert description in model.description and model.embedding_dim == 2048
    attention = [key for key in shapes if key.endswith("attn.to_q.weight")]
    assert len(attention) == (4 if version == "1.5" else 0)


def test_wrong_shapes_into_the_model_are_refused():
    model = LatentSyncNet(config=TINY)
    with pytest.raises(UserError, match=r"\(batch, 16, 128, 256, 3\)"):
        model.embed_frames(np.zeros((2, 16, 256, 256, 3), np.float32))
    with pytest.raises(UserError, match=r"\(batch, 80, 52\)"):
        model.embed_audio(np.zeros((2, 80, 16), np.float32))


# --- Bad checkpoints: one clear line, nothing written ---------------------------------------------


def test_other_families_files_are_recognised_as_what_they_are():
    wav2lip = {"face_encoder.0.conv_block.0.weight": Shape((32, 15, 7, 7)), "audio_encoder.0.conv_block.0.weight": Shape((32, 1, 3, 3))}
    assert recognise(wav2lip)[0] == "wav2lip"
    assert recognise({"netcnnaud.0.weight": Shape((64, 1, 3, 3)), "netcnnlip.0.weight": Shape((96, 3, 5, 7, 7))})[0] == "syncnet_v2"


def test_latentsync_unet_is_named(expert, capsys, tmp_path):
    torch = expert[0]
    unet = {
        "conv_in.weight": torch.zeros(1),
        "down_blocks.0.resnets.0.norm1.weight": torch.zeros(1),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": torch.zeros(1),
        "down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": torch.zeros(1),
        "mid_block.resnets.0.conv1.weight": torch.zeros(1),
        "up_blocks.0.resnets.0.conv1.weight": torch.zeros(1),
        "conv_out.weight": torch.zeros(1),
    }
    torch.save({"state_dict": unet, "global_step": 1}, tmp_path / "latentsync_unet.pt")
    refused(capsys, tmp_path, tmp_path / "latentsync_unet.pt", "LatentSync's U-Net (latentsync_unet.pt)", "stable_syncnet.pt")


def test_mismatched_state_dicts_are_named(expert, capsys, tmp_path):
    torch, model, _ = expert
    state = dict(model.state_dict())
    del state["audio_encoder.down_blocks.4.attn.to_k.bias"]  # the attention block after stage 3
    state["visual_encoder.down_blocks.2.conv2.weight"] = torch.zeros(32, 32, 5, 5)
    state["visual_encoder.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "odd.pt")
    refused(
        capsys,
        tmp_path,
        tmp_path / "odd.pt",
        "LatentSync's SyncNet",
        "missing audio_encoder.down_blocks.4.attn.to_k.bias",
        "visual_encoder.down_blocks.2.conv2.weight has shape (32, 32, 5, 5), expected (32, 32, 3, 3)",
    )


def test_other_configurations_are_refused(expert, capsys, tmp_path):
    torch, model, _ = expert
    state = dict(model.state_dict())
    state["visual_encoder.conv_in.weight"] = torch.zeros(32, 64, 3, 3)  # syncnet_16_latent's 16 x 4 latent channels
    torch.save(state, tmp_path / "latent.pt")
    refused(capsys, tmp_path, tmp_path / "latent.pt", "visual_encoder reads 64 input channels", "only the 16-frame pixel ones")
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("audio_encoder.down_blocks.8.")}
    torch.save(state, tmp_path / "short.pt")
    (tmp_path / "out").rmdir()
    refused(capsys, tmp_path, tmp_path / "short.pt", "audio_encoder has 6 residual stages", "has 7")


def test_truncated_file_is_refused(expert, capsys, tmp_path):
    data = expert[2].read_bytes()
    (tmp_path / "stable_syncnet.pt").write_bytes(data[: len(data) // 3])
    refused(capsys, tmp_path, tmp_path / "stable_syncnet.pt", "cut short")


def test_convert_weights_bare_state_dict_with_module_prefix(expert, tmp_path):
    torch, model, _ = expert
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "bare.pt")
    converted = convert_weights(tmp_path / "bare.pt", tmp_path / "bare.keras")
    assert converted.family is LATENTSYNC


# --- LatentSync's face alignment ------------------------------------------------------------------


def face_landmarks(anchors_per_frame):
    """(n, 68, 2) dlib landmarks whose brow and nose groups have these (n, 3, 2) centres."""
    landmarks = np.zeros((len(anchors_per_frame), 68, 2))
    for group, anchor in zip((slice(17, 22), slice(22, 27), slice(27, 36)), range(3)):
        count = group.stop - group.start
        spread = np.linspace(-2, 2, count)[:, None] * np.array([1.0, 0.5])  # symmetric: the mean is the centre
        landmarks[:, group] = anchors_per_frame[:, anchor, None, :] + spread
    return landmarks


def test_alignment_is_latentsyncs_transform_and_smoothing():
    """The matrices against LatentSync's transformation_from_points (torch.std / torch.svd, its
    running offset), written here in PyTorch, on anchors that no similarity maps exactly."""
    torch = import_torch()
    from syncnet.faces import LATENTSYNC_TEMPLATE, latentsync_alignments

    rng = np.random.default_rng(5)
    base = np.array([[300.0, 200.0], [380.0, 205.0], [338.0, 245.0]])
    anchors = np.round(base + rng.normal(0, 3, (6, 3, 2)))
    ours = latentsync_alignments(face_landmarks(anchors))
    template = torch.tensor(LATENTSYNC_TEMPLATE, dtype=torch.float32)
    p_bias = None
    for points, matrix in zip(anchors, ours):
        p1 = torch.tensor(points, dtype=torch.float32)
        c1, c2 = p1.mean(0), template.mean(0)
        s1, s2 = torch.std(p1 - c1), torch.std(template - c2)
        n1, n2 = (p1 - c1) / s1, (template - c2) / s2
        u, _, v = torch.svd(n1.T @ n2)
        r = v @ u.T
        if torch.det(r) < 0:
            v[:, -1] = -v[:, -1]
            r = v @ u.T
        m = torch.cat([(s2 / s1) * r, c2.reshape(2, 1) - (s2 / s1) * r @ c1.reshape(2, 1)], dim=1)
        bias = n2[2] - n1[2]
        bias = bias if p_bias is None else p_bias * 0.2 + bias * 0.8
        p_bias = bias
        m[:, 2] += bias
        np.testing.assert_allclose(matrix, m.numpy(), atol=1e-3)


def test_aligned_face_puts_the_anchors_on_the_template():
    from syncnet.faces import LATENTSYNC_ALIGNED_SIZE, LATENTSYNC_TEMPLATE, crop_tracks, latentsync_alignments, latentsync_face

    angle, scale, shift = 0.2, 1.7, np.array([250.0, 120.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    anchors = (LATENTSYNC_TEMPLATE @ rotation.T + shift)[None]  # a tilted face, 1.7 x the template
    matrix = latentsync_alignments(face_landmarks(np.round(anchors)))[0]
    frame = np.zeros((720, 720, 3), np.uint8)
    x, y = np.round(anchors[0, 2]).astype(int)
    frame[y - 3 : y + 4, x - 3 : x + 4] = 255  # a white square on the nose
    face = latentsync_face(frame, matrix)
    assert face.shape == (256, 256, 3) and face[0, 0, 0] == 0  # inside the frame: black, not the grey fill
    rows, cols = np.nonzero(face[..., 0] > 128)
    width, height = LATENTSYNC_ALIGNED_SIZE
    nose = LATENTSYNC_TEMPLATE[2] * np.array([256 / width, 256 / height])
    assert abs(cols.mean() - nose[0]) < 1.5 and abs(rows.mean() - nose[1]) < 1.5
    assert latentsync_face(np.zeros((40, 40, 3), np.uint8), matrix)[128, 128, 0] == 127  # off the frame: grey

    class Track:
        track_id, start, end, landmarks = 0, 0, 1, face_landmarks(np.round(anchors))

    crops = dict(crop_tracks([frame], [Track()], "latentsync_face"))
    assert crops[0][0].shape == (128, 256, 3)
    np.testing.assert_array_equal(crops[0][0], face[128:])


def test_family_mel_is_librosa_0_10s():
    """LatentSync's melspectrogram (Wav2Lip's hparams; librosa >= 0.10 pads the centred STFT with zeros)."""
    librosa = pytest.importorskip("librosa", reason="librosa is not installed (the test extra)")
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    spectrum = np.abs(librosa.stft(y=lfilter([1, -0.97], [1], wav), n_fft=800, hop_length=200, win_length=800, pad_mode="constant"))
    decibels = 20 * np.log10(np.maximum(1e-5, librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) @ spectrum)) - 20
    reference = np.clip(8 * ((decibels + 100) / 100) - 4, -4, 4)
    ours = np.asarray(LATENTSYNC.audio_features(wav))
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    windows = LATENTSYNC.audio_windows(wav, [0.0, 0.64])
    assert windows.shape == (2, 80, 52)
    np.testing.assert_array_equal(windows[1], ours[:, 51:103])  # frame 16 starts at int(80 * 16 / 25) = 51


def test_score_command_runs_through_the_family(tmp_path, capsys):
    """`syncnet score --model` with a LatentSync-family expert: aligned faces, 16-frame windows, its
    mel windows, 1 - cosine, the family named in the result."""
    import json

    from synthetic import write_clip

    clip = tmp_path / "talking.mp4"
    write_clip(clip, seconds=1.2, size=(160, 160))
    save_model(LatentSyncNet(config=TINY, name="small_latentsync"), tmp_path / "small_latentsync.keras")
    assert main(["score", "--json", "--vshift", "3", "--model", str(tmp_path / "small_latentsync.keras"), str(clip)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "ok", result["error"]
    assert result["family"] == "latentsync" and result["tracks"][0]["vshift"] == 3
    assert 0.0 <= result["min_dist"] <= 1.0
    assert len(result["tracks"][0]["mean_distance"]) == 7
