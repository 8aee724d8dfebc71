"""QAT steps that add parameters to the optimizer (LSQ step sizes, PACT clipping levels) resume
exactly: the resumed optimizer has the same groups, in the same order, as the interrupted one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchslim.models import create_model
from torchslim.quantization import QuantConfig, Quantizer, activation_quantizers
from torchslim.quantization.steps import QuantizationStep
from torchslim.schedule import CompressionScheduler, Policy
from torchslim.train import Callback, TrainConfig, Trainer


def _batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(3)]


def _run(out, epochs, method, fold_bn, resume=False):
    torch.manual_seed(0)
    model = create_model("demo_cnn")
    schedule = CompressionScheduler(model, example_input=torch.zeros(1, 1, 8, 8))
    schedule.add(QuantizationStep(QuantConfig(method=method, weight_bits=4, activation_bits=4,
                                                 fold_bn=fold_bn)),
                 Policy(0), "q")
    config = TrainConfig(epochs=3, lr=0.05, schedule="cosine", device="cpu")
    trainer = Trainer(model, _batches(), config, callbacks=[schedule], out_dir=out,
                      progress=False)
    trainer.fit(resume=resume, until=epochs)
    return model, trainer


@pytest.mark.parametrize("method,fold_bn", [("lsq", False), ("lsq", True), ("pact", False)])
def test_learned_quantizers_resume_exactly(method, fold_bn, tmp_path):
    straight, trainer = _run(tmp_path / "a", 3, method, fold_bn)
    assert len(trainer.optimizer.param_groups) == 2  # the quantizers' own group, no decay
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in straight.parameters()}  # folded weights, no stale ones
    _run(tmp_path / "b", 1, method, fold_bn)
    resumed, trainer = _run(tmp_path / "b", 3, method, fold_bn, resume=True)
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [5e-4, 0.0]
    for key, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key].float(), value.float(), atol=1e-6), key


class _Kill(Callback):
    def __init__(self, at):
        self.at = at

    def on_minibatch_end(self, epoch, minibatch_id, minibatches_per_epoch, **kw):
        if (epoch, minibatch_id) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["static", "lsq"])
def test_quantization_aware_training_resumes_within_an_epoch(method, tmp_path):
    """Killed after minibatch 1 of epoch 1, the observers still observing until epoch 2 (a
    reloaded quantized model starts frozen): the resumed run sets the quantizers' flags again
    (on_epoch_resume) and ends where an uninterrupted run ends."""

    def run(out, kill=None, resume=False):
        torch.manual_seed(0)
        model = create_model("demo_cnn")
        schedule = CompressionScheduler(model, example_input=torch.zeros(1, 1, 8, 8))
        schedule.add(QuantizationStep(QuantConfig(method=method), calibration_batches=1,
                                      freeze_observers_epoch=2), Policy(0), "q")
        config = TrainConfig(epochs=3, lr=0.05, device="cpu", checkpoint_minutes=1e-9)
        trainer = Trainer(model, _batches(), config, callbacks=[schedule, _Kill(kill)],
                          out_dir=out, progress=False)
        trainer.fit(resume=resume)
        return model

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", kill=(1, 1))
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["position"]["step"] == 1
    resumed = run(tmp_path / "b", resume=True)
    observing = [q.observing for q in resumed.modules() if isinstance(q, Quantizer)]
    assert observing and not any(observing)  # frozen, as in the uninterrupted run
    for key, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key].float(), value.float(), atol=1e-6), key


def test_calibration_longer_than_the_epoch_ends_with_it_and_never_records_the_evaluation():
    # Calibrating quantizers record in any mode: with calibration_batches (32, as Distiller's
    # PostTrainLinearQuantizer) beyond a 3-minibatch epoch, the evaluation on the test split
    # went into the ranges and the model was never quantized.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    train = [(torch.rand(16, 4), torch.randint(0, 3, (16,))) for _ in range(3)]
    test = [(100 * torch.ones(16, 4), torch.randint(0, 3, (16,)))]
    schedule = CompressionScheduler(model, example_input=torch.zeros(1, 4))
    step = QuantizationStep(QuantConfig(observer="minmax", fold_bn=False),
                            calibration_batches=32)
    schedule.add(step, Policy(0), "ptq")
    config = TrainConfig(epochs=2, device="cpu", lr=1e-9, momentum=0.0, weight_decay=0.0)
    Trainer(model, train, config, eval_batches=test, num_classes=3, callbacks=[schedule],
            progress=False).fit()
    quantizers = activation_quantizers(model)
    assert step.calibrated and all(q.quantizing for q in quantizers.values())
    low, high = next(iter(quantizers.values())).observer.range()
    assert float(high) < 1.0  # the training inputs' range, not the test split's 100
