"""U-Net (Ronneberger et al. 2015), the paper's Table 3 "U_Net" baseline.

Layout as in the widely used PyTorch implementation the paper's naming
("U_Net", "U_Net-attention") points to (LeeJunHyun/Image_Segmentation):
five double-convolution stages of 64-1024 channels (3x3 conv with bias, norm,
ReLU, twice), 2x2 max pooling, decoder steps of nearest-neighbour upsampling
+ 3x3 conv, concatenation with the skip, double convolution, and a final 1x1
convolution. For 3 input channels this has 34.53 M parameters, the paper's
figure. No pretrained encoder (the paper trained it from scratch).

Inputs whose sides are not multiples of 16 are padded (reflect) and the
output cropped back, so any tile size works.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LandformError
from .fcn_resnet import norm_layer

WIDTHS = (64, 128, 256, 512, 1024)
STRIDE = 16


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        make = norm_layer(norm)
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=True), make(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=True), make(cout), nn.ReLU(inplace=True),
        )


class UpConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(cin, cout, 3, padding=1, bias=True), norm_layer(norm)(cout), nn.ReLU(inplace=True),
        )


def pad_to_multiple(x: torch.Tensor, m: int):
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, norm: str = "batch", attention: bool = False):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        w = WIDTHS
        self.enc = nn.ModuleList([ConvBlock(in_channels, w[0], norm)] + [ConvBlock(w[i - 1], w[i], norm) for i in range(1, 5)])
        self.pool = nn.MaxPool2d(2, 2)
        self.up = nn.ModuleList(UpConv(w[i], w[i - 1], norm) for i in range(4, 0, -1))
        self.dec = nn.ModuleList(ConvBlock(w[i], w[i - 1], norm) for i in range(4, 0, -1))
        if attention:
            from .attention_unet import AttentionGate

            self.gates = nn.ModuleList(AttentionGate(w[i - 1], w[i - 1], w[i - 1] // 2, norm) for i in range(4, 0, -1))
        else:
            self.gates = None
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise LandformError(f"The network expects input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}.")
        x, (h, w) = pad_to_multiple(x, STRIDE)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        d = skips[-1]
        for k in range(4):
            skip = skips[3 - k]
            d = self.up[k](d)
            if self.gates is not None:
                skip = self.gates[k](d, skip)
            d = self.dec[k](torch.cat([skip, d], dim=1))
        return self.head(d)[..., :h, :w]


def _check(multichannel: str, encoder_weights, name: str):
    if multichannel == "per_factor":
        raise LandformError(
            f"{name} takes several factors as stacked channels only; 'per_factor' (one encoder per factor) "
            "is available for fcn_resnet."
        )
    if encoder_weights:
        raise LandformError(f"{name} has no pretrained encoder; it is trained from scratch (leave encoder weights empty).")


def build_unet(backbone, in_channels, num_classes, multichannel, encoder_weights, norm="batch"):
    _check(multichannel, encoder_weights, "U-Net")
    return UNet(in_channels, num_classes, norm, attention=False)
