"""The paper's FCN-ResNet (Yang et al. 2023, section 2.2, Fig. 3).

Encoder: a ResNet (18/34/50/101) laid out as torchvision's (``resnet.py``:
the same state_dict, without importing torchvision); nothing is downloaded, an
optional local ``.safetensors`` file of torchvision ResNet weights can
initialise it. Its first convolution takes ``in_channels``.

``resnet_tiny`` is not in the paper: a ResNet-10 layout (one BasicBlock per
stage) with widths 16/32/64/128 (~0.5 M parameters), for tests, fixtures and
quick CPU experiments.

Decoder: "a relatively lightweight classifier that contained three 3x3
convolution layers and one 1x1 convolution layer" fed by "the features
extracted from the last three Layers" (layer2, layer3, layer4; strides 8, 16,
32). Here each stage gets one 3x3 convolution (+norm, ReLU) to
``decoder_channels``; coarse-to-fine fusion as in FCN-8s (upsample the deeper
map to the next stage's size and add), then the 1x1 convolution to
``num_classes`` and a bilinear upsampling to the input size. Sizes are taken
from the feature maps, so any input size works (tiles are multiples of 32).

Multichannel (``multichannel="per_factor"``): one ResNet per input channel,
their stage features concatenated, one decoder (the paper's multichannel
variant; parameters grow with the number of factors as in the paper).

Normalisation (``norm``):
- ``"batch"`` (default): BatchNorm2d. In eval mode it is a fixed per-channel
  affine map, so the network is translation-equivariant and a pixel's
  prediction does not depend on which tile it was cut into: what seamless
  tiled inference needs. Its weakness (measured: trained from scratch at
  batch 8 it collapsed in eval mode) is a training matter:
  train with larger batches, re-estimate the running statistics at the end
  of training, or fine-tune with ``"frozen_batch"``; always validate in eval mode.
- ``"frozen_batch"``: FrozenBatchNorm2d, as torchvision's (statistics never
  updated; same state_dict layout minus ``num_batches_tracked``) for
  fine-tuning at small batch.
- ``"group"``: GroupNorm. Train/eval identical, but it normalises over each
  tile's spatial extent, so predictions depend on the tile: seams and
  tile-size dependence return. Offered for experiments only.
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LandformError
from .common import NORMS, SegmentationNet, adapted_first_conv, load_resnet_weights, norm_layer
from .resnet import BasicBlock, ResNetTrunk, init_like_torchvision, stage

STAGE_CHANNELS = {
    "resnet_tiny": (32, 64, 128),
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "resnet101": (512, 1024, 2048),
}

STEM_STRIP_ROWS = 32  # pooled rows per strip of ResNetEncoder.stem_in_strips (inference on large tiles)


class ResNetEncoder(nn.Module):
    """ResNet trunk returning the layer2, layer3, layer4 features."""

    def __init__(self, backbone: str, in_channels: int, norm: str = "batch", weights_path: Optional[str] = None):
        super().__init__()
        if backbone not in STAGE_CHANNELS:
            raise LandformError(f"Unknown backbone '{backbone}'; choose one of {', '.join(STAGE_CHANNELS)}.")
        if backbone == "resnet_tiny":
            net = _tiny_resnet(norm_layer(norm))
            if weights_path:
                raise LandformError("resnet_tiny has no pretrained encoder weights.")
        else:
            net = ResNetTrunk(backbone, norm_layer(norm))
        if weights_path:
            load_resnet_weights(net, weights_path)
        conv1 = adapted_first_conv(net.conv1, in_channels, pretrained=bool(weights_path))
        self.conv1, self.bn1, self.relu, self.maxpool = conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = STAGE_CHANNELS[backbone]

    def forward(self, x):
        if not self.training and x.shape[-2] > 2 * STEM_STRIP_ROWS:
            x = self.stem_in_strips(x)
        else:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c2, c3, c4]

    def stem_in_strips(self, x: torch.Tensor, rows: int = STEM_STRIP_ROWS) -> torch.Tensor:
        """The stem (7x7 stride-2 convolution, norm, ReLU, 3x3 stride-2 max-pool) computed in strips
        of ``rows`` output rows: the same values (to float rounding) as in one go, for a fraction
        of its memory. On the CPU the stem is the forward pass's memory peak: a 2304^2 tile needs
        0.34 GB for the convolution's output and as much again of workspace, against 0.38 GB for
        everything after it together (measured for the bundled FCN-ResNet18)."""
        conv, pool = self.conv1, self.maxpool
        k, st, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        if (conv.kernel_size, conv.stride, conv.padding) != ((7, 7), (2, 2), (3, 3)) or \
                (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) not in ((3, 2, 1, False),
                                                                      ((3, 3), (2, 2), (1, 1), False)):
            return self.maxpool(self.relu(self.bn1(self.conv1(x))))
        h, w = x.shape[-2:]
        conv_h, conv_w = (h + 2 * pad - k) // st + 1, (w + 2 * pad - k) // st + 1
        pool_h, pool_w = (conv_h - 1) // 2 + 1, (conv_w - 1) // 2 + 1
        out = None
        for p0 in range(0, pool_h, rows):
            p1 = min(pool_h, p0 + rows)
            # pooled rows [p0, p1) read convolution rows 2 p0 - 1 .. 2 p1 - 1; those outside the map are the
            # pool's padding (-inf in torch; after the ReLU every value is >= 0, so zeros give the same maxima)
            c0, c1 = max(0, 2 * p0 - 1), min(conv_h, 2 * p1)
            r0, r1 = st * c0 - pad, st * (c1 - 1) + k - pad  # input rows they read (the convolution pads with zeros)
            strip = F.pad(x[..., max(r0, 0) : min(r1, h), :], (pad, pad, max(0, -r0), max(0, r1 - h)))
            c = F.conv2d(strip, conv.weight, conv.bias, stride=st)
            c = F.pad(self.relu(self.bn1(c)), (1, 1, c0 - (2 * p0 - 1), 2 * p1 - c1))
            pooled = max_pool_3x3_stride_2(c)
            if out is None:
                out = pooled.new_empty(pooled.shape[:-2] + (pool_h, pool_w))
            out[..., p0:p1, :] = pooled
        return out


def max_pool_3x3_stride_2(c: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(c, 3, 2)`` (no padding) as a maximum over rows, then over columns: the same
    values (a maximum is exact), 2-3.5x faster on the CPU than torch's kernel on the stem's
    64-channel strips (36 strips of a 2304^2 tile: 1.46 s -> 0.41-0.80 s with the machine busy)."""
    oh, ow = (c.shape[-2] - 3) // 2 + 1, (c.shape[-1] - 3) // 2 + 1
    rows = torch.maximum(torch.maximum(c[..., 0 : 2 * oh - 1 : 2, :], c[..., 1 : 2 * oh : 2, :]), c[..., 2 : 2 * oh + 1 : 2, :])
    return torch.maximum(torch.maximum(rows[..., 0 : 2 * ow - 1 : 2], rows[..., 1 : 2 * ow : 2]), rows[..., 2 : 2 * ow + 1 : 2])


