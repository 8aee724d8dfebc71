"""Pruning and quantization-aware training in one schedule: quantization wraps the layers
(``conv.weight`` becomes ``conv.layer.weight``), and the pruned weights stay zero, the pruner
goes on pruning them by their first names, and a resumed run ends where an uninterrupted one
does."""

from __future__ import annotations

import pytest
import torch

from torchslim.models import create_model
from torchslim.pruning import AGPPruner, PruneStep
from torchslim.quantization import QuantConfig
from torchslim.quantization.steps import QuantizationStep
from torchslim.schedule import CompressionScheduler, Policy
from torchslim.train import TrainConfig, Trainer

WEIGHT = "features.1.0.weight"


def _run(out, until=None, resume=False):
    torch.manual_seed(0)
    model = create_model("demo_cnn")
    schedule = CompressionScheduler(model, example_input=torch.zeros(1, 1, 8, 8))
    schedule.add(PruneStep(AGPPruner([WEIGHT], 0.2, 0.8)),
                 Policy(starting_epoch=0, ending_epoch=4), "agp")
    schedule.add(QuantizationStep(QuantConfig(method="lsq", fold_bn=False)),
                 Policy(starting_epoch=1), "qat")
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(3)]
    config = TrainConfig(epochs=4, lr=0.05, schedule="constant", device="cpu")
    Trainer(model, data, config, callbacks=[schedule], out_dir=out,
            progress=False).fit(resume=resume, until=until)
    return model, schedule


def test_pruned_weights_stay_zero_through_quantization_aware_training(tmp_path):
    model, schedule = _run(tmp_path / "a")
    weight = model.features[1][0].layer.weight  # wrapped by quantization at epoch 1
    masks = schedule.services["masks"]
    assert torch.equal(weight.detach() != 0, masks[WEIGHT])  # every pruned entry is zero
    assert float((weight == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    sparsities = [entry["sparsity"][WEIGHT] for entry in schedule.log]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.8, abs=0.01)


def test_a_resumed_prune_and_quantize_run_ends_where_an_uninterrupted_one_does(tmp_path):
    straight, _ = _run(tmp_path / "a")
    _run(tmp_path / "b", until=2)
    resumed, _ = _run(tmp_path / "b", resume=True)
    for key, value in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key].float(), value.float(), atol=1e-6), key


def test_a_pruner_follows_blocks_another_step_removed():
    # Names looked up once went stale when block removal took parameters away.
    from torchslim.pruning.depth import BlockPruner, BlockRemovalStep

    torch.manual_seed(0)
    model = create_model("resnet20_cifar", num_classes=10)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    schedule = CompressionScheduler(model, example_input=x[:1])
    schedule.add(BlockRemovalStep(BlockPruner(blocks=2), collect_batches=1), Policy(0, 1), "depth")
    schedule.add(PruneStep(AGPPruner(["*.conv*.weight"], 0.1, 0.5)), Policy(0, 3), "agp")
    for epoch in range(3):
        schedule.on_epoch_begin(epoch, optimizer=optimizer)
        schedule.on_minibatch_begin(epoch, 0, 1, optimizer=optimizer)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss = schedule.before_backward_pass(epoch, 0, 1, loss, optimizer=optimizer, inputs=x,
                                             targets=y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.on_minibatch_end(epoch, 0, 1, optimizer=optimizer)
        schedule.on_epoch_end(epoch, optimizer=optimizer)
    convs = [p for n, p in model.named_parameters() if ".conv" in n and n.endswith("weight")]
    assert len(convs) == 2 * (9 - 2)  # two blocks gone
    assert all(float((p == 0).float().mean()) > 0.45 for p in convs)
