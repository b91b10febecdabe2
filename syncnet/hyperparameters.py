"""Every constant of the SyncNet recipe, in one place.

Timing follows syncnet_python: video at 25 fps, audio at 16 kHz, MFCC at 100 Hz, so one video
frame spans 4 MFCC steps and a 5-frame window (0.2 s) spans 20 MFCC steps.
"""

# --- Media timing -----------------------------------------------------------------------------
VIDEO_FPS = 25
AUDIO_SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = AUDIO_SAMPLE_RATE // VIDEO_FPS  # 640
MFCC_RATE = 100  # MFCC columns per second (10 ms step)
MFCC_STEPS_PER_FRAME = MFCC_RATE // VIDEO_FPS  # 4

# --- MFCC (python_speech_features.mfcc defaults, as syncnet_python uses them) -----------------
MFCC_WINDOW_SECONDS = 0.025
MFCC_STEP_SECONDS = 0.010
MFCC_NFFT = 512
MFCC_NUM_FILTERS = 26
MFCC_NUM_CEPSTRA = 13
MFCC_PREEMPHASIS = 0.97
MFCC_CEPSTRAL_LIFTER = 22
MFCC_LOW_FREQ = 0.0
MFCC_HIGH_FREQ = AUDIO_SAMPLE_RATE / 2

# --- Wav2Lip's mel (its hparams.py; LatentSync reuses them) --------------------------------------
MEL_NUM_BINS = 80
MEL_NFFT = 800  # 50 ms
MEL_HOP = 200  # 12.5 ms: 80 steps a second
MEL_RATE = AUDIO_SAMPLE_RATE // MEL_HOP  # 80
MEL_PREEMPHASIS = 0.97
MEL_LOW_FREQ = 55.0
MEL_HIGH_FREQ = 7600.0
MEL_MIN_LEVEL_DB = -100.0
MEL_REF_LEVEL_DB = 20.0
MEL_MAX_ABS_VALUE = 4.0  # symmetric normalisation to [-4, 4]

# --- Windows ----------------------------------------------------------------------------------
WINDOW_FRAMES = 5  # video frames per sample (0.2 s)
WINDOW_MFCC_STEPS = WINDOW_FRAMES * MFCC_STEPS_PER_FRAME  # 20

# --- Crops ------------------------------------------------------------------------------------
MOUTH_CROP_SIZE = 112  # `paper` preset: grayscale mouth crop
FACE_CROP_SIZE = 224  # `syncnet_v2` preset: syncnet_python's RGB face crop
# `lips` preset: vvadlrs3's RGB lip crop, the box of the 20 lip landmarks fitted into it
LIP_CROP_HEIGHT = 50
LIP_CROP_WIDTH = 100
WAV2LIP_FACE_SIZE = 96  # Wav2Lip: 96 x 96 face crops, its expert reads the lower half (48 x 96)

# --- Scoring ----------------------------------------------------------------------------------
VSHIFT = 15  # offsets searched: -VSHIFT..+VSHIFT frames
CONFIDENCE_MEDIAN_FILTER = 9  # per-frame confidence smoothing (syncnet_python's medfilt)

# --- Training ---------------------------------------------------------------------------------
BATCH_SIZE = 8
LEARNING_RATE = 1e-4
EPOCHS = 20
CONTRASTIVE_MARGIN = 1.0  # for the paper's contrastive loss (the card's default is BCE)
HARD_NEGATIVE_MIN_SHIFT = 5  # frames: a same-clip shifted negative is at least this far off
SEED = 1234
