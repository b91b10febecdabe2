"""From media to window embeddings: the one pipeline scoring, speakers and calibration share.

`embed_media(media, model)`: check the media (audio not silent, 6+ frames with audio), follow its
faces (faces.find_face_tracks), lay out each track's windows as syncnet_python does (`plan_tracks`),
crop every frame once (faces.crop_tracks, decoding a few frames ahead), and send each 5-frame window
of crops and each 0.2 s MFCC window through the model's towers once, in batches that mix tracks.
Frames stream twice from the file (tracks, then crops); only embeddings are kept, so memory grows by
2 x embedding size per frame (8 KB a frame for syncnet_v2), never by the frames.
"""

import functools
import sys
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from . import hyperparameters as hp
from .errors import UserError

BATCH_WINDOWS = 64  # windows per tower call


@dataclass
class TrackPlan:
    """Where a track's windows are: frames start..start + windows + 4, and its embeddings so far."""

    track_id: int
    start: int
    num_frames: int
    windows: int  # syncnet_python's lastframe = min_length - 5 (it leaves the last possible window out)
    vshift: int
    frame_embeddings: list = field(default_factory=list)


@dataclass
class TrackPlans:
    """What `plan_tracks` found: the face tracks worth scoring, their windows, and what was left out."""

    tracks: list  # faces.FaceTrack with at least one window under audio
    plans: dict  # track id -> TrackPlan
    warnings: list[str]
    audio_frames: int  # 25 fps frames with audio under them


def plan_tracks(media, vshift: int, progress: bool = False, window_frames: int = hp.WINDOW_FRAMES) -> TrackPlans:
    """Check the media (audio not silent, at least window_frames + 1 frames with audio), follow its
    faces, and lay out each track's windows of `window_frames` frames as syncnet_python does. Raises
    UserError with a one-line reason."""
    from .faces import find_face_tracks
    from .video import is_silent

    path = media.path
    if is_silent(media.audio):
        raise UserError(f"{path}: the audio is silent")
    audio_frames = len(media.audio) // hp.SAMPLES_PER_FRAME
    if min(media.num_frames, audio_frames) < window_frames + 1:
        raise UserError(
            f"{path}: too short: {min(media.num_frames, audio_frames)} frames of video with audio, need at least {window_frames + 1}"
        )

    tracking = find_face_tracks(progress_bar(media.frames(gray=True), media.num_frames, "faces", progress))
    if not tracking.tracks:
        raise UserError(f"{path}: no face found")
    warnings, plans = list(getattr(media, "warnings", ())), {}  # the decoder's first (optional: see MediaLike)
    for track in tracking.tracks:
        # syncnet_python cuts each track's audio to the track: it scores min(track, audio) frames
        num_frames = min(track.end - track.start, audio_frames - track.start)
        windows = num_frames - window_frames
        if windows < 1:
            warnings.append(f"face track {track.track_id}: only {max(num_frames, 0)} frames with audio, not scored")
            continue
        track_vshift = min(vshift, windows - 1)
        if track_vshift < vshift:
            warnings.append(
                f"face track {track.track_id}: {num_frames} frames is too short to search +-{vshift} frames; searched +-{track_vshift}"
            )
        plans[track.track_id] = TrackPlan(track.track_id, track.start, num_frames, windows, track_vshift)
    if not plans:
        raise UserError(f"{path}: no face track is longer than {window_frames} frames")
    tracks = [track for track in tracking.tracks if track.track_id in plans]
    return TrackPlans(tracks, plans, warnings, audio_frames)


@dataclass(frozen=True)
class Towers:
    """A model's two towers (and frame encoder) as graph functions of any batch size (2-4x faster
    than eager calls)."""

    encode_frames: object  # (n, H, W, C) crops -> features; None when the visual tower reads crops
    embed_features: object
    embed_audio: object
    feature_shape: tuple
    embedding_dim: int
    family: object  # models.family.ExpertFamily: the audio window rule, the window length


