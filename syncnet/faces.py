"""Face tracks, 68-point landmarks and the crops SyncNet looks at.

Two passes over the frames, so memory stays bounded in video length and smoothing can look ahead:

1. `find_face_tracks` streams the frames once and keeps, per face track, only its landmarks.
2. `crop_tracks` streams the frames again (the caller passes a fresh iterator) and yields the
   crops: a 112x112 grayscale mouth (the `paper` preset), syncnet_python's 224x224 RGB face crop
   (the `syncnet_v2` preset) or vvadlrs3's 50x100 RGB lip crop (the `lips` preset).

`expert_crops` runs both passes over one face's frames held in memory (or from given landmarks) and
returns what a generator trained with an expert should emit: each family's crop, whole faces for the
families whose expert reads their lower half.

Detection is dlib's HOG frontal-face detector (upsample 0), which sees faces of about 80 px and
up. Two ways of running it:

- on the whole frame, resized so its longer side is `detect_size` px, at a shot cut, when a track
  lost its face, and periodically: every `redetect_every` frames while the last such scan found no
  face, every `rescan_every` while it found some (a face entering a shot already followed is seen
  within a second; the scan is most of the tracking's cost at 720p and up). It finds new faces. The HOG cost grows with
  the pixel count (measured on one core of this project's CPU, on grayscale: 3 ms at 224x126, 14 ms
  at 480x270, 43 ms at 960x540, 170 ms at 1920x1080). A 480 px detector would only see faces of
  213 px and up in a 720p frame and 320 px in 1080p; the talking-head faces in our 720p clips are
  87-216 px wide, so the default is 960 px (faces from 107 px in 720p, 160 px in 1080p, and any
  face in smaller videos) - affordable because it runs on one frame in ten, or in 25.
- near each tracked face, every `detect_every` frames of its track: the region around its latest
  landmarks, resized so the face is about 100 px, costs about 3 ms whatever the video's resolution.
  It confirms the face is still there (the shape predictor alone would return 68 points on
  anything) and gives the box the shape predictor starts from, on the full-resolution frame. On the
  frames between, the box is carried: the last detected box, moved as the landmarks moved since,
  and a 24 x 24 thumbnail of it is compared with the one taken at the detection (0.1 ms). When they
  stop looking alike (the face turned, was covered, or the shot changed inside the box), when the
  landmarks' box changed size by a tenth since the detection (a fit going astray), when the
  detection is due, or when it failed on the frame before, the detector runs.

Decoding, the cut test and the periodic whole-frame detection run a few frames ahead in a thread:
dlib's detector lets go of the GIL, so on 2 cores they overlap the following. All of it runs on
grayscale frames, on which dlib's detector is 1.2-1.4x faster than on RGB, with the same boxes.

HOG boxes jitter from frame to frame; lip landmarks much less: crops are placed from landmarks and
smoothed over time. Faces are joined into tracks by box overlap; a track ends at a shot cut (a
grayscale-histogram jump between small thumbnails) or when its face is missing for more than
`max_gap` frames; shorter gaps are bridged by interpolating the landmarks.
"""

import contextlib
import functools
import importlib.util
import queue
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import hyperparameters as hp
from .background import ReadAhead
from .errors import UserError

MAX_UPSCALE = 2  # small videos are enlarged up to 2x: a 40 px face then fills the HOG detector's 80 px window
ROI_FACE_SIZE = 100  # px: a tracked face is searched for at this size, a little above the window
ROI_SIZE = 1.5  # search region / previous face size: the face may move a quarter of its size per frame
# HOG scores: real faces in the shared clips score 0.68 and up in 95 % of frames; the false
# detections we saw (suit patches when upscaling, background texture) at most 0.19. A new track
# needs this much; a tracked face only needs to be detected (accepting scores down to -0.3 there
# changed nothing on 45 shared clips).
START_SCORE = 0.3
# Landmarks are predicted on every 2nd frame of a track (the shape predictor costs as much as the
# detection near the face) and interpolated between: they place the crops, which follow a median
# over 13-25 frames of them, and the region a face is searched for in the next frames.
LANDMARK_EVERY = 2
# A tracked face is looked for near its place every this many frames of its track; between, its box
# is carried (bench/bench_scoring.py measures the saving, tests/test_reference_scores.py bounds what
# it moves). On the 14 held-out calibration clips, the shipped expert's real vs audio-swapped ROC-AUC
# was 0.932 detecting on every frame, 0.937 every 3rd and 0.903 every 5th: the carried boxes' crops
# drift enough by then to blur the weakest clips.
DETECT_EVERY = 3
# Pearson correlation between a carried box's 24 x 24 thumbnail and the one at the last detection
# below which the detector runs at once. Within a shot the shared clips' talking faces stay above
# 0.9 over 5 frames (speech moves the mouth, a small part of the box); a face flipped or covered,
# or a cut inside the box, falls far below.
PATCH_SIZE = 24
MIN_PATCH_CORRELATION = 0.8
# The landmarks predicted from a carried box feed the next carried box, so a poor fit could drift:
# when their box's size strays this far from its size at the detection, the detector runs.
MAX_LANDMARK_SIZE_CHANGE = 0.1
READ_AHEAD_FRAMES = 4  # the look-over runs at most this many frames ahead of the following
TRACK_IOU = 0.5  # a detection continues a track if it overlaps the track's last box this much (syncnet_python's)

