"""Peak memory of `score_video` on a 1-minute and a 10-minute clip: it must stay flat in video length.

    python bench/scoring_memory.py [--clip GLOB] [--minutes 1 10]

The long clips are a real clip joined to itself with stream copy (bench/joined_audio.py's `join`),
each scored in a fresh process so that one's peak does not hide the other's. Printed: minutes,
frames, seconds, x real time, peak RSS, and each peak as a ratio to the first clip's.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
from clips import find_clip
from joined_audio import join

SCORE = """
import json, resource, sys, time
from syncnet import load_model, score_video
model = load_model()
began = time.perf_counter()
result = score_video(sys.argv[1], model)
print(json.dumps({"seconds": time.perf_counter() - began, "frames": result.frames, "status": result.status,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="*PC-AVS__misc_Input_00098.mp4", help="glob under ../shared/data/clips, or a path")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    args = parser.parse_args()
    clip = find_clip(args.clip)
    with av.open(str(clip)) as source:
        duration = source.duration / av.time_base
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first_peak = None
    with tempfile.TemporaryDirectory() as folder:
        for minutes in args.minutes:
            joined = Path(folder) / f"{minutes:g}min{clip.suffix}"
            join(clip, joined, math.ceil(60 * minutes / duration))
            run = subprocess.run([sys.executable, "-c", SCORE, str(joined)], capture_output=True, text=True, env=environment)
            if run.returncode != 0:
                sys.exit(run.stderr.strip().splitlines()[-1])
            figures = json.loads(run.stdout.strip().splitlines()[-1])
            first_peak = first_peak or figures["peak_mb"]
            print(
                f"{minutes:5g} min ({figures['frames']} frames, {figures['status']}): {figures['seconds']:6.1f} s = "
                f"{figures['frames'] / 25 / figures['seconds']:.1f}x real time, peak RSS {figures['peak_mb']:.0f} MB "
                f"({figures['peak_mb'] / first_peak:.2f}x the first)",
                flush=True,
            )


if __name__ == "__main__":
    main()
