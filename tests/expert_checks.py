"""Checks every converted expert family's tests share: a calibration to round-trip, and a
checkpoint `convert-weights` must refuse in one line with nothing written."""

from syncnet.calibration import Calibration
from syncnet.cli import main


def example_calibration() -> Calibration:
    return Calibration(
        score="confidence",
        threshold=0.05,
        logistic_slope=-30.0,
        auc=0.9,
        eer=0.1,
        balanced_accuracy=0.9,
        false_alarm_rate=0.1,
        miss_rate=0.1,
        num_real=20,
        num_swapped=20,
        speaking_threshold=0.02,
    )


def refused(capsys, tmp_path, source, *expected) -> str:
    """`syncnet convert-weights source` exits 1 with one line holding each of `expected`, writing nothing."""
    out = tmp_path / "out" / "expert.keras"
    out.parent.mkdir(exist_ok=True)
    assert main(["convert-weights", str(source), str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    for text in expected:
        assert text in error, error
    assert list(out.parent.iterdir()) == []
    return error


def randomize_batchnorm(torch, model, train_pass):
    """`model` with BatchNorm statistics of each layer's real scale, jittered, in eval mode: one
    `train_pass()` (a forward pass) in train mode with momentum 1 makes every running statistic its
    batch's, so activations stay O(1) through the layers; then every statistic and affine parameter
    is jittered, so a converter that mixed two up would show."""
    torch.manual_seed(0)
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in batchnorms:
        bn.momentum = 1.0
    model.train()
    with torch.no_grad():
        train_pass()
        for bn in batchnorms:
            bn.momentum = 0.1  # PyTorch's default again
            bn.running_mean += 0.1 * bn.running_mean.abs().mean() * torch.randn_like(bn.running_mean)
            bn.running_var *= torch.empty_like(bn.running_var).uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
    return model.eval()
