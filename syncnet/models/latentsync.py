"""LatentSync's expert (`StableSyncNet` of ByteDance's LatentSync, latentsync/models/stable_syncnet.py):
the network of its published `stable_syncnet.pt` (LatentSync 1.5 / 1.6) and `latentsync_syncnet.pt`
(1.0), built from a configuration, and the converter from those checkpoints.

The network: two encoders of the same kind, one over the lower halves of 16 RGB faces (256 x 256 faces,
the lower 128 x 256, the 16 frames stacked frame-major into 48 channels: channel 3 t + c, pixels in
[-1, 1]), one over an 80 x 52 mel window (syncnet.audio.mel with zero-padded STFT ends, as librosa
0.10 computes it). Each encoder is

    conv_in (3 x 3)
    a stage per entry of `block_out_channels`: a residual block - GroupNorm (32 groups, eps 1e-6) ->
        SiLU -> 3 x 3 conv -> GroupNorm -> SiLU -> 3 x 3 conv, + the input (through a 1 x 1 conv when
        the channels change) - then, when the stage's factor is not 1, zero padding on the right and
        bottom (and both sides of an axis the factor leaves alone) and an unpadded 3 x 3 conv of that
        stride; then, where `attn_blocks` says so, an attention block: GroupNorm -> 1 x 1 conv ->
        tokens -> LayerNorm -> 8-head self-attention (biased q, k, v) + residual -> LayerNorm -> GEGLU
        feed-forward (x 4) + residual -> 1 x 1 conv, + the block's input
    GroupNorm -> ReLU, flattened (channels first, as PyTorch's reshape) and L2-normalised.

P(in sync) is the cosine similarity of the two embeddings (in [0, 1]: both came out of a ReLU), trained
with BCE against in-sync / off-sync labels, as Wav2Lip's expert.

The configuration is LatentSync's own (`model:` of its configs/syncnet/*.yaml): for each encoder
`in_channels`, `block_out_channels`, `downsample_factors` (an int, or [height, width]) and
`attn_blocks` (0 / 1 per stage). `PUBLISHED` holds the two released ones; tests build a narrow one
through the same code. The weights do not say the downsampling factors, so the converter takes them
from the published configuration with the same number of stages.

Our frames are RGB pixels in [0, 255], as every family's `embed_frames` takes them: the model maps them
to [-1, 1] itself. GroupNorm has no running statistics, so `batch_statistics` changes nothing here.
"""

import keras
from keras import ops

from ..errors import UserError
from .cosine import CosineExpert
from .family import LATENTSYNC

GROUPS = 32
GROUP_NORM_EPSILON = 1e-6
LAYER_NORM_EPSILON = 1e-5  # PyTorch's nn.LayerNorm default
HEADS = 8
FEED_FORWARD_MULTIPLE = 4  # diffusers' FeedForward: inner dim 4 x, GEGLU's projection twice that

AUDIO_FACTORS = [[2, 1], 2, 2, 1, 2, 2, [2, 3]]  # 80 x 52 mel -> 1 x 1
VISUAL_FACTORS = [[1, 2], 2, 2, 2, 2, 2, 2, 2]  # 128 x 256 -> 1 x 1
AUDIO_CHANNELS = [32, 64, 128, 256, 512, 1024, 2048]
VISUAL_CHANNELS = [64, 128, 256, 256, 512, 1024, 2048, 2048]


def published_config(attention: bool) -> dict:
    """LatentSync's configs/syncnet/syncnet_16_pixel_attn.yaml (attention: 1.5 / 1.6) or
    syncnet_16_pixel.yaml (1.0), its `model:` section."""
    return {
        "audio_encoder": {
            "in_channels": 1,
            "block_out_channels": list(AUDIO_CHANNELS),
            "downsample_factors": [list(f) if isinstance(f, list) else f for f in AUDIO_FACTORS],
            "attn_blocks": [0, 0, 0, 1, 1, 0, 0] if attention else [0] * len(AUDIO_CHANNELS),
        },
        "visual_encoder": {
            "in_channels": 3 * LATENTSYNC.window_frames,
            "block_out_channels": list(VISUAL_CHANNELS),
            "downsample_factors": [list(f) if isinstance(f, list) else f for f in VISUAL_FACTORS],
            "attn_blocks": [0, 0, 0, 0, 1, 1, 0, 0] if attention else [0] * len(VISUAL_CHANNELS),
        },
    }


