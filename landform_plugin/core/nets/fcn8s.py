"""FCN-8s (Long et al. 2015), the paper's Table 3 "FCN-8s" baseline (trained from scratch).

Encoder: the 13 convolutions of VGG16 (3x3, with norm after each: trained
from scratch, as in the paper, plain VGG does not train well at small batch)
and its five max-pools (stride 32). Head: "fc6"/"fc7" as 1x1 convolutions of
512 channels (the original 7x7x4096 fully connected layers would add 117 M
parameters), class scores from pool3, pool4 and fc7 fused coarse-to-fine
(upsample x2, add, upsample x2, add) and bilinear upsampling x8 to the input
size. About 15.2 M parameters, near the paper's 15.12 M; the paper does not
describe its head, so the match is approximate, not by construction.
An optional local .safetensors file of torchvision VGG16 weights
(``features.N.weight``) initialises the encoder (nothing is downloaded).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LandformError
from .common import SegmentationNet, adapted_weight, check_weights_file, norm_layer, pad_to_multiple, stacked_only

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class FCN8s(SegmentationNet):
    def __init__(self, in_channels: int, num_classes: int, norm: str = "batch", encoder_weights=None):
        super().__init__(in_channels, num_classes)
        make = norm_layer(norm)
        stages, layers, cin = [], [], in_channels
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                stages.append(nn.Sequential(*layers))
                layers = []
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), make(v), nn.ReLU(inplace=True)]
                cin = v
        self.stages = nn.ModuleList(stages)  # strides 2, 4, 8, 16, 32
        self.fc = nn.Sequential(
            nn.Conv2d(512, 512, 1), make(512), nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, 1), make(512), nn.ReLU(inplace=True),
        )
        self.score_fr = nn.Conv2d(512, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        if encoder_weights:
            self._load_vgg(encoder_weights)

    def _load_vgg(self, path: str):
        check_weights_file(path)
        from safetensors.torch import load_file

        src = [v for k, v in sorted(load_file(path).items(), key=lambda kv: _feature_order(kv[0])) if k.startswith("features.")]
        convs = [m for s in self.stages for m in s if isinstance(m, nn.Conv2d)]
        weights = [t for t in src if t.ndim == 4]
        biases = [t for t in src if t.ndim == 1]
        if len(weights) != 13 or len(biases) != 13:
            raise LandformError(f"'{path}' does not hold torchvision VGG16 'features' weights.")
        with torch.no_grad():
            for conv, w, b in zip(convs, weights, biases):
                if conv is convs[0] and w.shape[1] != conv.in_channels:
                    w = adapted_weight(w, conv.in_channels)
                if tuple(w.shape) != tuple(conv.weight.shape):
                    raise LandformError(f"'{path}': VGG16 weight of shape {tuple(w.shape)} does not fit {tuple(conv.weight.shape)}.")
                conv.weight.copy_(w)
                conv.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x, (h, w) = pad_to_multiple(x, 32)
        padded = x.shape[-2:]
        feats = []
        for s in self.stages:
            x = s(x)
            feats.append(x)
        p3, p4, p5 = feats[2], feats[3], feats[4]
        s = self.score_fr(self.fc(p5))
        s = F.interpolate(s, size=p4.shape[-2:], mode="bilinear", align_corners=False) + self.score_pool4(p4)
        s = F.interpolate(s, size=p3.shape[-2:], mode="bilinear", align_corners=False) + self.score_pool3(p3)
        s = F.interpolate(s, size=padded, mode="bilinear", align_corners=False)
        return s[..., :h, :w]


def _feature_order(key: str):
    parts = key.split(".")
    try:
        return (int(parts[1]), parts[2])
    except (IndexError, ValueError):
        return (10**6, key)


def build_fcn8s(backbone, in_channels, num_classes, multichannel, encoder_weights, norm="batch"):
    stacked_only(multichannel, "FCN-8s")
    return FCN8s(in_channels, num_classes, norm, encoder_weights)
