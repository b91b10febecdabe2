"""The frozen expert's cost in a generator step: `SyncLoss` forward + backward to the frames, against
the published PyTorch network (the one our parity tests build: tests/test_wav2lip.py,
tests/test_latentsync.py) doing the same in the same process, with the same random weights.

    python bench/bench_sync_loss_families.py [--family wav2lip|latentsync] [--batch N] [--repeats 5]

- wav2lip (default batch 16): Wav2Lip's `get_sync_loss` + `.backward()` - whole 96 px BGR faces in
  [0, 1], the lower half taken, BCE of the cosine;
- latentsync (default batch 2, the published 1.5 / 1.6 network, 401 M weights): 16 whole 256 px RGB
  faces in [-1, 1], the lower half taken, BCE of the cosine; then the peak memory of loading the
  full-size expert from a float16 `.keras` file, in a fresh process.

Prints ms per step for PyTorch (eager, as the published training loops run), ours with `tf.function`,
and ours with XLA, each as a ratio to PyTorch; both use every core. Then one step under a
`mixed_float16` global policy set before the expert is loaded, as GPU recipes do (on a CPU it only
shows that it works).
"""

import argparse
import os
import subprocess
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

from syncnet.loading import load_model, save_model  # noqa: E402
from syncnet.sync_loss import SyncLoss  # noqa: E402


def median_ms(step, repeats):
    step()  # warm: tracing, compilation, allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def wav2lip(batch):
    """(PyTorch network, our model, faces (b, 5, 96, 96, 3) BGR in [0, 1], mel, torch's input layout)."""
    from test_wav2lip import randomize, wav2lip_expert

    from syncnet.convert import recognise

    reference = randomize(torch, wav2lip_expert(torch))
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    model = recognise(state)[1](state)
    rng = np.random.default_rng(0)
    faces = rng.uniform(0, 1, (batch, 5, 96, 96, 3)).astype(np.float32)
    mel = rng.uniform(-4, 4, (batch, 80, 16)).astype(np.float32)

    def torch_embed(g, audio):  # get_sync_loss: (b, c, t, h, w), lower half, frames on the channels
        half = g.permute(0, 4, 1, 2, 3)[:, :, :, g.size(2) // 2 :]
        a, v = reference(audio, torch.cat([half[:, :, i] for i in range(5)], dim=1))
        return a, v

    return reference, model, faces, mel, torch.from_numpy(mel[:, None]), torch_embed


def latentsync(batch):
    from test_latentsync import randomize, stable_syncnet

    from syncnet.models import latentsync as family

    reference = randomize(torch, stable_syncnet(torch, family.PUBLISHED["1.5"][0]))
    model = family.convert_state_dict({key: value.numpy() for key, value in reference.state_dict().items()})
    rng = np.random.default_rng(0)
    faces = rng.uniform(-1, 1, (batch, 16, 256, 256, 3)).astype(np.float32)
    mel = rng.uniform(-4, 4, (batch, 80, 52)).astype(np.float32)

    def torch_embed(g, audio):  # "b f c h w -> b (f c) h w" of the lower halves
        half = g.permute(0, 1, 4, 2, 3)[:, :, :, g.size(2) // 2 :]
        v, a = reference(half.reshape(len(g), 48, 128, 256), audio)
        return a, v

    return reference, model, faces, mel, torch.from_numpy(mel[:, None]), torch_embed


FAMILIES = {"wav2lip": (wav2lip, 16), "latentsync": (latentsync, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=FAMILIES, default="wav2lip")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    setup, default_batch = FAMILIES[args.family]
    batch = args.batch or default_batch
    torch.set_num_threads(os.cpu_count())

    reference, model, faces, mel, torch_mel, torch_embed = setup(batch)
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    torch_faces = torch.from_numpy(faces)  # in the family's own convention: what its generator emits

    def torch_step():
        g = torch_faces.clone().requires_grad_(True)
        a, v = torch_embed(g, torch_mel)
        similarity = torch.nn.functional.cosine_similarity(a, v).clamp(1e-7, 1 - 1e-7)
        loss = torch.nn.functional.binary_cross_entropy(similarity.unsqueeze(1), torch.ones(len(g), 1))
        loss.backward()
        return g.grad

    sync_loss = SyncLoss(model)
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
    print(f"{args.family} expert ({model.count_params():,} weights), SyncLoss forward + backward, batch {batch}, {os.cpu_count()} cores")
    print(f"  PyTorch {torch.__version__} (eager)      {torch_ms:9.1f} ms   1.00")
    print(f"  ours, tf.function          {graph_ms:9.1f} ms   {graph_ms / torch_ms:.2f}")
    print(f"  ours, tf.function + XLA    {xla_ms:9.1f} ms   {xla_ms / torch_ms:.2f}")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, f"{args.family}.keras")
        save_model(model, path, float16_weights=True)
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            loss = float(SyncLoss(load_model(path))(tf.cast(tf_faces, tf.float16), tf_mel))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        print(f"  mixed_float16 policy set before load_model: loss {loss:.5f} (float32 weights: {float(sync_loss(tf_faces, tf_mel)):.5f})")
        # Peak memory of loading, in a fresh process (ru_maxrss: KB on Linux)
        script = (
            "import resource, time, syncnet; start = time.perf_counter(); syncnet.load_model(__import__('sys').argv[1]); "
            "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        seconds, peak_kb = subprocess.run(
            [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        size = path.stat().st_size
        print(
            f"  loading the float16 .keras file ({size / 2**20:,.0f} MB) in a fresh process: {float(seconds):.1f} s, peak RSS {int(peak_kb) / 2**20:.2f} GB"
        )


if __name__ == "__main__":
    main()