@functools.lru_cache(maxsize=4)  # traced once per model; keeps the last few models alive, no more
def compiled_towers(model) -> Towers:
    import tensorflow as tf

    def compiled(function, shape):
        return tf.function(function, input_signature=[tf.TensorSpec((None, *shape), tf.float32)])

    return Towers(
        encode_frames=None if model.frame_encoder is None else compiled(model.encode_frames, model.frame_shape[1:]),
        embed_features=compiled(model.embed_features, model.feature_shape),
        embed_audio=compiled(model.embed_audio, model.audio_shape),
        feature_shape=model.feature_shape,
        embedding_dim=model.embedding_dim,
        family=model.family,
    )


def audio_features(family, waveform) -> np.ndarray:
    """A whole track's features for `family`: (features, steps). MFCC in chunks (memory flat in the
    track's length); a mel spectrogram whole (its STFT frames take 3.2 KB a step: 150 MB for 10 min)."""
    from .audio import mfcc_in_chunks

    if family.audio == "mfcc":
        return mfcc_in_chunks(waveform)
    return family.audio_features(waveform).numpy()


def embed_audio_windows(towers, features, frames, batch_size: int = BATCH_WINDOWS) -> np.ndarray:
    """Audio embedding of the family's audio window under each of `frames` (25 fps frame indices),
    as (last frame + 1, d); the frames not asked for stay zero. Each window goes through the audio
    tower once, however many tracks share it."""
    needed = sorted(set(frames))
    family = towers.family
    embeddings = np.zeros((needed[-1] + 1, towers.embedding_dim), np.float32)
    for begin in range(0, len(needed), batch_size):
        frames = needed[begin : begin + batch_size]
        batch = np.stack([audio_window(family, features, family.audio_window_start(frame)) for frame in frames])
        embeddings[frames] = towers.embed_audio(batch).numpy()
    return embeddings


def audio_window(family, features: np.ndarray, start: int) -> np.ndarray:
    """features[:, start : start + the family's window], zero-padded where the audio ends first (a
    mel window may reach one step past a track's last full step)."""
    window = features[:, start : start + family.audio_window_steps]
    missing = family.audio_window_steps - window.shape[1]
    return np.pad(window, ((0, 0), (0, missing))) if missing else window


def encoded_crops(towers, crops, batch_size):
    """The (frame index, {track_id: crop}) stream with each crop replaced by what the visual tower
    reads: the frame encoder's features as the codes shards hold, `batch_size` crops per call - each
    frame encoded once, however many windows it is in - or the crop itself."""
    if towers.encode_frames is None:
        yield from crops
        return
    from .models.towers import lip_feature_codes

    pending, count = [], 0

    def flush():
        flat = np.stack([crop for _, track_crops in pending for crop in track_crops.values()]).astype(np.float32)
        features = iter(lip_feature_codes(towers.encode_frames(flat).numpy()))
        encoded = [(frame_index, {track_id: next(features) for track_id in track_crops}) for frame_index, track_crops in pending]
        pending.clear()
        return encoded

    for frame_index, track_crops in crops:
        pending.append((frame_index, track_crops))
        count += len(track_crops)
        if count >= batch_size:
            yield from flush()
            count = 0
    if pending:
        yield from flush()


def embed_frame_windows(towers, crops, plans, batch_size: int = BATCH_WINDOWS):
    """Stream crops, keep the last 5 per track (encoded, for a model with a frame encoder), and send
    every window a track needs through the visual tower in batches that mix tracks; the embeddings
    land in each plan in window order."""
    window_frames = towers.family.window_frames
    recent = {track_id: deque(maxlen=window_frames) for track_id in plans}
    pending_ids, pending_windows = [], []

    def flush():
        embeddings = towers.embed_features(np.stack(pending_windows).astype(np.float32)).numpy()
        for track_id, embedding in zip(pending_ids, embeddings):
            plans[track_id].frame_embeddings.append(embedding[None])
        pending_ids.clear()
        pending_windows.clear()

    for frame_index, track_crops in encoded_crops(towers, crops, batch_size):
        for track_id, crop in track_crops.items():
            plan = plans.get(track_id)
            if plan is None:
                continue
            recent[track_id].append(crop)
            window = frame_index - (window_frames - 1) - plan.start
            if len(recent[track_id]) == window_frames and 0 <= window < plan.windows:
                pending_ids.append(track_id)
                pending_windows.append(np.stack(recent[track_id]).reshape(towers.feature_shape))
                if len(pending_windows) == batch_size:
                    flush()
    if pending_windows:
        flush()
    for plan in plans.values():
        if len(plan.frame_embeddings) != plan.windows:
            raise RuntimeError(  # a bug: every planned window gets its crops
                f"face track {plan.track_id}: got {len(plan.frame_embeddings)} crop windows of {plan.windows}"
            )


