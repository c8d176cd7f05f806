"""Attention U-Net (Oktay et al. 2018), the paper's Table 3 "U_Net-attention".

The U-Net of ``unet.py`` with an additive attention gate on each skip
connection (as in LeeJunHyun/Image_Segmentation's AttU_Net): the gating signal
g (upsampled decoder features) and the skip x are projected by 1x1
convolutions (+norm) to F_int channels, summed, ReLU, 1x1 convolution to one
channel (+norm), sigmoid; the skip is multiplied by that map. 34.88 M
parameters for 3 input channels, the paper's figure.
"""
import torch.nn as nn

from .common import no_encoder_weights, norm_layer, one_channel_norm, stacked_only
from .unet import UNet


class AttentionGate(nn.Module):
    def __init__(self, f_g: int, f_l: int, f_int: int, norm: str = "batch"):
        super().__init__()
        make = norm_layer(norm)
        self.w_g = nn.Sequential(nn.Conv2d(f_g, f_int, 1, bias=True), make(f_int))
        self.w_x = nn.Sequential(nn.Conv2d(f_l, f_int, 1, bias=True), make(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, 1, bias=True), one_channel_norm(norm), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g, x):
        return x * self.psi(self.relu(self.w_g(g) + self.w_x(x)))


def build_attention_unet(backbone, in_channels, num_classes, multichannel, encoder_weights, norm="batch"):
    stacked_only(multichannel, "Attention U-Net")
    no_encoder_weights(encoder_weights, "Attention U-Net")
    return UNet(in_channels, num_classes, norm, gate=AttentionGate)