# version -> (configuration, what the file is)
PUBLISHED = {
    "1.5": (published_config(attention=True), "LatentSync 1.5 / 1.6's stable_syncnet.pt"),
    "1.0": (published_config(attention=False), "LatentSync 1.0's latentsync_syncnet.pt"),
}
ENCODERS = ("audio_encoder", "visual_encoder")


def _factor(factor) -> tuple:
    return (factor, factor) if isinstance(factor, int) else tuple(factor)


def downsample_padding(factor) -> tuple:
    """((top, bottom), (left, right)) zeros before a downsampling conv of this factor: right and bottom
    by one; an axis of factor 1 gets one on each side instead (so that axis keeps its size)."""
    if isinstance(factor, int):
        return ((0, 1), (0, 1))
    height, width = factor
    if height == 1:
        return ((1, 1), (0, 1))
    if width == 1:
        return ((0, 1), (1, 1))
    return ((0, 1), (0, 1))


def _group_norm(name, dtype):
    return keras.layers.GroupNormalization(GROUPS, epsilon=GROUP_NORM_EPSILON, name=name, dtype=dtype)


def _conv(filters, kernel, name, dtype, strides=1, padding="same"):
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="syncnet")
class ResnetDownBlock(keras.layers.Layer):
    """GroupNorm -> SiLU -> conv -> GroupNorm -> SiLU -> conv, + the input (1 x 1 conv when the
    channels change), then, for a factor other than 1, zero padding and an unpadded stride conv."""

    def __init__(self, in_channels, out_channels, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor = list(factor) if isinstance(factor, (list, tuple)) else factor
        dtype = self.dtype_policy
        self.norm1 = _group_norm("norm1", dtype)
        self.conv1 = _conv(out_channels, 3, "conv1", dtype)
        self.norm2 = _group_norm("norm2", dtype)
        self.conv2 = _conv(out_channels, 3, "conv2", dtype)
        self.conv_shortcut = _conv(out_channels, 1, "conv_shortcut", dtype) if in_channels != out_channels else None
        if self.factor == 1:
            self.pad = self.downsample_conv = None
        else:
            self.pad = keras.layers.ZeroPadding2D(downsample_padding(self.factor), dtype=dtype)
            self.downsample_conv = _conv(out_channels, 3, "downsample_conv", dtype, strides=_factor(self.factor), padding="valid")

    def build(self, input_shape):
        shape = tuple(input_shape)
        inner = (*shape[:-1], self.out_channels)
        self.norm1.build(shape)
        self.conv1.build(shape)
        self.norm2.build(inner)
        self.conv2.build(inner)
        if self.conv_shortcut is not None:
            self.conv_shortcut.build(shape)
        if self.downsample_conv is not None:
            self.pad.build(inner)
            self.downsample_conv.build(self.pad.compute_output_shape(inner))

    def call(self, x):
        hidden = self.conv1(ops.silu(self.norm1(x)))
        hidden = self.conv2(ops.silu(self.norm2(hidden)))
        hidden = hidden + (x if self.conv_shortcut is None else self.conv_shortcut(x))
        if self.downsample_conv is not None:
            hidden = self.downsample_conv(self.pad(hidden))
        return hidden

    def compute_output_shape(self, input_shape):
        shape = (*tuple(input_shape)[:-1], self.out_channels)
        if self.downsample_conv is not None:
            shape = self.downsample_conv.compute_output_shape(self.pad.compute_output_shape(shape))
        return shape

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "out_channels": self.out_channels, "factor": self.factor}


