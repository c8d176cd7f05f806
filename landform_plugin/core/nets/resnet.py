"""The ResNet trunk (He et al. 2016), laid out exactly as torchvision's, without importing torchvision.

Why not ``torchvision.models.resnet18``: importing torchvision 0.29 imports torch._dynamo,
sympy, triton and torch.distributed with it (about 1,000 modules), which costs 0.17 GB of
resident memory in every process that classifies, a tenth of the whole run's peak at
8192^2 (measured on Debian 12, torch 2.14.1). The network itself needs none of that.

Same module names, shapes, forward and random initialisation as torchvision's ``ResNet``
(V1.5: the stride of a Bottleneck on its 3x3 convolution), minus the ImageNet head
(``avgpool``, ``fc``): torchvision's ResNet state_dicts (ImageNet weights saved as
.safetensors) load unchanged, and for the same ``torch.manual_seed`` the weights are the
same as torchvision's (tested), so models trained before keep their meaning.
"""
from typing import Callable, List, Optional

import torch
import torch.nn as nn

LAYERS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3))}


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and the identity (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 down, 3x3 (with the stride), 1x1 up by four, and the identity (ResNet-50/101)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def stage(block, cin: int, planes: int, blocks: int, stride: int, norm_layer) -> nn.Sequential:
    """``blocks`` residual blocks; the first changes stride and width (with a projected identity)."""
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(conv1x1(cin, planes * block.expansion, stride), norm_layer(planes * block.expansion))
    layers: List[nn.Module] = [block(cin, planes, stride, downsample, norm_layer)]
    layers += [block(planes * block.expansion, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNetTrunk(nn.Module):
    """conv1, bn1, relu, maxpool and layer1-4 of a ResNet; ``forward`` is the caller's (see ResNetEncoder)."""

    def __init__(self, name: str, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        kind, depths = LAYERS[name]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths, cin = (64, 128, 256, 512), 64
        for i, (planes, n) in enumerate(zip(widths, depths)):
            setattr(self, f"layer{i + 1}", stage(block, cin, planes, n, 1 if i == 0 else 2, norm_layer))
            cin = planes * block.expansion
        # torchvision builds its ImageNet classifier here; building (and dropping) one keeps the random
        # number stream, and so a seeded initialisation, the same as torchvision's.
        nn.Linear(cin, 1000)
        init_like_torchvision(self)


def init_like_torchvision(net: nn.Module) -> None:
    """He (fan-out) initialisation of every convolution; norms start as the identity."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d whose statistics and affine parameters never change (fine-tuning at small batch).

    The same buffers, state_dict and arithmetic as torchvision.ops.misc.FrozenBatchNorm2d
    (``num_batches_tracked`` of a BatchNorm2d state_dict is dropped on load).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def forward(self, x):
        w, b = self.weight.reshape(1, -1, 1, 1), self.bias.reshape(1, -1, 1, 1)
        rv, rm = self.running_var.reshape(1, -1, 1, 1), self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + self.eps).rsqrt()
        return x * scale + (b - rm * scale)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
