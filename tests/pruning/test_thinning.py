"""Thinning: pruned channels physically removed, outputs unchanged, reload in a fresh model."""

import json

import pytest
import torch
from torch import nn

from tests.graph.helpers import randomize
from tests.pruning.test_structured import CatNet, DepthwiseNet, RollNet
from torchslim.analysis import summarize
from torchslim.core.errors import UserError
from torchslim.graph import build_graph
from torchslim.models import create_model
from torchslim.pruning.masks import Masks
from torchslim.pruning.structured import BNGammaPruner, FilterNormPruner, RandomChannelPruner
from torchslim.pruning.thinning import apply_thinning, removable_channels, thin


def with_random_batchnorm(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, then eval mode."""
    return randomize(model, seed)


def pruned(model, example, pruner=None):
    torch.manual_seed(0)
    masks = Masks(model)
    (pruner or FilterNormPruner(0.5)).apply(build_graph(model, example), masks)
    return masks


CASES = {
    "demo_cnn": (lambda: create_model("demo_cnn"), (1, 8, 8)),
    "lenet5": (lambda: create_model("lenet5"), (1, 28, 28)),
    "cifar_resnet20": (lambda: create_model("cifar_resnet20"), (3, 32, 32)),
    "cat": (CatNet, (3, 8, 8)),
    "depthwise": (DepthwiseNet, (3, 8, 8)),
    "unknown_op": (RollNet, (3, 8, 8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prune_and_thin_keeps_outputs_and_shrinks_macs(case):
    factory, shape = CASES[case]
    torch.manual_seed(0)
    model = with_random_batchnorm(factory())
    x = torch.randn(4, *shape)
    macs, params = summarize(model, shape).macs, sum(p.numel() for p in model.parameters())
    pruned(model, x[:1])
    expected = model(x)
    record = thin(model, x[:1])
    assert record and removable_channels(build_graph(model, x[:1])) == {}
    assert (model(x) - expected).abs().max().item() < 1e-5
    assert summarize(model, shape).macs < macs
    assert sum(p.numel() for p in model.parameters()) < params


def test_half_of_every_resnet20_group_leaves_a_quarter_of_the_macs():
    model = create_model("cifar_resnet20")
    x = torch.zeros(1, 3, 32, 32)
    pruned(model, x, RandomChannelPruner(0.5, seed=0))
    thin(model, x)
    assert model.conv1.out_channels == 8 and model.layer1[0].conv1.out_channels == 8
    assert model.layer2[0].conv2.out_channels == 16 and model.layer3[2].bn2.num_features == 32
    assert model.linear.in_features == 32
    shortcut = model.layer2[0].shortcut  # its F.pad, rewritten: 8 carried of 16 channels
    assert type(shortcut).__name__ == "ChannelPadShortcut" and "channel_pad" in shortcut.code
    assert shortcut(torch.ones(1, 8, 4, 4)).shape == (1, 16, 2, 2)
    assert summarize(model, (3, 32, 32)).macs == 10_248_512  # 40,551,040 unpruned


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet56"])
def test_thinned_resnet_reloads_in_a_fresh_model_from_json_record(name, tmp_path):
    model = with_random_batchnorm(create_model(name))
    x = torch.randn(2, 3, 32, 32)
    pruned(model, x[:1], BNGammaPruner(0.4))
    before = model(x)
    record = thin(model, x[:1])
    expected = model(x)
    assert torch.allclose(expected, before, rtol=1e-5, atol=1e-4)  # deep nets sum more rounding
    torch.save(model.state_dict(), tmp_path / "thin.pt")
    (tmp_path / "thin.json").write_text(json.dumps(record))

    fresh = apply_thinning(create_model(name), json.loads((tmp_path / "thin.json").read_text()))
    fresh.load_state_dict(torch.load(tmp_path / "thin.pt", weights_only=True))
    assert torch.equal(fresh.eval()(x), expected)
    assert set(record["rewrites"]) <= {"layer2.0.shortcut", "layer3.0.shortcut"}
    assert set(fresh.state_dict()) == set(model.state_dict())


def test_unthinned_resnet_keeps_its_state_dict_keys_and_shortcut_behaviour():
    model = create_model("cifar_resnet20")
    assert not any("shortcut" in key for key in model.state_dict())
    x = torch.randn(1, 16, 4, 4)
    padded = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(padded, model.layer2[0].shortcut(x))


def test_thinning_twice_gives_records_to_apply_in_order():
    model = with_random_batchnorm(create_model("cifar_resnet20"))
    x = torch.randn(2, 3, 32, 32)
    pruned(model, x[:1], FilterNormPruner(0.25))
    first = thin(model, x[:1])
    pruned(model, x[:1], FilterNormPruner(0.25))
    second = thin(model, x[:1])
    assert model.conv1.out_channels == 9  # 16 -> 12 -> 9
    fresh = apply_thinning(apply_thinning(create_model("cifar_resnet20"), first), second)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.eval()(x), model(x))
    with pytest.raises(UserError, match="apply records in the order"):
        apply_thinning(create_model("cifar_resnet20"), second)


def test_optimizer_and_masks_follow_the_thinned_parameters():
    torch.manual_seed(0)
    model = create_model("demo_cnn")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))

    def step():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        masks.apply()

    masks = Masks(model)
    step()
    graph = build_graph(model, x[:1])
    FilterNormPruner(0.5).apply(graph, masks)
    masks.set("classifier.weight", model.classifier.weight.abs() > 0.05)  # unstructured mask
    unstructured = masks["classifier.weight"].clone()
    step()
    record = thin(model, x[:1], optimizer=optimizer, masks=masks)

    kept = torch.tensor(record["layers"]["classifier"]["kept"]["in"])
    assert model.features[1][0].weight.shape == (32, 16, 3, 3)
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [
        id(p) for p in model.parameters()]
    for param in model.parameters():
        assert optimizer.state[param]["momentum_buffer"].shape == param.shape
    assert torch.equal(masks["classifier.weight"], unstructured[:, kept])
    assert set(masks) >= {"features.0.0.weight", "features.1.0.weight", "classifier.weight"}
    assert all(masks[name].shape == param.shape for name, param in model.named_parameters()
               if name in masks)
    step()
    assert not removable_channels(build_graph(model, x[:1]))  # nothing pruned is left
    assert torch.equal(model.classifier.weight != 0, masks["classifier.weight"])


def test_nothing_pruned_means_nothing_thinned():
    model = create_model("lenet5")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert thin(model, torch.zeros(1, 1, 28, 28))["layers"] == {}
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_a_layer_with_every_channel_pruned_is_refused():
    model = create_model("lenet5")
    with torch.no_grad():
        for param in (model.conv2.weight, model.conv2.bias, model.fc1.weight):
            param.zero_()
    with pytest.raises(UserError, match="every output channel of 'conv2' is pruned"):
        thin(model, torch.zeros(1, 1, 28, 28))
    assert model.conv2.out_channels == 16 and model.conv1.out_channels == 6


def test_record_of_another_model_is_refused():
    model = create_model("demo_cnn")
    x = torch.zeros(1, 1, 8, 8)
    pruned(model, x)
    record = thin(model, x)
    with pytest.raises(UserError, match="names layer 'features.0.0', which the model lacks"):
        apply_thinning(create_model("lenet5"), record)
    with pytest.raises(UserError, match="has 16 output channels, the thinning record expects 32"):
        apply_thinning(model, record)


def test_a_stale_graph_is_refused_after_thinning():
    model = create_model("demo_cnn")
    x = torch.zeros(1, 1, 8, 8)
    graph = build_graph(model, x)
    FilterNormPruner(0.5).apply(graph, Masks(model))
    thin(model, x)
    with pytest.raises(UserError, match="out of date"):
        FilterNormPruner(0.5).select(graph)


def test_channels_no_layer_reads_go_with_their_producers_exactly():
    """Input channels zeroed in their only reader (group lasso, a threshold): the producing
    filter and BatchNorm entry are removed with them, and the outputs do not change."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].bias.uniform_(0.5, 1.0)  # the producers' side stays non-zero
        model[3].weight[:, [2, 5]] = 0
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    record = thin(model, x)
    assert model[0].out_channels == 6 and model[1].num_features == 6
    assert model[3].in_channels == 6
    assert torch.allclose(model(x), before, atol=1e-6)
    assert record["layers"]["0"]["kept"]["out"] == [0, 1, 3, 4, 6, 7]


def test_a_layer_that_reads_nothing_does_not_empty_the_one_before():
    """Every input of ``b`` is zero (its bias is not): no channel of ``a`` is read, but a layer
    keeps at least one channel, so thinning leaves that group alone rather than failing."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 4, 1),
                                torch.nn.Conv2d(4, 2, 1))
    with torch.no_grad():
        model[1].weight.zero_()
    x = torch.randn(2, 3, 4, 4)
    before = model(x)
    thin(model, x)
    assert model[0].out_channels == 8 and torch.allclose(model(x), before)


def test_tied_weights_stay_tied():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 8)
            self.fc = torch.nn.Linear(8, 8)
            self.head = torch.nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, tokens):
            return self.head(torch.relu(self.fc(self.embed(tokens))))

    model = Tied()
    with torch.no_grad():
        model.fc.weight[:, 1] = 0  # column 1 of the embedding is read by nothing else
    thin(model, torch.zeros(2, 3, dtype=torch.long))
    assert model.head.weight is model.embed.weight and model.embed.weight.shape == (10, 8)


def test_a_parametrized_reader_still_reads_its_channels():
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, weight):
            return weight * 2

    class TwoReaders(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 4, 1)
            self.conv2 = torch.nn.Conv2d(4, 2, 1)
            self.conv3 = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            return self.conv2(h) + self.conv3(h)

    torch.manual_seed(0)
    model = TwoReaders()
    parametrize.register_parametrization(model.conv2, "weight", Double())
    with torch.no_grad():
        model.conv3.weight[:, 0] = 0  # conv2 still reads channel 0
    x = torch.randn(2, 3, 4, 4)
    before = model(x)
    thin(model, x)
    assert model.conv1.out_channels == 4 and torch.allclose(model(x), before)


def test_the_thinning_check_compares_without_tf32_and_restores_the_flags():
    # TF32 (on by default for cuDNN convolutions) moves a ResNet's output by ~1e-4, past the
    # check's tolerance: the comparison runs in full float32 and leaves the user's flags alone.
    from torchslim.pruning.thinning import _full_float32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.backends.cudnn.deterministic)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.deterministic = True
    try:
        with _full_float32():
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
            assert torch.backends.cudnn.deterministic  # the user's other settings stay
        assert torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 == before[1]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.backends.cudnn.deterministic = before[2]


class _TiedLM(nn.Module):
    """An embedding and an output layer sharing one weight."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.proj = nn.Linear(8, 8)
        self.out = nn.Linear(8, 10, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(torch.relu(self.proj(self.emb(x).mean(1))))


def test_thinning_refuses_to_untie_a_shared_weight():
    model, x = _TiedLM(), torch.randint(0, 10, (2, 5))
    with torch.no_grad():  # channels 0-3 of the embedding width pruned everywhere
        model.emb.weight[:, :4] = 0
        model.proj.weight[:, :4] = 0
    with pytest.raises(UserError, match="'emb.weight' and 'out.weight' are one tied tensor"):
        thin(model, x)
    assert model.out.weight is model.emb.weight and model.emb.weight.shape == (10, 8)
    masks = Masks(model)  # either name of the tied tensor finds it
    masks.set("out.weight", torch.ones(10, 8, dtype=torch.bool))
    assert masks.parameter("out.weight") is model.emb.weight


def test_a_module_registered_under_two_names_is_no_tie():
    model, x = create_model("demo_cnn").eval(), torch.randn(2, 1, 8, 8)
    model.head = model.classifier  # the same module twice, not two modules sharing a tensor
    FilterNormPruner(0.5).apply(build_graph(model, x), Masks(model))
    thin(model, x)
    assert model.head is model.classifier and model.classifier.in_features == 32
