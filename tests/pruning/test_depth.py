"""Depth pruning: residual blocks found by tracing, removed exactly, ranked, replayed on load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.core.edits import apply_edits
from torchslim.core.errors import UserError
from torchslim.core.steps import StepContext
from torchslim.models import create_model
from torchslim.pruning.depth import (
    BlockPruner,
    BlockRemovalStep,
    CosineImportance,
    LossImportance,
    residual_blocks,
)
from torchslim.recipe import RecipeError, build_scheduler, parse_recipe
from torchslim.train import TrainConfig, Trainer

EXAMPLE = torch.zeros(1, 3, 32, 32)


class PreActBlock(nn.Module):
    """x + f(x), no activation after the addition, the shortcut written as a method call."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(width)
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x.add(self.conv(F.relu(self.bn(x))))


class ProjectionBlock(nn.Module):
    """relu(shortcut(x) + f(x)) with a learned shortcut: not removable."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.shortcut = nn.Conv2d(width, width, 1)

    def forward(self, x):
        return torch.relu(self.conv(x) + self.shortcut(x))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so it is not a candidate."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x) if x.sum() > 0 else x


class InPlaceBranch(nn.Module):
    """x + f(relu_(x)): the branch overwrites the shortcut's tensor, so removal is not exact."""

    def __init__(self, width: int, how: str) -> None:
        super().__init__()
        self.how = how
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        if self.how == "module":
            return x + self.conv(self.relu(x))
        return x + self.conv(x.mul_(0.5))


class Aliased(nn.Module):
    """One block registered under two names: replacing one name would leave the other."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = PreActBlock(width)
        self.b = self.a

    def forward(self, x):
        return self.b(self.a(x))


def _mixed() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PreActBlock(8), ProjectionBlock(8),
                         Branchy(8), PreActBlock(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def _batches(n: int = 2, size: int = 16, classes: int = 10) -> list:
    torch.manual_seed(1)
    return [(torch.randn(size, 3, 32, 32), torch.randint(0, classes, (size,)))
            for _ in range(n)]


def test_finds_identity_shortcut_blocks_and_skips_the_others():
    blocks = residual_blocks(_mixed().eval(), EXAMPLE)
    assert [(b.name, b.activation) for b in blocks] == [("1", "identity"), ("4", "identity")]
    assert blocks[0].macs == 8 * 8 * 9 * 32 * 32
    names = [b.name for b in residual_blocks(create_model("cifar_resnet20").eval(), EXAMPLE)]
    # the first block of layer2 and layer3 downsamples and widens: it stays
    assert names == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1",
                     "layer3.2"]


def test_blocks_that_overwrite_their_input_or_have_two_names_are_not_candidates():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), InPlaceBranch(8, "module"),
                          InPlaceBranch(8, "method"), Aliased(8), PreActBlock(8)).eval()
    assert [b.name for b in residual_blocks(model, EXAMPLE)] == ["4"]


def test_removal_equals_the_block_with_its_branch_zeroed():
    model = create_model("cifar_resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    zeroed = create_model("cifar_resnet20").eval()
    zeroed.load_state_dict(model.state_dict())
    with torch.no_grad():  # bn2 outputs zeros: relu(0 + x) is what the block then computes
        for name in ("layer1.1", "layer3.2"):
            bn = zeroed.get_submodule(name).bn2
            bn.weight.zero_()
            bn.bias.zero_()
    pruner = BlockPruner(2, importance=CosineImportance(), exclude=[
        "layer1.0", "layer1.2", "layer2.*", "layer3.1"])
    record = pruner.prune(model, [(x, torch.zeros(4, dtype=torch.long))])
    assert record["blocks"] == {"layer1.1": "relu", "layer3.2": "relu"}
    assert isinstance(model.layer1[1], nn.ReLU)
    with torch.no_grad():
        assert torch.allclose(model(x), zeroed(x), atol=1e-5)


@pytest.mark.parametrize("kind", ["loss", "cosine"])
def test_a_block_that_does_nothing_is_removed_first(kind):
    model = create_model("cifar_resnet20").eval()
    with torch.no_grad():
        model.layer2[2].bn2.weight.zero_()
        model.layer2[2].bn2.bias.zero_()
    batches = [(x, None) for x, _ in _batches()]
    if kind == "loss":  # the loss: distance to the whole model's outputs (0 before removal)
        with torch.no_grad():
            batches = [(x, model(x)) for x, _ in batches]
        importance = LossImportance(F.mse_loss)
    else:
        importance = CosineImportance()
    scores = importance(model, residual_blocks(model, EXAMPLE), batches)
    assert scores["layer2.2"] == pytest.approx(0.0, abs=1e-6)
    assert all(v > 1e-4 for k, v in scores.items() if k != "layer2.2")
    record = BlockPruner(1, importance=importance).prune(model, batches)
    assert list(record["blocks"]) == ["layer2.2"]


@pytest.mark.parametrize("iterative", [False, True])
def test_target_macs_removes_until_the_budget_is_met(iterative):
    model = create_model("cifar_resnet20").eval()
    from torchslim.analysis import summarize
    dense = summarize(model, (3, 32, 32)).macs
    record = BlockPruner(target_macs=0.7, importance=CosineImportance(),
                         iterative=iterative).prune(model, _batches())
    kept = summarize(model, (3, 32, 32)).macs / dense
    assert kept <= 0.7
    assert kept + 2 * 16 * 16 * 9 * 32 * 32 / dense > 0.7  # no block more than needed
    assert len(record["blocks"]) == len(record["scores"]) >= 3
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_iterative_ranking_rescores_after_each_removal():
    calls = []

    class Counting(CosineImportance):
        def __call__(self, model, blocks, batches):
            calls.append(len(blocks))
            return super().__call__(model, blocks, batches)

    BlockPruner(3, importance=Counting(), iterative=True).prune(
        create_model("cifar_resnet20").eval(), _batches(1))
    assert calls == [7, 6, 5]


def test_a_saved_model_reloads_into_a_fresh_instance():
    model = create_model("cifar_resnet20").eval()
    record = BlockPruner(2, importance=CosineImportance()).prune(model, _batches(1))
    fresh = apply_edits(create_model("cifar_resnet20"), [record]).eval()
    fresh.load_state_dict(model.state_dict())  # strict: every key fits
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    with pytest.raises(UserError, match="which the model lacks"):
        apply_edits(create_model("demo_cnn"), [record])


def test_mistakes_are_one_clear_line():
    with pytest.raises(UserError, match="either blocks .* or target_macs"):
        BlockPruner(2, target_macs=0.5)
    with pytest.raises(UserError, match="between 0 and 1"):
        BlockPruner(target_macs=1.5)
    with pytest.raises(UserError, match="has no residual block"):
        BlockPruner(1).prune(create_model("demo_cnn"), [(torch.zeros(2, 1, 28, 28), None)])
    with pytest.raises(UserError, match="exclude 'layer9.1' names no removable block"):
        BlockPruner(1, exclude=["layer9.1"]).prune(create_model("cifar_resnet20"), _batches(1))
    with pytest.raises(UserError, match="cannot remove 8 blocks: .* 7 removable"):
        BlockPruner(8).prune(create_model("cifar_resnet20"), _batches(1))
    model = create_model("cifar_resnet20")
    with pytest.raises(UserError, match=r"keeps 18.5% of the MACs, above target_macs 0.1"):
        BlockPruner(target_macs=0.1, importance=CosineImportance()).prune(model, _batches(1))
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())  # left as it was


RECIPE = """\
version: 1
pruners:
  depth:
    class: BlockPruner
    blocks: 2
    importance: cosine
    collect_batches: 2
