"""Compressed storage: exact round trips, size in proportion to the non-zeros."""

from __future__ import annotations

import pytest
import torch

from torchslim.core.errors import UserError
from torchslim.core.storage import decode_tensor, encode_tensor
from torchslim.export import read_compressed, save_compressed
from torchslim.models import create_model, load_weights
from torchslim.pruning import LevelPruner, Masks


def _pruned_resnet(sparsity: float):
    torch.manual_seed(0)
    model = create_model("cifar_resnet20")
    LevelPruner({"*": sparsity}).prune(Masks(model))
    return model


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_round_trip_is_exact_and_file_shrinks_with_nonzeros(tmp_path, sparsity):
    model = _pruned_resnet(sparsity)
    dense, packed = tmp_path / "dense.pt", tmp_path / "packed.pt"
    torch.save(model.state_dict(), dense)
    save_compressed(model, packed, meta={"model": "cifar_resnet20"})
    state, meta = read_compressed(packed)
    assert meta == {"model": "cifar_resnet20"}
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor) and state[key].dtype == tensor.dtype
    ratio = packed.stat().st_size / dense.stat().st_size
    bound = {0.0: 1.05, 0.5: 0.75, 0.9: 0.2, 0.99: 0.1}[sparsity]
    assert ratio <= bound


def test_load_weights_reads_the_compressed_format(tmp_path):
    model = _pruned_resnet(0.8)
    path = tmp_path / "model.pt"
    save_compressed(model, path)
    fresh = load_weights(create_model("cifar_resnet20"), path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_small_integer_and_dense_tensors_are_stored_as_they_are():
    assert encode_tensor(torch.tensor(7))["encoding"] == "dense"
    assert encode_tensor(torch.zeros(10))["encoding"] == "dense"  # too small to bother
    full = torch.randn(32, 32)
    assert encode_tensor(full)["encoding"] == "dense"
    sparse = torch.zeros(3, 5, 7)
    sparse[1, 2, 3] = -2.5
    entry = encode_tensor(sparse)
    assert entry["encoding"] == "bitmask" and torch.equal(decode_tensor(entry), sparse)


def test_reading_another_file_is_a_user_error(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="not a torchslim compressed model"):
        read_compressed(path)
    with pytest.raises(UserError, match="not found"):
        read_compressed(tmp_path / "missing.pt")