@keras.saving.register_keras_serializable(package="syncnet")
class AttentionBlock(keras.layers.Layer):
    """GroupNorm -> 1 x 1 conv -> (h w) tokens -> LayerNorm -> self-attention + residual -> LayerNorm ->
    GEGLU feed-forward + residual -> 1 x 1 conv, + the block's input."""

    def __init__(self, channels, heads=HEADS, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.heads = channels, heads
        dtype = self.dtype_policy
        self.norm1 = _group_norm("norm1", dtype)
        self.conv_in = _conv(channels, 1, "conv_in", dtype)
        self.norm2 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm2", dtype=dtype)
        self.to_q, self.to_k, self.to_v, self.to_out = (
            keras.layers.Dense(channels, name=name, dtype=dtype) for name in ("to_q", "to_k", "to_v", "to_out")
        )
        self.norm3 = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm3", dtype=dtype)
        inner = FEED_FORWARD_MULTIPLE * channels
        self.ff_proj = keras.layers.Dense(2 * inner, name="ff_proj", dtype=dtype)  # GEGLU: value and gate
        self.ff_out = keras.layers.Dense(channels, name="ff_out", dtype=dtype)
        self.conv_out = _conv(channels, 1, "conv_out", dtype)

    def build(self, input_shape):
        shape = tuple(input_shape)
        tokens = (None, None, self.channels)
        self.norm1.build(shape)
        self.conv_in.build(shape)
        for layer in (self.norm2, self.to_q, self.to_k, self.to_v, self.norm3, self.ff_proj):
            layer.build(tokens)
        self.to_out.build(tokens)
        self.ff_out.build((None, None, FEED_FORWARD_MULTIPLE * self.channels))
        self.conv_out.build(shape)

    def call(self, x):
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        head_dim = self.channels // self.heads
        tokens = ops.reshape(self.conv_in(self.norm1(x)), (batch, height * width, self.channels))
        normed = self.norm2(tokens)
        q, k, v = (ops.reshape(layer(normed), (batch, height * width, self.heads, head_dim)) for layer in (self.to_q, self.to_k, self.to_v))
        attended = ops.dot_product_attention(q, k, v, scale=head_dim**-0.5)
        tokens = self.to_out(ops.reshape(attended, (batch, height * width, self.channels))) + tokens
        value, gate = ops.split(self.ff_proj(self.norm3(tokens)), 2, axis=-1)
        tokens = self.ff_out(value * ops.gelu(gate, approximate=False)) + tokens
        return self.conv_out(ops.reshape(tokens, (batch, height, width, self.channels))) + x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "heads": self.heads}


@keras.saving.register_keras_serializable(package="syncnet")
class DownEncoder(keras.layers.Layer):
    """conv_in -> residual (and attention) blocks -> GroupNorm -> ReLU -> flattened, from one
    encoder's configuration. `blocks[j]` is PyTorch's `down_blocks.j` (attention blocks count)."""

    def __init__(self, in_channels, block_out_channels, downsample_factors, attn_blocks, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if not len(block_out_channels) == len(downsample_factors) == len(attn_blocks):
            raise UserError("block_out_channels, downsample_factors and attn_blocks need one entry per stage")
        if any(channels % GROUPS for channels in block_out_channels):
            raise UserError(f"every stage's channels must be a multiple of {GROUPS} (GroupNorm's groups), got {list(block_out_channels)}")
        self.in_channels = in_channels
        self.block_out_channels = list(block_out_channels)
        self.downsample_factors = [list(f) if isinstance(f, (list, tuple)) else f for f in downsample_factors]
        self.attn_blocks = list(attn_blocks)
        self.dropout = dropout  # 0 in both published configurations; inference ignores it
        dtype = self.dtype_policy
        self.conv_in = _conv(block_out_channels[0], 3, "conv_in", dtype)
        self.blocks = []
        channels = block_out_channels[0]
        for out_channels, factor, attention in zip(self.block_out_channels, self.downsample_factors, self.attn_blocks):
            self.blocks.append(ResnetDownBlock(channels, out_channels, factor, name=f"down_blocks_{len(self.blocks)}", dtype=dtype))
            if attention:
                self.blocks.append(AttentionBlock(out_channels, name=f"down_blocks_{len(self.blocks)}", dtype=dtype))
            channels = out_channels
        self.norm_out = _group_norm("norm_out", dtype)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.conv_in.build(shape)
        shape = self.conv_in.compute_output_shape(shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.norm_out.build(shape)

    def call(self, x):
        x = self.conv_in(x)
        for block in self.blocks:
            x = block(x)
        x = ops.relu(self.norm_out(x))
        # PyTorch flattens (c, h, w); both published encoders end at 1 x 1, where the order is moot
        return ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (ops.shape(x)[0], -1))

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "block_out_channels": self.block_out_channels,
            "downsample_factors": self.downsample_factors,
            "attn_blocks": self.attn_blocks,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="syncnet")