policies:
  - pruner: {instance_name: depth}
    epochs: [0]
"""


def test_recipe_removes_blocks_while_training_and_the_optimizer_follows():
    model = create_model("cifar_resnet20")
    schedule = build_scheduler(parse_recipe(RECIPE, "depth.yaml"), model, EXAMPLE)
    data = _batches(4, 8)
    trainer = Trainer(model, data, TrainConfig(epochs=2, lr=0.01, device="cpu"),
                      callbacks=[schedule], progress=False)
    trainer.fit()
    action = schedule.log[0]["actions"]["depth"]
    assert len(action["removed_blocks"]) == 2
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2
    alive = {id(p) for p in model.parameters()}
    assert all(id(p) in alive for g in trainer.optimizer.param_groups for p in g["params"])
    assert schedule.edits == [{"kind": "block_removal", "blocks": action["removed_blocks"]}]


def test_the_step_checks_its_target_when_scheduled_and_keeps_its_result_on_resume():
    with pytest.raises(UserError, match="cannot remove 9 blocks"):
        build_scheduler(parse_recipe(RECIPE.replace("blocks: 2", "blocks: 9"), "depth.yaml"),
                        create_model("cifar_resnet20"), EXAMPLE)
    with pytest.raises(UserError, match="above target_macs 0.1"):
        build_scheduler(parse_recipe(RECIPE.replace("blocks: 2", "target_macs: 0.1"),
                                     "depth.yaml"), create_model("cifar_resnet20"), EXAMPLE)
    model = create_model("cifar_resnet20")
    step = BlockRemovalStep(BlockPruner(2, importance=CosineImportance()), collect_batches=2)
    ctx = StepContext(model, example_input=EXAMPLE)
    step.attach(ctx)
    x, y = _batches(1, 4)[0]
    assert step.mid_epoch_checkpoint_ok()  # nothing collected yet
    for minibatch in range(2):
        step.before_backward_pass(ctx, torch.tensor(0.0), inputs=x, targets=y)
        assert not step.mid_epoch_checkpoint_ok()  # collected batches are not checkpointed
        step.on_minibatch_end(ctx, minibatch, 10)
        assert step.done == (minibatch == 1)
    assert step.mid_epoch_checkpoint_ok()
    assert ctx.edits == [{"kind": "block_removal", "blocks": step._result["removed_blocks"]}]
    state = step.state_dict()
    fresh = BlockRemovalStep(BlockPruner(2))
    fresh.load_state_dict(state)
    assert fresh.done and fresh._result["removed_blocks"] == step._result["removed_blocks"]
    with pytest.raises(UserError, match="tensor minibatches"):
        BlockRemovalStep(BlockPruner(2)).before_backward_pass(
            None, torch.tensor(0.0), inputs={"audio": x}, targets=y)


def test_recipe_mistakes_are_one_located_line():
    with pytest.raises(RecipeError, match=r"depth.yaml:\d+ pruners.depth"):
        parse_recipe(RECIPE.replace("blocks: 2", "blocks: 2\n    target_macs: 0.5"),
                     "depth.yaml")
    with pytest.raises(RecipeError, match=r"depth.yaml:\d+ pruners.depth.importance"):
        parse_recipe(RECIPE.replace("cosine", "taylor"), "depth.yaml")
