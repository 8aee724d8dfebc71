"""``torchslim compress`` with quantization-aware training: the numbers it reports are the
saved model's, and evaluating never moves the quantization ranges."""

import csv

from torchslim.cli import main as cli_main

from .test_cli import last_json

RECIPE = """
quantizers:
  qat:
    class: QuantAwareTrainRangeLinearQuantizer
    bits_activations: 4
    bits_weights: 4
policies:
  - quantizer: {instance_name: qat}
    starting_epoch: 0
"""


def main(args):
    return cli_main([str(a) for a in args])


def test_the_final_row_is_the_last_epochs_model_and_the_saved_one(tmp_path, capsys):
    # Before QAT observers were limited to training batches, the evaluation after each epoch
    # and the summary's forward pass on zeros moved the running ranges: the final row, the last
    # epoch's evaluation and the saved model all disagreed.
    recipe = tmp_path / "qat.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    assert main(["compress", "--recipe", recipe, "--model", "demo_cnn", "--data", "digits",
                 "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--repeats", "1",
                 "--latency-batch", "8", "--out", out, "--json", "--quiet"]) == 0
    final = last_json(capsys.readouterr().out)["top1"]
    with open(out / "metrics.csv") as f:
        last_epoch = list(csv.DictReader(f))[-1]
    assert main(["eval", "--model", "demo_cnn", "--weights", out / "compressed.pt",
                 "--data", "digits", "--json", "--quiet"]) == 0
    reloaded = last_json(capsys.readouterr().out)  # printed to 4 and 6 decimals
    assert abs(final - float(last_epoch["val_top1"])) < 1e-6
    assert abs(reloaded["top1"] - final) < 1e-3
    # The loss moves with the slightest change of a range, where top-1 may not.
    assert abs(reloaded["loss"] - float(last_epoch["val_loss"])) < 2e-4  # 1e-3 off before