class LatentSyncNet(CosineExpert):
    """LatentSync's expert (see CosineExpert): frames (batch, 16, 128, 256, 3) RGB lower faces in
    [0, 255], audio (batch, 80, 52) mel. `config`: LatentSync's `model:` configuration (default: the
    published 1.5 / 1.6 one); `version`: "1.5", "1.0" or None (a configuration of one's own)."""

    family = LATENTSYNC

    def __init__(self, config=None, version=None, calibration=None, **kwargs):
        super().__init__(calibration=calibration, **kwargs)
        if config is None:
            config, version = PUBLISHED["1.5"][0], "1.5"
        self.config = {encoder: dict(config[encoder]) for encoder in ENCODERS}
        self.version = version
        self.audio_encoder = DownEncoder(**self.config["audio_encoder"], name="audio_encoder", dtype=self.dtype_policy)
        self.visual_encoder = DownEncoder(**self.config["visual_encoder"], name="visual_encoder", dtype=self.dtype_policy)
        self.visual_encoder.build((None, *self.family.frame_size, self.config["visual_encoder"]["in_channels"]))
        self.audio_encoder.build((None, *self.family.audio_shape, self.config["audio_encoder"]["in_channels"]))
        self.built = True

    embedding_dim = property(lambda self: self.config["visual_encoder"]["block_out_channels"][-1])

    @property
    def description(self) -> str:
        """What this network is: the published checkpoint it is the architecture of, or its own."""
        if self.version in PUBLISHED:
            return PUBLISHED[self.version][1]
        return (
            "a LatentSync StableSyncNet of its own configuration (channels "
            + ", ".join(f"{encoder.split('_')[0]} {self.config[encoder]['block_out_channels']}" for encoder in ENCODERS)
            + ")"
        )

    def encode_visual(self, stacked, training, batch_statistics):
        return self.visual_encoder(stacked)  # GroupNorm and no dropout: neither flag changes anything

    def encode_audio(self, audio, training, batch_statistics):
        return self.audio_encoder(audio)

    def get_config(self):
        return {**super().get_config(), "config": self.config, "version": self.version}


# --- The published checkpoints -----------------------------------------------------------------

# Keys of LatentSync's U-Net (latentsync_unet.pt), to name it when it is given instead of the expert.
UNET_ROOTS = {"conv_in", "down_blocks", "up_blocks"}


def is_checkpoint(keys) -> bool:
    """Whether a state dict's keys look like a LatentSync SyncNet (its two DownEncoders)."""
    keys = list(keys)
    return any(key.startswith("audio_encoder.conv_in.") for key in keys) and any(key.startswith("visual_encoder.conv_in.") for key in keys)


def other_latentsync_checkpoint(keys) -> str | None:
    """A description of LatentSync's U-Net when the keys are its, else None."""
    roots = {key.split(".")[0] for key in keys}
    if UNET_ROOTS <= roots and ("mid_block" in roots or "conv_out" in roots):
        return "LatentSync's U-Net (latentsync_unet.pt), not its SyncNet (stable_syncnet.pt / latentsync_syncnet.pt)"
    return None


def _torch_layers(model: LatentSyncNet):
    """(PyTorch module path, Keras layer, kind) for every layer with weights; kind "conv", "dense" or "norm"."""
    for encoder_name in ENCODERS:
        encoder = getattr(model, encoder_name)
        yield f"{encoder_name}.conv_in", encoder.conv_in, "conv"
        for index, block in enumerate(encoder.blocks):
            prefix = f"{encoder_name}.down_blocks.{index}"
            if isinstance(block, ResnetDownBlock):
                yield f"{prefix}.norm1", block.norm1, "norm"
                yield f"{prefix}.conv1", block.conv1, "conv"
                yield f"{prefix}.norm2", block.norm2, "norm"
                yield f"{prefix}.conv2", block.conv2, "conv"
                if block.conv_shortcut is not None:
                    yield f"{prefix}.conv_shortcut", block.conv_shortcut, "conv"
                if block.downsample_conv is not None:
                    yield f"{prefix}.downsample_conv", block.downsample_conv, "conv"
            else:  # in the order AttentionBlock2D declares its modules (its state dict's order)
                yield f"{prefix}.norm1", block.norm1, "norm"
                yield f"{prefix}.norm2", block.norm2, "norm"
                yield f"{prefix}.norm3", block.norm3, "norm"
                yield f"{prefix}.ff.net.0.proj", block.ff_proj, "dense"
                yield f"{prefix}.ff.net.2", block.ff_out, "dense"
                yield f"{prefix}.conv_in", block.conv_in, "conv"
                yield f"{prefix}.conv_out", block.conv_out, "conv"
                for name in ("to_q", "to_k", "to_v"):
                    yield f"{prefix}.attn.{name}", getattr(block, name), "dense"
                yield f"{prefix}.attn.to_out.0", block.to_out, "dense"
        yield f"{encoder_name}.norm_out", encoder.norm_out, "norm"


def expected_keys(model: LatentSyncNet) -> dict[str, tuple]:
    """Every key of the PyTorch state dict this network's weights come from, with its shape, in order."""
    keys = {}
    for path, layer, kind in _torch_layers(model):
        kernel = tuple(layer.weights[0].shape)
        if kind == "conv":  # Keras (kh, kw, in, out) <- PyTorch (out, in, kh, kw)
            keys[f"{path}.weight"] = (kernel[3], kernel[2], kernel[0], kernel[1])
        elif kind == "dense":  # Keras (in, out) <- PyTorch (out, in)
            keys[f"{path}.weight"] = (kernel[1], kernel[0])
        else:
            keys[f"{path}.weight"] = kernel
        keys[f"{path}.bias"] = tuple(layer.weights[1].shape)
    return keys