# Cuts: total-variation distance between 16-bin luma histograms of consecutive ~64 px thumbnails.
# Measured on the shared clips: at most 0.08 within a shot (0.15 once, in a fast pan), 0.18-1.0 at
# the cuts of the interview and news clips. (Measured with the mean of R, G and B; with the luma,
# 10 of the 36,924 frame pairs fall on the other side of 0.15: colour flashes, and cuts that take
# two frames, seen one frame later.)
THUMBNAIL_SIZE = 64
HISTOGRAM_BINS = 16

# syncnet_python's crop_video (run_pipeline.py)
FACE_BOX_MEDIAN = 13  # frames: median filter over the face box centre and size
FACE_CROP_SCALE = 0.4  # the crop reaches this fraction of the box size beyond the face
FACE_PAD_VALUE = 110  # grey the frame is padded with where the crop leaves it

# S3FD's face boxes (what syncnet_python crops from) reach up to the hairline; the 68 landmarks stop
# at the eyebrows. Measured on *data_example.avi, which is syncnet_python's own crop output (so its
# S3FD box is centred at (112, 80) with a side of 160 px): the landmark box is 133 px tall from 30
# to 163, so raising its top by 20 % of its height reproduces the S3FD box to within 3 px.
FOREHEAD_FRACTION = 0.2

# The mouth crop's side is twice the mouth width, measured on the eyes: the width of the mouth
# changes with every vowel (5-9 % within a track, which would zoom the crop in and out with the
# speech), the distance between the outer eye corners does not (1-3 %). Mouth width / eye distance
# is 0.61 in the median shared clip (0.53-0.68 for 80 % of them).
MOUTH_CROP_TO_EYES = 1.2
MOUTH_CENTRE_MEDIAN = 13  # frames (0.5 s): follows the head, not the jaw (syllables come at 3-6 Hz)
EYES_MEDIAN = 25  # frames (1 s)

LIPS = slice(48, 68)
OUTER_EYE_CORNERS = (36, 45)

SKIP_NO_FACE = "no_face"
SKIP_TOO_SMALL = "too_small"
SKIP_SHORT_TRACK = "short_track"


@dataclass
class FaceTrack:
    track_id: int
    start: int  # first frame index
    # (n, 68, 2) float32 full-frame pixel coordinates, as predicted per frame (not smoothed: they
    # move about 0.3 px between frames of a still face, and smoothing would blur the lip motion);
    # the crop boxes built from them are smoothed
    landmarks: np.ndarray = field(repr=False)
    detected: np.ndarray = field(repr=False)  # (n,) bool: True where the face was found (detected or carried), False where bridged

    @property
    def end(self) -> int:
        """One past the last frame index."""
        return self.start + len(self.landmarks)

    def mouth_boxes(self) -> np.ndarray:
        """(n, 4) x0, y0, x1, y1: the mouth crop, a square centred on the lips, about twice the mouth wide.

        The centre is smoothed over 0.5 s and the size (from the eye distance) over 1 s, so the crop
        follows the head but not the opening and closing of the mouth, which is what SyncNet has to see.
        """
        centre = _median_filter(self.landmarks[:, LIPS].mean(axis=1), MOUTH_CENTRE_MEDIAN)
        left_eye, right_eye = (self.landmarks[:, corner] for corner in OUTER_EYE_CORNERS)
        eye_distance = np.linalg.norm(right_eye - left_eye, axis=1)
        half_side = MOUTH_CROP_TO_EYES / 2 * _median_filter(eye_distance, EYES_MEDIAN)
        return np.concatenate([centre - half_side[:, None], centre + half_side[:, None]], axis=1)

    def lip_boxes(self) -> np.ndarray:
        """(n, 4) x0, y0, x1, y1: the box of the 20 lip landmarks in each frame, unsmoothed - the crop
        vvadlrs3's lip encoder was trained on, whose shape follows the mouth's opening."""
        lips = self.landmarks[:, LIPS]
        return np.concatenate([lips.min(axis=1), lips.max(axis=1)], axis=1)

    def face_boxes(self) -> np.ndarray:
        """(n, 4) x0, y0, x1, y1: the square face box syncnet_python crops around.

        The box around all 68 landmarks with its top raised to the hairline (so it matches S3FD's
        boxes), then, as in syncnet_python, centre and half-side max(w, h) / 2 median-filtered over
        13 frames (edges repeat the end values instead of scipy.signal.medfilt's zero padding).
        """
        low, high = self.landmarks.min(axis=1), self.landmarks.max(axis=1)
        low[:, 1] -= FOREHEAD_FRACTION * (high[:, 1] - low[:, 1])
        centre = _median_filter((low + high) / 2, FACE_BOX_MEDIAN)
        half_side = _median_filter((high - low).max(axis=1) / 2, FACE_BOX_MEDIAN)
        return np.concatenate([centre - half_side[:, None], centre + half_side[:, None]], axis=1)