def _tiny_resnet(make_norm, width: int = 16) -> nn.Module:
    """ResNet-10 layout (one BasicBlock per stage) at a quarter of ResNet-18's width."""
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    net.bn1 = make_norm(width)
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(3, 2, 1)
    net.layer1 = stage(BasicBlock, width, width, 1, 1, make_norm)
    net.layer2 = stage(BasicBlock, width, 2 * width, 1, 2, make_norm)
    net.layer3 = stage(BasicBlock, 2 * width, 4 * width, 1, 2, make_norm)
    net.layer4 = stage(BasicBlock, 4 * width, 8 * width, 1, 2, make_norm)
    init_like_torchvision(net)
    return net


class FCNDecoder(nn.Module):
    """Three 3x3 convolutions (one per stage) with FCN-8s skip fusion, then a 1x1 classifier."""

    def __init__(self, stage_channels, num_classes: int, channels: int = 256, norm: str = "batch"):
        super().__init__()
        make_norm = norm_layer(norm)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, channels, kernel_size=3, padding=1, bias=False),
                make_norm(channels),
                nn.ReLU(inplace=True),
            )
            for c in stage_channels
        )
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, feats: List[torch.Tensor], size) -> torch.Tensor:
        x = self.stages[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            skip = self.stages[i](feats[i])
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip
        x = self.classifier(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FCNResNet(SegmentationNet):
    def __init__(
        self,
        backbone: str = "resnet50",
        in_channels: int = 1,
        num_classes: int = 5,
        multichannel: str = "stack",
        encoder_weights: Optional[str] = None,
        norm: str = "batch",
        decoder_channels: int = 256,
    ):
        super().__init__(in_channels, num_classes)
        if norm not in NORMS:
            raise LandformError(f"Unknown normalisation '{norm}'; choose one of {', '.join(NORMS)}.")
        self.multichannel = multichannel
        n_enc = in_channels if multichannel == "per_factor" else 1
        enc_in = 1 if multichannel == "per_factor" else in_channels
        self.encoders = nn.ModuleList(ResNetEncoder(backbone, enc_in, norm, encoder_weights) for _ in range(n_enc))
        widths = tuple(c * n_enc for c in STAGE_CHANNELS[backbone])
        self.decoder = FCNDecoder(widths, num_classes, int(decoder_channels), norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        size = x.shape[-2:]
        if self.multichannel == "per_factor":
            per = [enc(x[:, i : i + 1]) for i, enc in enumerate(self.encoders)]
            feats = [torch.cat([p[s] for p in per], dim=1) for s in range(3)]
        else:
            feats = self.encoders[0](x)
        return self.decoder(feats, size)


def build_fcn_resnet(backbone, in_channels, num_classes, multichannel, encoder_weights, norm="batch", decoder_channels=256):
    return FCNResNet(backbone, in_channels, num_classes, multichannel, encoder_weights, norm, decoder_channels)