def infer_config(state: dict) -> tuple[dict, str | None]:
    """(LatentSync's configuration of the network a state dict holds, the published version it is
    or None): channels and attention from the keys, downsampling factors from the published
    configuration with the same number of stages. Raises UserError when it cannot be one of ours."""
    reference = PUBLISHED["1.5"][0]
    config = {}
    for encoder in ENCODERS:
        conv_in = state.get(f"{encoder}.conv_in.weight")
        if conv_in is None or len(conv_in.shape) != 4:
            raise UserError(f"missing {encoder}.conv_in.weight, or not a conv kernel")
        channels, attention, index = [], [], 0
        while True:
            prefix = f"{encoder}.down_blocks.{index}."
            names = [key[len(prefix) :] for key in state if key.startswith(prefix)]
            if not names:
                break
            if any(name.startswith(("attn.", "ff.", "norm3.")) for name in names):  # an attention block
                if not attention or attention[-1]:
                    raise UserError(f"{prefix}* is an attention block that follows no residual block")
                attention[-1] = 1
            else:  # a residual block: its channels from whichever of its weights is there
                sizes = [
                    state[prefix + name].shape[0] for name in ("conv1.weight", "conv2.weight", "norm2.weight") if prefix + name in state
                ]
                if not sizes:
                    raise UserError(f"{prefix}* has neither conv1, conv2 nor norm2 weights")
                channels.append(int(sizes[0]))
                attention.append(0)
            index += 1
        stages = len(reference[encoder]["block_out_channels"])
        if len(channels) != stages:
            raise UserError(f"its {encoder} has {len(channels)} residual stages, LatentSync's 16-frame pixel SyncNet has {stages}")
        in_channels = int(conv_in.shape[1])
        if in_channels != reference[encoder]["in_channels"]:
            reads = "16 RGB frames (48 channels)" if encoder == "visual_encoder" else "one mel plane"
            raise UserError(
                f"its {encoder} reads {in_channels} input channels, where this family's reads {reads} "
                "(LatentSync's latent-space or 25-frame SyncNet? only the 16-frame pixel ones are supported)"
            )
        config[encoder] = {
            "in_channels": in_channels,
            "block_out_channels": channels,
            "downsample_factors": reference[encoder]["downsample_factors"],
            "attn_blocks": attention,
        }
    version = next(
        (
            version
            for version, (published, _) in PUBLISHED.items()
            if all(
                config[e]["block_out_channels"] == published[e]["block_out_channels"]
                and config[e]["attn_blocks"] == published[e]["attn_blocks"]
                for e in ENCODERS
            )
        ),
        None,
    )
    return config, version


def convert_state_dict(state: dict) -> LatentSyncNet:
    """A LatentSyncNet with the weights of a LatentSync SyncNet state dict (float32 numpy arrays,
    `module.` prefixes already stripped): `stable_syncnet.pt` (1.5 / 1.6), `latentsync_syncnet.pt` (1.0)
    or one of another width. Raises UserError naming the first few missing, unexpected or mis-shaped keys."""
    config, version = infer_config(state)
    try:
        model = LatentSyncNet(config=config, version=version, name="latentsync_expert")
    except (ValueError, UserError) as error:
        raise UserError(f"its shapes do not make a StableSyncNet: {str(error).splitlines()[0]}") from None
    expected = expected_keys(model)
    problems = []
    for key, shape in expected.items():
        if key not in state:
            problems.append(f"missing {key}")
        elif tuple(state[key].shape) != shape:
            problems.append(f"{key} has shape {tuple(state[key].shape)}, expected {shape}")
    problems += [f"unexpected {key}" for key in state if key not in expected]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(f"does not match {model.description}: " + "; ".join(problems[:3]) + more)
    for path, layer, kind in _torch_layers(model):
        weight, bias = state[f"{path}.weight"], state[f"{path}.bias"]
        if kind == "conv":
            weight = weight.transpose(2, 3, 1, 0)
        elif kind == "dense":
            weight = weight.T
        layer.set_weights([weight, bias])
    return model


def build(version: str = "1.5") -> LatentSyncNet:
    """A new, untrained LatentSync expert of a published configuration."""
    return LatentSyncNet(config=PUBLISHED[version][0], version=version, name="latentsync_expert")
