"""The torchslim command: --json contracts, exit codes, and a real kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchslim.analysis import file_size_bytes
from torchslim.cli import main as cli_main
from torchslim.models import create_model

ROOT = Path(__file__).resolve().parents[2]


def main(args):
    return cli_main([str(a) for a in args])


def run_cli(*args, cwd=None, timeout=300):
    """Run the installed console entry point in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "torchslim.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_every_subcommand_has_help(capsys):
    for command in ["models", "summary", "eval", "train", "distill", "bench", "demo"]:
        with pytest.raises(SystemExit) as done:
            cli_main([command, "--help"])
        assert done.value.code == 0
        assert "--json" in capsys.readouterr().out


def test_summary_json_contract(capsys):
    assert main(["summary", "--model", "cifar_resnet20", "--json"]) == 0
    out = capsys.readouterr().out
    payload = last_json(out)
    assert payload["params"] == 269_722 and payload["macs"] == 40_551_040
    bn_biases = 16 * 7 + 32 * 6 + 64 * 6  # BatchNorm biases start at zero
    assert payload["nonzero_params"] == 269_722 - bn_biases
    layer = payload["layers"][0]
    assert set(layer) >= {"name", "type", "params", "nonzero_params", "sparsity", "macs"}
    assert "layer3.2.conv2" in out  # the human table came first


def test_models_lists_zoo(capsys):
    assert main(["models", "--json"]) == 0
    names = {m["name"] for m in last_json(capsys.readouterr().out)["models"]}
    assert {"cifar_resnet20", "cifar_resnet56", "lenet5", "demo_cnn"} <= names


def test_eval_json_and_saved_report(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(create_model("demo_cnn").state_dict(), weights)
    code = main(["eval", "--model", "demo_cnn", "--weights", weights, "--data", "digits",
                 "--out", tmp_path / "ev", "--json", "--quiet"])
    assert code == 0
    payload = last_json(capsys.readouterr().out)
    assert payload["n"] == 450 and 0 <= payload["top1"] <= payload["top5"] <= 100
    assert (tmp_path / "ev" / "confusion.csv").read_text().count("\n") == 11
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["top1"] == payload["top1"]


def test_train_then_eval_improves_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "demo_cnn", "--data", "digits", "--epochs", "3",
                 "--batch-size", "64", "--lr", "0.05", "--no-augment", "--out", out,
                 "--json", "--quiet"]) == 0
    trained = last_json(capsys.readouterr().out)
    assert trained["epochs"] == 3 and trained["top1"] > 80
    assert main(["eval", "--model", "demo_cnn", "--weights", out / "model.pt", "--data",
                 "digits", "--json", "--quiet"]) == 0
    assert last_json(capsys.readouterr().out)["top1"] == pytest.approx(trained["top1"])


def test_bench_writes_table_files(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.save(create_model("demo_cnn").state_dict(), weights)
    assert main(["bench", "--model", f"demo_cnn={weights}", "--model", "demo_cnn",
                 "--data", "digits", "--latency-batch", "32", "--repeats", "3",
                 "--out", tmp_path / "b", "--json"]) == 0
    out = capsys.readouterr().out
    payload = last_json(out)
    assert len(payload["rows"]) == 2
    row = payload["rows"][0]
    # the weights as a plain state_dict, measured the same way for every row
    assert row["file_bytes"] == file_size_bytes(create_model("demo_cnn"))
    assert row["latency_b1_ms"] > 0
    assert row["batch_n"] == 32 and row["peak_mem_bytes"] > 0 and row["top1"] is not None
    for suffix in ("md", "csv", "json"):
        assert (tmp_path / "b" / f"bench.{suffix}").is_file()
    assert "demo_cnn (w)" in out


@pytest.mark.parametrize("args,message", [
    (["eval", "--model", "demo_cnn", "--weights", "missing.pt", "--data", "digits"],
     "weights file 'missing.pt' not found"),
    (["summary", "--model", "cifar_resnt20"], "did you mean 'cifar_resnet20'"),
    (["eval", "--model", "demo_cnn", "--weights", "{weights}", "--data", "no/such/dir"],
     "data 'no/such/dir' not found"),
    (["eval", "--model", "demo_cnn", "--weights", "{weights}", "--data", "{empty}"],
     "{empty}"),
    (["eval", "--model", "cifar_resnet20", "--weights", "{weights}", "--data", "digits"],
     "does not fit model 'cifar_resnet20'"),
    (["train", "--model", "demo_cnn", "--data", "digits", "--out", "{out}", "--resume"],
     "cannot resume"),
    (["bench", "--model", "demo_cnn=nope.pt", "--data", "digits"], "nope.pt"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, args, message):
    weights = tmp_path / "w.pt"
    torch.save(create_model("demo_cnn").state_dict(), weights)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    subs = {"{weights}": str(weights), "{empty}": str(tmp_path / "empty"),
            "{out}": str(tmp_path / "run")}
    args = [subs.get(a, a) for a in args]
    message = subs.get(message, message)
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_bad_argument_value_exits_2():
    done = run_cli("summary", "--model", "demo_cnn", "--input-shape", "3,x,2")
    assert done.returncode == 2 and "bad shape" in done.stderr and "Traceback" not in done.stderr


def _train_args(out):
    return ["train", "--model", "demo_cnn", "--data", "digits", "--epochs", "6",
            "--batch-size", "8", "--lr", "0.02", "--seed", "1", "--device", "cpu", "--out", out,
            "--quiet", "--json"]


def _saved_epoch(path):
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except Exception:  # not written yet
        return -1


def test_killed_run_resumes_and_matches_uninterrupted(tmp_path):
    full = run_cli(*_train_args(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    reference = last_json(full.stdout)

    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "torchslim.cli", *map(str, _train_args(out))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 240
    while _saved_epoch(out / "checkpoint.pt") < 1 and process.poll() is None:
        assert time.time() < deadline, "training never wrote its second checkpoint"
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    time.sleep(0.1)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _saved_epoch(out / "checkpoint.pt")
    assert 1 <= killed_at < 5 and not (out / "model.pt").exists()

    resumed = run_cli(*_train_args(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    result = last_json(resumed.stdout)
    assert result["epochs"] == 6
    assert abs(result["top1"] - reference["top1"]) < 0.5
    full_state = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    resumed_state = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    for key, value in full_state.items():
        assert torch.allclose(resumed_state[key].float(), value.float(), atol=1e-5), key
