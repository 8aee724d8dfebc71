"""Acceptance on the real data: pretrained CIFAR ResNets on the JPEG CIFAR-10 test split."""

import json

import pytest

from torchslim.cli import main

pytestmark = pytest.mark.shared


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured


@pytest.mark.parametrize("model,weights,top1", [
    ("cifar_resnet20", "resnet20-12fca82f.th", 81.03),
    ("cifar_resnet56", "resnet56-4bfd9763.th", 83.20),
])
def test_pretrained_accuracy_on_jpeg_test_split(shared_dir, session_cache, capsys, model,
                                                weights, top1):
    code, captured = run(["eval", "--model", model, "--weights",
                          shared_dir / "models" / weights, "--data",
                          shared_dir / "data" / "cifar10-jpeg.tar.gz", "--json", "--quiet"],
                         capsys)
    assert code == 0, captured.err
    payload = json.loads(captured.out.strip().splitlines()[-1])
    assert payload["n"] == 10_000
    assert payload["top1"] == pytest.approx(top1, abs=0.1)


def test_checkpoint_of_the_other_resnet_is_refused(shared_dir, capsys):
    code, captured = run(["summary", "--model", "cifar_resnet20", "--weights",
                          shared_dir / "models" / "resnet56-4bfd9763.th"], capsys)
    assert code == 2
    assert "does not fit model 'cifar_resnet20'" in captured.err
    assert captured.err.count("\n") == 1