@dataclass
class TrackingResult:
    tracks: list[FaceTrack]
    num_frames: int
    skipped: dict[str, int]  # reason -> frames without any track: no_face, too_small, short_track
    shot_cuts: list[int]  # first frame of every shot after the first


def find_face_tracks(
    frames: Iterable[np.ndarray],
    *,
    min_face_size: int = 40,
    detect_size: int = 960,
    redetect_every: int = 10,
    rescan_every: int = 25,
    detect_every: int = DETECT_EVERY,
    max_gap: int = 5,
    min_track: int = hp.WINDOW_FRAMES,
    cut_threshold: float = 0.15,
) -> TrackingResult:
    """Pass 1: follow every frontal face through uint8 frames, grayscale (H, W) (what it works on:
    `Media.frames(gray=True)` decodes them at half the cost) or RGB (H, W, 3).

    min_face_size: faces whose box is narrower (px, full resolution) are skipped as too small.
    detect_size: longer side (px) of the image the whole-frame detector sees (smaller videos are
    enlarged at most 2x): it finds faces from 80 * longer side / detect_size px. redetect_every: frames
    between whole-frame detections while the last one found no face; rescan_every: while it found
    one (both counted from that detection). detect_every: frames between detections near a tracked
    face (1: on every frame, as before 2026-12-01, with rescan_every=10). max_gap: longest run of frames without the face that a track
    bridges. min_track: shorter tracks are dropped. cut_threshold: histogram distance that makes a
    shot cut.
    """
    _shape_predictor()  # loaded first: a missing model is an error before any decoding

    def scale(gray):  # of the whole-frame detection
        return min(detect_size / max(gray.shape), MAX_UPSCALE)

    tracks: list[_Track] = []  # every track, finished or not
    active: list[_Track] = []  # tracks that may still continue
    frame_status = bytearray()  # per frame: _FACE, or why no face was found
    shot_cuts = []
    whole_frame_saw_small_face = False  # in the last whole-frame detection
    # The look-over (decoding, cuts, whole-frame detections) runs a few frames ahead in a thread;
    # dlib's detector lets go of the GIL, so on 2 cores it overlaps the following below.
    looked_over = ReadAhead(
        _look_over(frames, scale, (redetect_every, rescan_every), cut_threshold), depth=READ_AHEAD_FRAMES, name="syncnet-faces"
    )
    with _face_detector() as detector, looked_over:
        for frame in looked_over:
            index, gray, whole_frame_boxes = frame.index, frame.gray, frame.whole_frame_boxes
            if frame.is_cut:
                shot_cuts.append(index)
                active = []  # a face never continues across a cut

            # follow the tracked faces: carried where they still look as they did, else detected
            # in the region around where they were
            saw_small_face = False
            for track in active:
                if track.carry(index, gray):
                    continue
                boxes = _detect_near(detector, gray, track.last_landmarks)
                saw_small_face |= any(_width(box) < min_face_size for box in boxes)
                box = _best_overlap([box for box in boxes if _width(box) >= min_face_size], track.last_box)
                if box is not None:
                    track.add(index, box, gray)
                else:
                    track.missed = True

            # look over the whole frame for new faces, and for the tracked faces not found near their place
            missing = [track for track in active if track.last_frame < index]
            if missing and whole_frame_boxes is None:
                whole_frame_boxes = _detect(detector, gray, scale(gray))
            if whole_frame_boxes is not None:
                whole_frame_saw_small_face = any(_width(box) < min_face_size for box in whole_frame_boxes)
                for box in whole_frame_boxes:
                    if _width(box) < min_face_size:
                        continue
                    owner = max(missing, key=lambda track: _iou(box, track.last_box), default=None)
                    if owner is not None and _iou(box, owner.last_box) > TRACK_IOU:
                        owner.add(index, box, gray)
                        missing.remove(owner)
                    elif box[4] >= START_SCORE and not any(
                        _contains(track.last_box, _centre(box)) for track in active if track.last_frame == index
                    ):
                        track = _Track(detect_every)
                        track.add(index, box, gray)
                        tracks.append(track)
                        active.append(track)

            active = [track for track in active if index - track.last_frame <= max_gap]
            if any(track.last_frame == index for track in active):
                frame_status.append(_FACE)
            else:  # between whole-frame detections, the last one tells what the frame holds
                frame_status.append(_TOO_SMALL if saw_small_face or whole_frame_saw_small_face else _NO_FACE)

    long_enough = [track for track in tracks if track.length >= min_track]
    kept = [track.finish(track_id) for track_id, track in enumerate(long_enough)]
    return TrackingResult(kept, len(frame_status), _skipped_frames(frame_status, kept), shot_cuts)


