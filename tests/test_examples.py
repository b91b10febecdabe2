"""The examples run, as a user runs them: a subprocess on a short clip made here."""

import os
import re
import subprocess
import sys
from pathlib import Path

from synthetic import write_clip

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_wav2lip_style_step_filters_crops_and_trains(tmp_path):
    clip = tmp_path / "late.mp4"
    write_clip(clip, seconds=2, size=(224, 224), audio_shift_frames=4)  # 4 frames off, like the demo clip's 3-4
    out = run_example("wav2lip_style_step.py", clip, "--steps", "2")
    offset = int(re.search(r"filter: offset ([+-]\d+) frames", out).group(1))
    assert -5 <= offset <= -3 and "drop it" in out, out  # the filter finds the delay
    assert re.search(r"data: \d+ frames -> \(112, 112, 1\) crops \(paper family\), \d+ windows of 5 frames", out), out
    losses = re.findall(r"step \d: l1 ([\d.]+)  sync loss ([\d.]+) \(real frames ([\d.]+)\)", out)
    assert len(losses) == 2, out
    assert all(0 < float(value) < 20 for step in losses for value in step), out
    assert "mean over 2 steps" in out


def test_toy_generator_still_runs():
    out = run_example("toy_generator.py", "--steps", "2")
    assert "expert weights unchanged: True" in out, out