@dataclass
class VideoEmbeddings:
    """A video's face tracks with their window embeddings, and the embedding of every audio window."""

    media: object  # video.Media
    tracks: list  # faces.FaceTrack, those with at least one window with audio
    plans: dict  # track id -> TrackPlan: start, windows, vshift, frame_embeddings (windows, d)
    audio: np.ndarray  # (audio windows, d): the audio window starting at each 25 fps frame
    warnings: list[str] = field(default_factory=list)

    def track_audio(self, plan) -> np.ndarray:
        """The audio embeddings paired with a track's windows at offset 0."""
        return self.audio[plan.start : plan.start + plan.windows]


def embed_media(
    media, model, *, vshift: int = hp.VSHIFT, every_audio_window: bool = False, batch_size: int = BATCH_WINDOWS, progress: bool = False
) -> VideoEmbeddings:
    """The one path from media to window embeddings, for scoring, speakers and calibration: check
    the media, follow its faces, lay out each track's windows, and send the crops and the MFCC
    windows through the model's towers. `every_audio_window`: embed the audio under every frame,
    not only under the faces (calibration pairs one clip's faces with another's audio). Raises
    UserError (MediaError) when the media cannot be used: silent, too short, no face."""
    from .faces import crop_tracks, frames_to_crop

    family = model.family
    planned = plan_tracks(media, vshift, progress, family.window_frames)
    towers = compiled_towers(model)
    if every_audio_window:
        frames = range(planned.audio_frames - family.window_frames)
    else:
        frames = set().union(*(range(plan.start, plan.start + plan.windows) for plan in planned.plans.values()))
    audio = embed_audio_windows(towers, audio_features(family, media.audio), frames, batch_size)
    crops = crop_tracks(progress_bar(frames_to_crop(media, family.crop), media.num_frames, "lips", progress), planned.tracks, family.crop)
    embed_frame_windows(towers, crops, planned.plans, batch_size)
    for plan in planned.plans.values():
        plan.frame_embeddings = np.concatenate(plan.frame_embeddings)
    return VideoEmbeddings(media, planned.tracks, planned.plans, audio, planned.warnings)


def segment_embeddings(model, crops: np.ndarray, audio: np.ndarray, start: int = 0, batch_size: int = BATCH_WINDOWS):
    """Embeddings of every window of a shard segment's crops (or frame-encoder features) and of the
    audio window under it, through the compiled towers as `embed_media` sends them.

    crops: (n, H, W[, C]) uint8 as shards hold them; audio: the segment's features (data.Segment),
    whose first step is under frame `start` of the clip (the window rule counts from the clip's
    start). Returns two (n - window_frames + 1, d) arrays.
    """
    towers = compiled_towers(model)
    family = towers.family
    if crops.ndim == 3:
        crops = crops[..., None]
    count = len(crops) - family.window_frames + 1
    first = family.audio_window_start(start)
    frames, sounds = [], []
    for begin in range(0, count, batch_size):
        indices = range(begin, min(begin + batch_size, count))
        windows = np.stack([crops[i : i + family.window_frames] for i in indices]).astype(np.float32)
        steps = np.stack([audio_window(family, audio, family.audio_window_start(start + i) - first) for i in indices])
        frames.append(towers.embed_features(windows).numpy())
        sounds.append(towers.embed_audio(steps.astype(np.float32)).numpy())
    return np.concatenate(frames), np.concatenate(sounds)


def progress_bar(items, total, description, enabled, unit="frame"):
    """`items` with a progress bar on stderr when `enabled`."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=description, unit=unit, leave=False, file=sys.stderr)
