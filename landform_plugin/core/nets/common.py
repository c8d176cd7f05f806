"""Parts every architecture shares: normalisation layers, the input check, the first
convolution adapted to any number of input channels, local encoder weights, padding to
the output stride, and the refusals of options an architecture does not offer.

``SegmentationNet`` is the base class (as segmentation_models.pytorch's
SegmentationModel): it holds ``in_channels`` / ``num_classes`` and checks the
input's shape before ``forward`` runs, with a clear error.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LandformError
from .registry import NORMS


def _group_norm(num_channels: int) -> nn.GroupNorm:
    groups = 32
    while num_channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, num_channels)


def norm_layer(norm: str):
    """The normalisation layer class (or factory) named by ``norm``."""
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "frozen_batch":
        from .resnet import FrozenBatchNorm2d

        return FrozenBatchNorm2d
    if norm == "group":
        return _group_norm
    raise LandformError(f"Unknown normalisation '{norm}'; choose one of {', '.join(NORMS)}.")


def one_channel_norm(norm: str) -> nn.Module:
    """A normalisation of a single channel (GroupNorm needs one group there)."""
    return nn.GroupNorm(1, 1) if norm == "group" else norm_layer(norm)(1)


class SegmentationNet(nn.Module):
    """Base class: ``forward`` refuses input of the wrong shape before the network sees it."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise LandformError(f"The network expects input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}.")


def adapted_first_conv(old: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """``old`` (a 7x7 stride-2 stem) for ``in_channels`` channels. Pretrained RGB filters
    become their mean over RGB, repeated and rescaled so the activation scale matches
    (the usual timm/smp adaptation); otherwise freshly initialised."""
    conv = nn.Conv2d(in_channels, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    if pretrained:
        with torch.no_grad():
            conv.weight.copy_(adapted_weight(old.weight, in_channels))
    return conv


def adapted_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB filter weights (out, 3, k, k) for ``in_channels`` input channels."""
    return weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) * (3.0 / in_channels)


def check_weights_file(path: str) -> None:
    if not str(path).lower().endswith(".safetensors") or not os.path.isfile(path):
        raise LandformError(f"Encoder weights must be an existing .safetensors file: '{path}'.")


def load_resnet_weights(net: nn.Module, path: str) -> None:
    """Initialise from a local torchvision ResNet state_dict in .safetensors (never a pickle)."""
    check_weights_file(path)
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(path).items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise LandformError(
            f"'{path}' does not hold weights for this ResNet (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )


def pad_to_multiple(x: torch.Tensor, m: int):
    """Pad the bottom and right edges to a multiple of ``m`` (reflect where it can); returns (x, (h, w))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def stacked_only(multichannel: str, name: str) -> None:
    """Refuse 'per_factor' for architectures with one encoder."""
    if multichannel == "per_factor":
        raise LandformError(
            f"{name} takes several factors as stacked channels only; 'per_factor' (one encoder per factor) "
            "is available for fcn_resnet."
        )


def no_encoder_weights(encoder_weights, name: str) -> None:
    """Refuse encoder weights for architectures trained from scratch."""
    if encoder_weights:
        raise LandformError(f"{name} has no pretrained encoder; it is trained from scratch (leave encoder weights empty).")


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d into that convolution (in place).

    For inference only: the same function (to float rounding), one memory pass less per
    layer, and no second full-size tensor at the stem (FCN-ResNet18 on a 2304^2 tile: the
    stem's BatchNorm output alone is 340 MB). Pairs are taken where the order is known:
    consecutive children of an ``nn.Sequential``, and ``convN``/``bnN`` of ResNet blocks (ours and
    torchvision's, which DeepLabv3 uses) and of encoders built like them (``conv1``/``bn1`` then ReLU).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fuse_batchnorm is for a model in eval mode")

    def fusable(conv, bn) -> bool:
        return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                and bn.running_mean is not None and conv.out_channels == bn.num_features)

    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names[:-1], names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if fusable(conv, bn):
                    module._modules[a], module._modules[b] = fuse_conv_bn_eval(conv, bn), nn.Identity()
        elif type(module).__name__ in ("BasicBlock", "Bottleneck", "ResNetEncoder"):
            for k in ("1", "2", "3"):
                conv, bn = getattr(module, "conv" + k, None), getattr(module, "bn" + k, None)
                if conv is not None and bn is not None and fusable(conv, bn):
                    setattr(module, "conv" + k, fuse_conv_bn_eval(conv, bn))
                    setattr(module, "bn" + k, nn.Identity())
    return model