@dataclass
class _LookedOver:
    index: int
    gray: np.ndarray  # (H, W) uint8
    is_cut: bool
    whole_frame_boxes: list | None = None  # where the whole-frame detection ran


def _look_over(frames, scale, intervals: tuple[int, int], cut_threshold: float) -> Iterator[_LookedOver]:
    """Each frame in grayscale, whether it starts a new shot, and the whole-frame detection's boxes
    at the first frame, at cuts, and `intervals[0]` frames after a detection that found no face
    (none scoring START_SCORE), `intervals[1]` after one that found some. Decided from the frames alone, so the tracks never
    depend on how far this runs ahead."""
    previous_histogram = None
    frame_shape = None
    next_detection = 0
    with _face_detector() as detector:
        for index, frame in enumerate(frames):
            frame = _checked_frame(frame, index, frame_shape)
            frame_shape = frame.shape
            gray = frame if frame.ndim == 2 else np.asarray(Image.fromarray(frame).convert("L"))
            histogram = _thumbnail_histogram(gray)
            is_cut = previous_histogram is not None and 0.5 * np.abs(histogram - previous_histogram).sum() > cut_threshold
            previous_histogram = histogram
            whole_frame_boxes = None
            if is_cut or index >= next_detection:
                whole_frame_boxes = _detect(detector, gray, scale(gray))
                found_face = any(box[4] >= START_SCORE for box in whole_frame_boxes)  # one that can start a track
                next_detection = index + intervals[found_face]
            yield _LookedOver(index, gray, is_cut, whole_frame_boxes)


def _skipped_frames(frame_status: bytearray, tracks: list[FaceTrack]) -> dict[str, int]:
    """Frames no track covers, by reason; a frame where a face was found is there because its
    track was too short."""
    covered = np.zeros(len(frame_status), bool)
    for track in tracks:
        covered[track.start : track.end] = True
    status = np.frombuffer(bytes(frame_status), np.uint8)[~covered]
    reasons = {SKIP_NO_FACE: _NO_FACE, SKIP_TOO_SMALL: _TOO_SMALL, SKIP_SHORT_TRACK: _FACE}
    counts = {reason: int(np.count_nonzero(status == code)) for reason, code in reasons.items()}
    return {reason: count for reason, count in counts.items() if count}


