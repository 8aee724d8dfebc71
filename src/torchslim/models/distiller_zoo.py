"""The CIFAR and MNIST models of Distiller's zoo, under Distiller's names and with its parameter
names, so Distiller's schedules (``module.layer1.0.conv1.weight``, ``module.fc.weight``, ...)
apply to them verbatim: ``resnet{20,32,44,56}_cifar`` (1x1-conv ``downsample`` shortcuts, ``fc``
head), ``preact_resnet{20,32,44,56}_cifar`` (pre-activation blocks, average-pool and zero-pad
shortcuts), ``plain20_cifar`` (no shortcuts), ``vgg16_cifar`` (VGG-16 without BatchNorm, one
512 -> 10 classifier), ``simplenet_mnist`` (two 5x5 convolutions, two linear layers) and
``simplenet_v2_mnist`` (one small linear layer). Same
architectures as Distiller's, written for torchslim.

Example::

    >>> import torch
    >>> from torchslim.models import create_model
    >>> model = create_model("resnet20_cifar")
    >>> [n for n, _ in model.named_parameters()][-4:]
    ['layer3.2.bn2.weight', 'layer3.2.bn2.bias', 'fc.weight', 'fc.bias']
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _init_resnet(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DistillerBasicBlock(nn.Module):
    """conv-bn-relu, conv-bn, plus the shortcut (a 1x1 conv + BN ``downsample`` where the shape
    changes), then relu."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu2(out + residual)


class ResNetCifarDistiller(nn.Module):
    """Distiller's ``ResNetCifar``: 3 stages of 16/32/64 channels, ``fc`` head."""

    def __init__(self, blocks: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(16, blocks[0], 1)
        self.layer2 = self._stage(32, blocks[1], 2)
        self.layer3 = self._stage(64, blocks[2], 2)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Linear(64, num_classes)
        _init_resnet(self)

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [DistillerBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [DistillerBasicBlock(planes, planes) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PreactBasicBlock(nn.Module):
    """Pre-activation block: bn-relu, conv, bn-relu, conv, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.pre_bn = nn.BatchNorm2d(inplanes)
        self.pre_relu = nn.ReLU()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.pre_relu(self.pre_bn(x))
        out = self.conv2(self.relu(self.bn(self.conv1(preact))))
        residual = self.downsample(preact) if self.downsample is not None else x
        return out + residual


class PreactResNetCifar(nn.Module):
    """Distiller's ``PreactResNetCifar`` with its default shortcut: 2x2 average pooling and
    channels zero-padded on both sides."""

    def __init__(self, blocks: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.layer1 = self._stage(16, blocks[0], 1)
        self.layer2 = self._stage(32, blocks[1], 2)
        self.layer3 = self._stage(64, blocks[2], 2)
        self.final_bn = nn.BatchNorm2d(64)
        self.final_relu = nn.ReLU()
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Linear(64, num_classes)
        _init_resnet(self)

    def _stage(self, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            pad = self.inplanes // 2
            downsample = nn.Sequential(nn.AvgPool2d(2),
                                       nn.ConstantPad3d((0, 0, 0, 0, pad, pad), 0.0))
        layers = [PreactBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [PreactBasicBlock(planes, planes) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.final_relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PlainBlock(DistillerBasicBlock):
    """Distiller's plain block: the basic block's two conv-bn-relu layers, no shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__(inplanes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class PlainCifar(nn.Module):
    """Distiller's ``plain20_cifar``: ResNet-20's layers without the shortcuts."""

    def __init__(self, blocks: tuple[int, int, int] = (3, 3, 3), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        stages, inplanes = [], 16
        for planes, count, stride in zip((16, 32, 64), blocks, (1, 2, 2), strict=True):
            layers = [PlainBlock(inplanes, planes, stride)]
            layers += [PlainBlock(planes, planes) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            inplanes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Linear(64, num_classes)
        _init_resnet(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGGCifar(nn.Module):
    """Distiller's ``vgg16_cifar``: VGG-16's convolutions (with biases, no BatchNorm) in
    ``features``, one ``classifier`` Linear(512, classes)."""

    def __init__(self, num_classes: int = 10, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for value in _VGG16:
            if value == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(in_channels, int(value), 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(value)))
            layers.append(nn.ReLU())
            in_channels = int(value)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _SimplenetConvs(nn.Module):
    """The convolutions both of Distiller's MNIST networks share: conv 5x5 (20), pool,
    conv 5x5 (50), pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, 1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool2(self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x))))))


class SimplenetMnist(_SimplenetConvs):
    """Distiller's ``simplenet_mnist`` (PyTorch's MNIST example network): the convolutions,
    then ``fc1`` (800 -> 500) and ``fc2`` (500 -> 10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4 * 4 * 50, 500)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu3(self.fc1(torch.flatten(self.features(x), 1))))


class SimplenetV2Mnist(_SimplenetConvs):
    """Distiller's ``simplenet_v2_mnist``: the convolutions, then average pooling and one
    ``fc`` (50 -> 10); 26 K parameters."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.avgpool = nn.AvgPool2d(4, stride=1)
        self.fc = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


DEPTHS = {20: (3, 3, 3), 32: (5, 5, 5), 44: (7, 7, 7), 56: (9, 9, 9)}
