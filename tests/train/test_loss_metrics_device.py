"""The trainer's pluggable loss and metrics, its device choice and mixed precision (CPU side)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.core.errors import UserError
from torchslim.train import (
    PSNR,
    Callback,
    MeanLoss,
    Metric,
    TopK,
    TrainConfig,
    Trainer,
    evaluate,
    resolve_device,
)

from .test_trainer import ShuffledBatches, make_model


# -- loss_fn -----------------------------------------------------------------------------------
class SeesLoss(Callback):
    """Records what before_backward_pass receives."""

    def __init__(self):
        self.calls = []

    def before_backward_pass(self, epoch, minibatch_id, minibatches_per_epoch, loss, **kw):
        self.calls.append((loss.item(), kw["inputs"], kw["outputs"], kw["targets"]))


def test_custom_loss_fn_is_used_with_outputs_targets_and_the_batch():
    batches_seen = []

    def loss_with_offset(outputs, targets, batch):
        batches_seen.append(batch)
        return F.cross_entropy(outputs, targets) + 5.0  # a constant: same gradients

    config = TrainConfig(epochs=2, lr=0.1, device="cpu")
    plain = Trainer(make_model(), ShuffledBatches(), config, progress=False).fit()
    hook = SeesLoss()
    custom = Trainer(make_model(), ShuffledBatches(), config, loss_fn=loss_with_offset,
                     callbacks=[hook], progress=False).fit()
    # Same training trajectory, every loss 5 higher: the trainer used loss_fn's value.
    for a, b in zip(plain, custom, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"] + 5.0, abs=1e-5)
        assert b["train_top1"] == a["train_top1"]
    assert len(batches_seen) == len(hook.calls) == 2 * len(ShuffledBatches())
    for batch, (loss, inputs, outputs, targets) in zip(batches_seen, hook.calls, strict=True):
        assert isinstance(batch, tuple) and len(batch) == 2
        assert batch[0] is inputs and batch[1] is targets  # the batch the model saw
        assert loss == pytest.approx(F.cross_entropy(outputs, targets).item() + 5.0, abs=1e-5)


def test_default_loss_uses_label_smoothing():
    def recorded(smoothing):
        hook = SeesLoss()
        config = TrainConfig(epochs=1, lr=0.1, label_smoothing=smoothing, device="cpu")
        Trainer(make_model(), ShuffledBatches(), config, callbacks=[hook], progress=False).fit()
        loss, _, outputs, targets = hook.calls[0]
        return loss, F.cross_entropy(outputs, targets, label_smoothing=smoothing).item()

    for smoothing in (0.0, 0.3):
        used, expected = recorded(smoothing)
        assert used == pytest.approx(expected, abs=1e-6)


def test_loss_fn_must_return_a_scalar():
    def per_sample(outputs, targets, batch):
        return F.cross_entropy(outputs, targets, reduction="none")

    trainer = Trainer(make_model(), ShuffledBatches(), TrainConfig(device="cpu"),
                      loss_fn=per_sample, progress=False)
    with pytest.raises(UserError, match="scalar tensor, got a tensor of shape \\(16,\\)"):
        trainer.fit()


# -- metrics -----------------------------------------------------------------------------------
def test_default_metrics_keep_todays_keys_and_match_evaluate():
    data = ShuffledBatches(n=64)
    model = make_model()
    history = Trainer(model, data, TrainConfig(epochs=2, lr=0.2, device="cpu"),
                      eval_batches=data, progress=False).fit()
    assert list(history[-1]) == ["epoch", "lr", "train_loss", "train_top1", "val_loss",
                                 "val_top1", "val_top5", "seconds"]
    reference = evaluate(model, data, 2)
    assert history[-1]["val_top1"] == pytest.approx(reference.top1)
    assert history[-1]["val_top5"] == pytest.approx(reference.top5) == 100.0  # k capped at 2
    assert history[-1]["val_loss"] == pytest.approx(reference.loss, rel=1e-5)


class SampleCount(Metric):
    def reset(self):
        self.n = 0

    def update(self, outputs, targets):
        self.n += len(targets)

    def compute(self):
        return {"samples": float(self.n)}


def test_custom_metrics_appear_as_val_names():
    data = ShuffledBatches(n=48)
    metrics = [SampleCount(), MeanLoss(F.cross_entropy, name="xent"), TopK(ks=(1,))]
    history = Trainer(make_model(), data, TrainConfig(epochs=1, device="cpu"),
                      eval_batches=data, metrics=metrics, progress=False).fit()
    row = history[0]
    assert row["val_samples"] == 48.0 and row["val_xent"] > 0 and 0 <= row["val_top1"] <= 100
    assert "val_loss" not in row and "val_top5" not in row


def test_two_metrics_with_one_name_are_a_user_error():
    data = ShuffledBatches(n=32)
    trainer = Trainer(make_model(), data, TrainConfig(device="cpu"), eval_batches=data,
                      metrics=[MeanLoss(), MeanLoss(F.multi_margin_loss)], progress=False)
    with pytest.raises(UserError, match="two metrics report 'loss'"):
        trainer.fit()


def test_no_metrics_means_no_evaluation():
    data = ShuffledBatches(n=32)
    history = Trainer(make_model(), data, TrainConfig(device="cpu"), eval_batches=data,
                      metrics=[], progress=False).fit()
    assert not [key for key in history[0] if key.startswith("val_")]


def test_topk_caps_k_and_checks_the_head():
    metric = TopK(ks=(1, 2, 5))
    metric.update(torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]), torch.tensor([1, 2]))
    assert metric.compute() == {"top1": 0.0, "top2": 50.0, "top5": 100.0}
    metric.reset()
    metric.update(torch.tensor([[0.0, 1.0, 0.5]]), torch.tensor([1]))
    assert metric.compute()["top1"] == 100.0  # reset forgot the first batch
    with pytest.raises(UserError, match="outputs 3 class scores but the data has 10 classes"):
        TopK(num_classes=10).update(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(UserError, match="integer labels"):
        TopK().update(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(UserError, match="k >= 1"):
        TopK(ks=(0,))


def test_mean_loss_weights_batches_by_size():
    metric = MeanLoss(F.l1_loss, name="l1")
    metric.update(torch.ones(1, 2), torch.zeros(1, 2))  # mean 1 over 1 sample
    metric.update(torch.zeros(3, 2), torch.zeros(3, 2))  # mean 0 over 3 samples
    assert metric.compute() == {"l1": 0.25}
    with pytest.raises(UserError, match="scalar tensor"):
        MeanLoss(lambda o, t: (o - t).abs()).update(torch.ones(2, 2), torch.zeros(2, 2))


def test_psnr_is_the_mean_over_images():
    metric = PSNR(max_value=2.0)
    outputs = torch.zeros(2, 1, 4, 4)
    targets = torch.stack([torch.full((1, 4, 4), 0.2), torch.full((1, 4, 4), 0.02)])
    metric.update(outputs, targets)
    # 10*log10(4 / 0.04) = 20 dB and 10*log10(4 / 0.0004) = 40 dB: mean 30 dB
    assert metric.compute()["psnr"] == pytest.approx(30.0, abs=1e-4)
    exact = PSNR()
    exact.update(torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
    assert exact.compute()["psnr"] == pytest.approx(100.0)  # finite for a perfect match
    with pytest.raises(UserError, match="same shape"):
        PSNR().update(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(UserError, match="max_value > 0"):
        PSNR(max_value=0)


def _denoising_data(n, batch=16, seed=0):
    """Smooth 1x8x8 images in [0, 1] (inputs: with noise added; targets: clean)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 2, 2, generator=g)
    clean = F.interpolate(coarse, size=(8, 8), mode="bilinear", align_corners=False)
    noisy = clean + 0.15 * torch.randn(clean.shape, generator=g)
    return [(noisy[i:i + batch], clean[i:i + batch]) for i in range(0, n, batch)]