def crop_tracks(
    frames: Iterable[np.ndarray], tracks: list[FaceTrack], kind: str, *, whole_faces: bool = False
) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """Pass 2: (frame index, {track_id: crop}) for every frame where at least one track is active.

    kind "mouth": (112, 112) uint8 grayscale mouth crops, from grayscale (H, W) frames or RGB ones.
    kind "face": (224, 224, 3) uint8 RGB face crops as syncnet_python's run_pipeline.py makes them
    (its network reads them as BGR: flip the channels before feeding its weights), from RGB frames.
    kind "lips": (50, 100, 3) uint8 RGB lip crops as vvadlrs3 makes them, from RGB frames.
    kind "lower_face": (48, 96, 3) uint8 RGB, the lower half of a 96 x 96 face crop as Wav2Lip makes
    it (its face detector's box, resized to 96 x 96: `face_boxes` stands in for that box).
    kind "latentsync_face": (128, 256, 3) uint8 RGB, the lower half of a 256 x 256 face aligned as
    LatentSync aligns them (`latentsync_alignments`: brows and nose onto its template).
    whole_faces: for "lower_face" and "latentsync_face", the whole (96, 96, 3) / (256, 256, 3) face
    the lower half is cut from (what a generator of that family emits).
    `frames` must be the frames `find_face_tracks` saw (`frames_to_crop` decodes them as needed).
    """
    if kind == "mouth":
        boxes = {track.track_id: track.mouth_boxes() for track in tracks}
    elif kind == "face":
        boxes = {track.track_id: _syncnet_crop_boxes(track.face_boxes()) for track in tracks}
    elif kind == "lower_face":
        boxes = {track.track_id: track.face_boxes() for track in tracks}
    elif kind == "lips":
        boxes = {track.track_id: track.lip_boxes() for track in tracks}
    elif kind == "latentsync_face":
        boxes = {track.track_id: latentsync_alignments(track.landmarks) for track in tracks}
    else:
        raise UserError(f"crop kind must be 'mouth', 'face', 'lips', 'lower_face' or 'latentsync_face', not {kind!r}")
    last_frame = max((track.end for track in tracks), default=0)
    for index, frame in enumerate(frames):
        if index >= last_frame:
            return
        crops = {}
        for track in tracks:
            if track.start <= index < track.end:
                box = boxes[track.track_id][index - track.start]
                if kind == "mouth":
                    crops[track.track_id] = _resized(_crop(frame, box, fill=0), hp.MOUTH_CROP_SIZE, grayscale=True)
                elif frame.ndim != 3:
                    raise UserError(f"frame {index}: {kind} crops are RGB and need RGB (H, W, 3) frames, got {frame.shape}")
                elif kind == "face":
                    crops[track.track_id] = _resized(_crop(frame, box, fill=FACE_PAD_VALUE), hp.FACE_CROP_SIZE)
                elif kind == "lower_face":
                    face = _resized(_crop(frame, box, fill=0), hp.WAV2LIP_FACE_SIZE)
                    crops[track.track_id] = face if whole_faces else face[hp.WAV2LIP_FACE_SIZE // 2 :]
                elif kind == "latentsync_face":
                    face = latentsync_face(frame, box)
                    crops[track.track_id] = face if whole_faces else face[LATENTSYNC_FACE_SIZE // 2 :]
                else:
                    crops[track.track_id] = _fitted(_crop(frame, box, fill=0), hp.LIP_CROP_HEIGHT, hp.LIP_CROP_WIDTH)
        if crops:
            yield index, crops


def expert_crops(expert, frames, landmarks=None) -> np.ndarray:
    """What a generator trained with `expert` should emit, cut from real frames exactly as scoring cuts
    them for that expert: the targets of its reconstruction loss and the real frames beside its output.

    expert: an expert model (`syncnet.load_model()`'s) or its `family`. frames: (n, H, W, 3) uint8
    RGB frames of one face, consecutive (crop boxes are smoothed over time) - video frames or larger
    face crops. landmarks: optional (n, 68, 2) dlib 68-point landmarks (x, y in frame pixels), one set
    per frame, e.g. from a dataset's preprocessing; without them the face is followed with
    `find_face_tracks` (the longest face track, which must cover every frame).

    Returns (n, *size, C) uint8 in [0, 255], RGB or gray as the family reads (C = family.channels):
    size = `family.frame_size` (`paper`: 112 x 112 gray mouths; `syncnet_v2`: 224 px faces; `lips`:
    50 x 100), or `family.generator_face` for families whose expert reads the lower half of a
    generator's face (`wav2lip`: whole 96 x 96 faces; `latentsync`: whole aligned 256 x 256 faces),
    whose lower half `SyncLoss` takes itself. Give them to `SyncLoss` with `value_range=(0, 255)` and
    `channel_order="rgb"`, or scale them to the generator's range first.
    """
    family = getattr(expert, "family", expert)
    if not hasattr(family, "crop"):
        raise UserError(f"expert_crops needs an expert model or its family, got {type(expert).__name__}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise UserError(f"frames must be uint8 (n, H, W, 3) RGB (or (n, H, W) gray for mouths), got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise UserError("frames is empty")
    if landmarks is None:
        tracks = find_face_tracks(frames, min_track=1).tracks
        if not tracks:
            raise UserError("no face found in the frames: pass their 68-point landmarks")
        track = max(tracks, key=lambda track: track.end - track.start)
        if track.start > 0 or track.end < len(frames):
            raise UserError(
                f"a face was followed in frames {track.start}..{track.end - 1} of 0..{len(frames) - 1} only: "
                "trim the frames to where the face is, or pass their 68-point landmarks"
            )
    else:
        landmarks = np.asarray(landmarks, np.float32)
        if landmarks.shape != (len(frames), 68, 2):
            raise UserError(f"landmarks must be (n, 68, 2) for {len(frames)} frames, got {landmarks.shape}")
        if not np.isfinite(landmarks).all():
            raise UserError("landmarks contain NaN or Inf")
        track = FaceTrack(track_id=0, start=0, landmarks=landmarks, detected=np.ones(len(frames), bool))
    crops = np.stack([crop[track.track_id] for _, crop in crop_tracks(frames, [track], family.crop, whole_faces=True)])
    return crops[..., None] if crops.ndim == 3 else crops


def frames_to_crop(media, kind: str) -> Iterator[np.ndarray]:
    """`media.frames()` as `crop_tracks` needs them for `kind` crops: the luma for mouths (the
    decoding costs half as much), RGB for faces and lips; decoded a few frames ahead in a thread
    (FFmpeg lets go of the GIL), so the decoding overlaps the cropping and the towers."""
    with ReadAhead(media.frames(gray=kind == "mouth"), depth=READ_AHEAD_FRAMES, name="syncnet-crops") as frames:
        yield from frames


# --- Tracks under construction -----------------------------------------------------------------

_FACE, _NO_FACE, _TOO_SMALL = 0, 1, 2


class _Track:
    """A face being followed: the frames it was found in (detected, or carried between detections),
    its last box, and its landmarks on every LANDMARK_EVERY-th of those frames."""

    def __init__(self, detect_every: int):
        self.detect_every = detect_every
        self.frames: list[int] = []
        self.last_box = None
        self.landmark_frames: list[int] = []
        self.landmarks: list[np.ndarray] = []
        self.detected_frame = None
        self.detected_box = None  # the last detection's box, the patch seen in it, the landmarks then
        self.detected_patch = None
        self.detected_centre = None
        self.detected_size = None
        self.missed = False  # the last detection near the face failed

    def add(self, index: int, box, gray: np.ndarray):
        """The face detected at `box` in frame `index`."""
        self._found(index, box, gray)
        self.detected_frame = index
        self.detected_box, self.detected_patch = box, _patch(gray, box)
        self.detected_centre = _landmark_centre(self.last_landmarks)
        self.detected_size = _landmark_size(self.last_landmarks)
        self.missed = False

    def carry(self, index: int, gray: np.ndarray) -> bool:
        """Follow the face into frame `index` without the detector, if it is not due and the carried
        box still shows what the last detection saw; False when the detector should run."""
        if self.missed or index - self.detected_frame >= self.detect_every or index - self.frames[-1] > 1:
            return False
        if abs(_landmark_size(self.last_landmarks) / self.detected_size - 1) > MAX_LANDMARK_SIZE_CHANGE:
            return False
        shift = _landmark_centre(self.last_landmarks) - self.detected_centre
        box = (*(np.asarray(self.detected_box[:4]) + np.tile(shift, 2)), self.detected_box[4])
        if _correlation(_patch(gray, box), self.detected_patch) < MIN_PATCH_CORRELATION:
            return False
        self._found(index, box, gray)
        return True

    def _found(self, index: int, box, gray: np.ndarray):
        self.frames.append(index)
        self.last_box = box
        if not self.landmark_frames or index - self.landmark_frames[-1] >= LANDMARK_EVERY:
            self.landmark_frames.append(index)
            self.landmarks.append(_landmarks(gray, box))

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    @property
    def last_landmarks(self) -> np.ndarray:
        return self.landmarks[-1]

    @property
    def length(self) -> int:
        return self.frames[-1] - self.frames[0] + 1

    def finish(self, track_id: int) -> FaceTrack:
        """A FaceTrack with the landmarks between predictions and in the gaps interpolated linearly
        (held at the last prediction after it)."""
        all_frames = np.arange(self.frames[0], self.frames[-1] + 1)
        points = np.stack(self.landmarks).reshape(len(self.landmarks), -1)
        filled = np.stack([np.interp(all_frames, self.landmark_frames, column) for column in points.T], axis=1)
        return FaceTrack(
            track_id=track_id,
            start=self.frames[0],
            landmarks=filled.reshape(len(all_frames), 68, 2).astype(np.float32),
            detected=np.isin(all_frames, self.frames),
        )


# --- dlib ----------------------------------------------------------------------------------------


@functools.cache
def _shape_predictor():
    """dlib's 68-point shape predictor, loaded once per process (1.3 s)."""
    import dlib

    # face_recognition_models' __init__ imports pkg_resources (gone from setuptools >= 81, where the
    # import ends the process): find the package's folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    model = Path(spec.submodule_search_locations[0] if spec else "", "models", "shape_predictor_68_face_landmarks.dat")
    if spec is None or not model.is_file():
        raise RuntimeError(f"dlib's 68-point landmark model is missing ({model}): pip install face_recognition_models")
    return dlib.shape_predictor(str(model))


_idle_detectors = queue.SimpleQueue()


@contextlib.contextmanager
def _face_detector():
    """dlib's HOG face detector, for one thread at a time: it keeps scratch buffers, and two threads
    running one detector crash the process. Detectors are kept for reuse: building one takes 0.5 s."""
    try:
        detector = _idle_detectors.get_nowait()
    except queue.Empty:
        import dlib

        detector = dlib.get_frontal_face_detector()
    try:
        yield detector
    finally:
        _idle_detectors.put(detector)


def _detect(detector, image: np.ndarray, scale: float) -> list[tuple]:
    """Face boxes (x0, y0, x1, y1, score) in `image` pixels, found on the image resized by `scale`;
    the score is the HOG detector's margin (> 0)."""
    import dlib

    height, width = image.shape[:2]
    if scale != 1:
        image = dlib.resize_image(np.ascontiguousarray(image), max(round(height * scale), 1), max(round(width * scale), 1))
    rectangles, scores, _ = detector.run(np.ascontiguousarray(image), 0, 0.0)
    return [(r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale, score) for r, score in zip(rectangles, scores)]


def _detect_near(detector, frame: np.ndarray, landmarks: np.ndarray) -> list[tuple]:
    """Face boxes (frame pixels) in the region ROI_SIZE times the size of the previous landmarks'
    box, searched at a scale that makes the face about ROI_FACE_SIZE px."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    side = max(high - low)
    centre = (low + high) / 2
    x0, y0 = np.maximum(np.floor(centre - ROI_SIZE / 2 * side), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(centre + ROI_SIZE / 2 * side), (frame.shape[1], frame.shape[0])).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return []
    boxes = _detect(detector, frame[y0:y1, x0:x1], ROI_FACE_SIZE / max(side, 1))
    return [(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0, score) for bx0, by0, bx1, by1, score in boxes]


def _landmark_centre(landmarks: np.ndarray) -> np.ndarray:
    return (landmarks.min(axis=0) + landmarks.max(axis=0)) / 2


def _landmark_size(landmarks: np.ndarray) -> float:
    return float(max(np.ptp(landmarks, axis=0).max(), 1.0))


def _patch(gray: np.ndarray, box) -> np.ndarray:
    """The box's content as a PATCH_SIZE x PATCH_SIZE float thumbnail."""
    thumbnail = Image.fromarray(_crop(gray, box[:4], fill=0)).resize((PATCH_SIZE, PATCH_SIZE), Image.BILINEAR)
    return np.asarray(thumbnail, np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def _landmarks(gray: np.ndarray, box) -> np.ndarray:
    import dlib

    shape = _shape_predictor()(gray, dlib.rectangle(*(int(round(value)) for value in box[:4])))
    return np.array([(point.x, point.y) for point in shape.parts()], np.float32)


# --- Geometry ------------------------------------------------------------------------------------


def _width(box) -> float:
    return box[2] - box[0]


def _centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _contains(box, point) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _best_overlap(boxes: list, reference):
    """The box overlapping `reference` most, if it overlaps enough to be the same face."""
    best = max(boxes, key=lambda box: _iou(box, reference), default=None)
    return best if best is not None and _iou(best, reference) > TRACK_IOU else None


def _median_filter(values: np.ndarray, kernel: int) -> np.ndarray:
    """Running median along axis 0 over `kernel` frames (odd), the ends repeated outward."""
    values = np.asarray(values, np.float64)
    half = kernel // 2
    padded = np.concatenate([np.repeat(values[:1], half, axis=0), values, np.repeat(values[-1:], half, axis=0)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=0)
    return np.median(windows, axis=-1)


def _syncnet_crop_boxes(face_boxes: np.ndarray) -> np.ndarray:
    """syncnet_python's crop around each face box: 2.8 half-sides square, the face in its upper part.

    As in crop_video: rows my-bs .. my+bs(1+2cs), columns mx-bs(1+cs) .. mx+bs(1+cs), truncated to
    whole pixels in the frame padded by int(bs(1+2cs)).
    """
    centre_x, centre_y = (face_boxes[:, 0] + face_boxes[:, 2]) / 2, (face_boxes[:, 1] + face_boxes[:, 3]) / 2
    bs = (face_boxes[:, 2] - face_boxes[:, 0]) / 2
    cs = FACE_CROP_SCALE
    pad = np.floor(bs * (1 + 2 * cs))
    return np.stack(
        [
            np.floor(pad + centre_x - bs * (1 + cs)) - pad,
            np.floor(pad + centre_y - bs) - pad,
            np.floor(pad + centre_x + bs * (1 + cs)) - pad,
            np.floor(pad + centre_y + bs * (1 + 2 * cs)) - pad,
        ],
        axis=1,
    )


# --- Pixels --------------------------------------------------------------------------------------


def _checked_frame(frame, index: int, expected_shape) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or not (frame.ndim == 2 or frame.ndim == 3 and frame.shape[2] == 3):
        raise UserError(f"frame {index}: expected an RGB uint8 (H, W, 3) or grayscale (H, W) array, got {frame.dtype} {frame.shape}")
    if expected_shape is not None and frame.shape != expected_shape:
        raise UserError(
            f"frame {index}: size {frame.shape[1]}x{frame.shape[0]} differs from the earlier frames' {expected_shape[1]}x{expected_shape[0]}"
        )
    return np.ascontiguousarray(frame)


def _thumbnail_histogram(gray: np.ndarray) -> np.ndarray:
    """Normalised histogram of a ~THUMBNAIL_SIZE px subsampled copy of a grayscale frame."""
    step = max(1, min(gray.shape) // THUMBNAIL_SIZE)
    thumbnail = gray[::step, ::step]
    return np.bincount(thumbnail.ravel() // (256 // HISTOGRAM_BINS), minlength=HISTOGRAM_BINS) / thumbnail.size


def _crop(frame: np.ndarray, box, fill: int) -> np.ndarray:
    """frame[y0:y1, x0:x1] for a box in whole pixels, filled with `fill` where it leaves the frame."""
    x0, y0, x1, y1 = (int(round(value)) for value in box)
    height, width = frame.shape[:2]
    crop = np.full((max(y1 - y0, 1), max(x1 - x0, 1), *frame.shape[2:]), fill, np.uint8)
    inside_x0, inside_y0 = max(x0, 0), max(y0, 0)
    inside_x1, inside_y1 = min(x1, width), min(y1, height)
    if inside_x1 > inside_x0 and inside_y1 > inside_y0:
        crop[inside_y0 - y0 : inside_y1 - y0, inside_x0 - x0 : inside_x1 - x0] = frame[inside_y0:inside_y1, inside_x0:inside_x1]
    return crop


def _fitted(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """The crop resized into height x width with its aspect kept, zero-padded on the right or at the
    bottom (vvadlrs3's resizeAndZeroPadding)."""
    factor = min(width / crop.shape[1], height / crop.shape[0])
    size = (min(width, max(1, round(crop.shape[1] * factor))), min(height, max(1, round(crop.shape[0] * factor))))
    fitted = np.zeros((height, width, *crop.shape[2:]), np.uint8)
    fitted[: size[1], : size[0]] = np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR))
    return fitted


def _resized(crop: np.ndarray, size: int, grayscale: bool = False) -> np.ndarray:
    """Square `size` px, bilinear (PIL widens the filter when shrinking, so no aliasing)."""
    image = Image.fromarray(crop)
    if grayscale and image.mode != "L":
        image = image.convert("L")  # ITU-R 601 luma, the weights cv2's BGR2GRAY uses
    return np.asarray(image.resize((size, size), Image.BILINEAR))


# --- LatentSync's face alignment -----------------------------------------------------------------
# LatentSync (latentsync/utils/image_processor.py, affine_transform.py) maps three anchors - the
# centres of the two eyebrows and of the nose, from InsightFace's 106 landmarks, rounded to whole
# pixels - onto a template in a 210 x 280 face by a similarity transform (least squares on the
# anchors, each set scaled by its standard deviation), warps bilinearly with grey 127 outside the
# frame, and resizes the face to 256 x 256 (so 210 x 280 is stretched to a square). "Smoothing" is
# its running offset: the nose's misfit in the normalised anchor space, averaged 0.2 old / 0.8 new
# along the video, added to the translation. Our anchors come from dlib's 68 points instead: the
# eyebrows' 5 points each (the upper edge of the brow only: InsightFace's 5 include points of its
# lower edge, so our brow centres sit a little higher) and the 9 nose points' mean (InsightFace's
# four points 74, 77, 83, 86 along the nose's sides; both are near the middle of the nose, not
# verified to coincide). The expert was trained on faces aligned their way.
LATENTSYNC_TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]]) * 2.8  # px in the 210 x 280 face
LATENTSYNC_ALIGNED_SIZE = (210, 280)  # width, height: int(75 * 2.8), int(100 * 2.8)
LATENTSYNC_FACE_SIZE = 256
LATENTSYNC_FILL = 127
LATENTSYNC_BIAS_KEEP = 0.2  # the running offset's weight on its previous value
_BROWS = (slice(17, 22), slice(22, 27))  # dlib: the brow on the image's left, then the right
_NOSE = slice(27, 36)


def latentsync_alignments(landmarks: np.ndarray) -> np.ndarray:
    """(n, 2, 3) affine matrices, frame pixels -> the 210 x 280 aligned face, for a track's (n, 68, 2)
    landmarks, with LatentSync's running offset carried along the track."""
    anchors = np.round(np.stack([landmarks[:, _BROWS[0]].mean(1), landmarks[:, _BROWS[1]].mean(1), landmarks[:, _NOSE].mean(1)], axis=1))
    template = LATENTSYNC_TEMPLATE - LATENTSYNC_TEMPLATE.mean(0)
    template_scale = np.std(template, ddof=1)
    template = template / template_scale
    matrices, bias = np.zeros((len(anchors), 2, 3)), None
    for index, points in enumerate(anchors.astype(np.float64)):
        centre = points.mean(0)
        scale = max(np.std(points - centre, ddof=1), 1e-6)
        normalised = (points - centre) / scale
        u, _, vt = np.linalg.svd(normalised.T @ template)
        rotation = vt.T @ u.T
        if np.linalg.det(rotation) < 0:  # a reflection: flip the last singular direction
            vt[-1] = -vt[-1]
            rotation = vt.T @ u.T
        matrices[index, :, :2] = template_scale / scale * rotation
        matrices[index, :, 2] = LATENTSYNC_TEMPLATE.mean(0) - template_scale / scale * rotation @ centre
        offset = template[2] - normalised[2]
        bias = offset if bias is None else LATENTSYNC_BIAS_KEEP * bias + (1 - LATENTSYNC_BIAS_KEEP) * offset
        matrices[index, :, 2] += bias
    return matrices


def latentsync_face(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(256, 256, 3) uint8: the RGB frame warped by `matrix` (frame pixel -> aligned-face pixel) into
    210 x 280, grey outside the frame, then resized to 256 x 256."""
    forward = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]  # aligned pixel -> frame pixel, what PIL samples with
    # PIL samples at pixel centres (x + 0.5): shift so pixel indices map as the matrix says
    inverse[:, 2] += 0.5 - inverse[:, :2].sum(axis=1) * 0.5
    warped = Image.fromarray(frame).transform(
        LATENTSYNC_ALIGNED_SIZE, Image.AFFINE, tuple(inverse.ravel()), Image.BILINEAR, fillcolor=(LATENTSYNC_FILL,) * 3
    )
    return np.asarray(warped.resize((LATENTSYNC_FACE_SIZE, LATENTSYNC_FACE_SIZE), Image.LANCZOS))
