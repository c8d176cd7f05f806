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

from .common import SegmentationNet, no_encoder_weights, norm_layer, pad_to_multiple, stacked_only

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


class UNet(SegmentationNet):
    """``gate``: None, or a factory ``gate(f_g, f_l, f_int, norm)`` of a module that
    weighs each skip by the decoder features (the Attention U-Net's gates)."""

    def __init__(self, in_channels: int, num_classes: int, norm: str = "batch", gate=None):
        super().__init__(in_channels, num_classes)
        w = WIDTHS
        self.enc = nn.ModuleList([ConvBlock(in_channels, w[0], norm)] + [ConvBlock(w[i - 1], w[i], norm) for i in range(1, 5)])
        self.pool = nn.MaxPool2d(2, 2)
        self.up = nn.ModuleList(UpConv(w[i], w[i - 1], norm) for i in range(4, 0, -1))
        self.dec = nn.ModuleList(ConvBlock(w[i], w[i - 1], norm) for i in range(4, 0, -1))
        self.gates = None if gate is None else nn.ModuleList(gate(w[i - 1], w[i - 1], w[i - 1] // 2, norm) for i in range(4, 0, -1))
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
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


def build_unet(backbone, in_channels, num_classes, multichannel, encoder_weights, norm="batch"):
    stacked_only(multichannel, "U-Net")
    no_encoder_weights(encoder_weights, "U-Net")
    return UNet(in_channels, num_classes, norm)
