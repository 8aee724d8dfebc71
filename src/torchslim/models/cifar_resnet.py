"""ResNets for CIFAR-10 (He et al. 2015, section 4.2) with parameter-free "option A" shortcuts.

Parameter names and shapes match the widely used pretrained checkpoints (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.conv1/bn1/conv2/bn2``, ``linear``), so they load with
:func:`torchslim.models.load_weights`.

Example::

    >>> import torch
    >>> from torchslim.models.cifar_resnet import cifar_resnet20
    >>> cifar_resnet20()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelPadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels, half before, half after.

    It has no parameters, which is what breaks channel-pruning tools that only follow
    parameterised layers; torchslim's channel graph recognises its traced ``F.pad`` like any
    other (a user's ``LambdaLayer`` around ``F.pad`` is handled the same way):

    >>> shortcut = ChannelPadShortcut(2, 4, 1)
    >>> shortcut(torch.ones(1, 2, 1, 1)).flatten().tolist(), shortcut.state_dict()
    ([0.0, 1.0, 1.0, 0.0], OrderedDict())
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        extra = out_channels - in_channels
        self.stride = stride
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride != 1 or in_channels != channels:
            self.shortcut: nn.Module = ChannelPadShortcut(in_channels, channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet: three stages (16/32/64 wide) of ``blocks_per_stage`` basic blocks."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths, current = (16, 32, 64), 16
        stages = []
        for index, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(current, width, stride))
                current = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for 32x32 inputs: 269,722 parameters, 40.55 M MACs."""
    return CifarResNet(3, num_classes)


def cifar_resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 for 32x32 inputs."""
    return CifarResNet(5, num_classes)


def cifar_resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 for 32x32 inputs."""
    return CifarResNet(7, num_classes)


def cifar_resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 for 32x32 inputs: 853,018 parameters, 125.49 M MACs."""
    return CifarResNet(9, num_classes)
