"""The frozen expert's cost in a generator step: `SyncLoss` forward + backward to the frames, for a
batch of Wav2Lip windows, against the PyTorch network (tests/test_wav2lip.py's, the published
architecture) doing the same in the same process: its `get_sync_loss` and `.backward()`.

    python bench/bench_sync_loss_families.py [--batch 16] [--repeats 10]

Prints ms per step for PyTorch (eager, the way Wav2Lip runs), ours compiled with `tf.function`, and
ours with XLA (`jit_compile=True`), and ours / PyTorch. Both networks hold the same random weights
(converted through `syncnet convert-weights`' code), so the work is the same; both use every core.
Then one step under a `mixed_float16` global policy set before the expert is loaded, as GPU recipes
do (on a CPU it only shows that it works: float16 is not faster here).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402
from test_wav2lip import randomize, wav2lip_expert  # noqa: E402  the PyTorch build our parity tests prove

from syncnet.convert import convert_weights  # noqa: E402
from syncnet.loading import load_model  # noqa: E402
from syncnet.sync_loss import SyncLoss  # noqa: E402


def median_ms(step, repeats):
    step()  # warm: tracing, compilation, allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())

    reference = randomize(torch, wav2lip_expert(torch))
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"state_dict": reference.state_dict()}, Path(folder, "lipsync_expert.pth"))
        convert_weights(Path(folder, "lipsync_expert.pth"), Path(folder, "wav2lip.keras"))
        expert_path = Path(folder, "wav2lip.keras")
        expert = load_model(expert_path)

        rng = np.random.default_rng(0)
        faces = rng.uniform(0, 1, (args.batch, 5, 96, 96, 3)).astype(np.float32)
        mel = rng.uniform(-4, 4, (args.batch, 80, 16)).astype(np.float32)

        # PyTorch, as Wav2Lip's get_sync_loss: (b, c, t, h, w) generator output, lower half, frames on channels
        for parameter in reference.parameters():
            parameter.requires_grad_(False)
        torch_faces = torch.from_numpy(faces.transpose(0, 4, 1, 2, 3).copy())
        torch_mel = torch.from_numpy(mel[:, None])

        def torch_step():
            g = torch_faces.clone().requires_grad_(True)
            half = g[:, :, :, g.size(3) // 2 :]
            a, v = reference(torch_mel, torch.cat([half[:, :, i] for i in range(5)], dim=1))
            loss = torch.nn.functional.binary_cross_entropy(torch.nn.functional.cosine_similarity(a, v).unsqueeze(1), torch.ones(len(g), 1))
            loss.backward()
            return g.grad

        sync_loss = SyncLoss(expert)
        tf_faces, tf_mel = tf.constant(faces), tf.constant(mel)

        def loss_and_grad(frames, audio):
            with tf.GradientTape() as tape:
                tape.watch(frames)
                loss = sync_loss(frames, audio)
            return loss, tape.gradient(loss, frames)

        compiled = tf.function(loss_and_grad)
        xla = tf.function(loss_and_grad, jit_compile=True)
        torch_ms = median_ms(torch_step, args.repeats)
        graph_ms = median_ms(lambda: compiled(tf_faces, tf_mel)[1].numpy(), args.repeats)
        xla_ms = median_ms(lambda: xla(tf_faces, tf_mel)[1].numpy(), args.repeats)
        print(f"Wav2Lip expert, SyncLoss forward + backward, batch {args.batch}, {os.cpu_count()} cores")
        print(f"  PyTorch {torch.__version__} (eager)      {torch_ms:8.1f} ms   1.00")
        print(f"  ours, tf.function          {graph_ms:8.1f} ms   {graph_ms / torch_ms:.2f}")
        print(f"  ours, tf.function + XLA    {xla_ms:8.1f} ms   {xla_ms / torch_ms:.2f}")

        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            policy_loss = SyncLoss(load_model(expert_path))
            loss = float(policy_loss(tf.cast(tf_faces, tf.float16), tf_mel))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        print(f"  mixed_float16 policy set before load_model: loss {loss:.5f} (float32: {float(sync_loss(tf_faces, tf_mel)):.5f})")


if __name__ == "__main__":
    main()