def test_image_to_image_model_trains_with_mse_and_psnr():
    """No classification anywhere: no Linear head, float image targets, no num_classes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    train, test = _denoising_data(256, seed=0), _denoising_data(64, seed=1)
    trainer = Trainer(
        model, train, TrainConfig(epochs=10, lr=0.05, weight_decay=0, device="cpu"),
        eval_batches=test, loss_fn=lambda outputs, targets, batch: F.mse_loss(outputs, targets),
        metrics=[MeanLoss(F.mse_loss, name="mse"), PSNR(max_value=1.0)], progress=False,
    )
    before = trainer.evaluate_metrics()["val_psnr"]
    history = trainer.fit()
    assert set(history[-1]) == {"epoch", "lr", "train_loss", "val_mse", "val_psnr", "seconds"}
    psnr = [row["val_psnr"] for row in history]
    noisy = PSNR()
    for inputs, clean in test:
        noisy.update(inputs, clean)
    # Measured: 2.8 dB untrained, 14.2 dB after one epoch, 22.4 dB after ten; the noisy
    # inputs themselves are at 16.5 dB, so the model learned to denoise.
    assert psnr[0] > before + 5 and psnr[-1] > psnr[0] + 4
    assert psnr[-1] > noisy.compute()["psnr"] + 4
    assert history[-1]["val_mse"] < history[0]["val_mse"] / 2


def test_image_model_with_default_metrics_says_which_metrics_to_give():
    model = nn.Conv2d(1, 1, 3, padding=1)
    data = _denoising_data(16)
    trainer = Trainer(model, data, TrainConfig(device="cpu"), eval_batches=data,
                      loss_fn=lambda o, t, b: F.mse_loss(o, t), progress=False)
    with pytest.raises(UserError, match="PSNR"):
        trainer.fit()


# -- device ------------------------------------------------------------------------------------
@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_device_is_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    trainer = Trainer(make_model(), ShuffledBatches(), TrainConfig(epochs=1), progress=False)
    assert trainer.device == torch.device("cpu") and trainer.amp is False
    trainer.fit()
    assert next(trainer.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_cuda_is_a_user_error(no_cuda, name):
    with pytest.raises(UserError, match=f"device '{name}' needs CUDA"):
        resolve_device(name)
    with pytest.raises(UserError, match="needs CUDA"):
        Trainer(make_model(), ShuffledBatches(), TrainConfig(device=name), progress=False)


def test_unknown_device_and_missing_gpu_index(monkeypatch):
    with pytest.raises(UserError, match="unknown device 'gpu': use auto, cpu, cuda or cuda:N"):
        TrainConfig(device="gpu").validate()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UserError, match="has 1 CUDA device"):
        resolve_device("cuda:3")


# -- mixed precision ---------------------------------------------------------------------------
def test_amp_on_the_cpu_is_a_user_error():
    with pytest.raises(UserError, match="mixed precision needs a CUDA device; the device is cpu"):
        TrainConfig(device="cpu", amp=True).validate()
    with pytest.raises(UserError, match="amp must be True, False or None"):
        TrainConfig(device="cpu", amp="yes").validate()


def test_amp_default_on_the_cpu_keeps_everything_float32(tmp_path):
    hook = SeesLoss()
    trainer = Trainer(make_model(), ShuffledBatches(), TrainConfig(epochs=1, device="cpu"),
                      callbacks=[hook], out_dir=tmp_path, progress=False)
    assert trainer.amp is False and not trainer.scaler.is_enabled()
    trainer.fit()
    _, inputs, outputs, _ = hook.calls[0]
    assert inputs.dtype == outputs.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["scaler"] == {}


def test_loss_scaler_state_round_trips_through_the_checkpoint(tmp_path):
    """The CUDA scaler cannot run here; a CPU GradScaler goes through the same plumbing:
    scale(loss).backward(), step, update, saved with the checkpoint, restored on resume."""
    config = TrainConfig(epochs=3, lr=0.05, device="cpu")
    first = Trainer(make_model(), ShuffledBatches(), config, out_dir=tmp_path, progress=False)
    first.scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)
    first.fit(until=2)
    steps = 2 * len(ShuffledBatches())
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["scaler"]
    assert saved["scale"] == 4.0 * 2**steps  # grew once per (finite) step

    resumed = Trainer(make_model(), ShuffledBatches(), config, out_dir=tmp_path, progress=False)
    resumed.scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1000)
    resumed.resume()
    assert resumed.scaler.get_scale() == saved["scale"]
    assert resumed.scaler.state_dict()["growth_interval"] == 1

    # Without mixed precision the saved scale is not needed; a run saved without one resumes
    # with a fresh scale.
    plain = Trainer(make_model(), ShuffledBatches(), config, out_dir=tmp_path, progress=False)
    assert plain.resume() == 2 and not plain.scaler.is_enabled()
    other = tmp_path / "plain"
    Trainer(make_model(), ShuffledBatches(), config, out_dir=other, progress=False).fit(until=1)
    fresh = Trainer(make_model(), ShuffledBatches(), config, out_dir=other, progress=False)
    fresh.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    fresh.resume()
    assert fresh.scaler.get_scale() == 8.0
