"""DeepLabv3 with a dilated ResNet (Chen et al. 2017), the paper's Table 3 "DeepLabv3_ResNet101".

torchvision's DeepLabv3 (ASPP head with rates 12/24/36, output stride 8 by
dilating layer3 and layer4) plus its auxiliary FCN head on layer3, as
torchvision's ``deeplabv3_resnet101(aux_loss=True)`` builds it: 60.99 M
parameters, the paper's figure. ``forward`` returns the main logits only;
training adds the auxiliary loss through ``forward_with_aux`` (weight 0.5, as
torchvision's reference recipe). The encoder can start from a local
.safetensors file of torchvision ResNet weights (nothing is downloaded).

Note for tiled prediction: ASPP's image-pooling branch averages over the whole
tile, so predictions depend slightly on the tile (unlike FCN-ResNet).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LandformError, import_torchvision

torchvision = import_torchvision()  # a clear install hint where torchvision is missing
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402
from torchvision.models.segmentation.deeplabv3 import DeepLabHead  # noqa: E402
from torchvision.models.segmentation.fcn import FCNHead  # noqa: E402

from .common import SegmentationNet, adapted_first_conv, load_resnet_weights, norm_layer, stacked_only  # noqa: E402

BACKBONES = ("resnet50", "resnet101")


class DeepLabV3(SegmentationNet):
    def __init__(self, backbone: str, in_channels: int, num_classes: int, norm: str = "batch", encoder_weights=None,
                 aux: bool = True):
        super().__init__(in_channels, num_classes)
        if backbone not in BACKBONES:
            raise LandformError(f"DeepLabv3 supports backbones {', '.join(BACKBONES)}, not '{backbone}'.")
        net = getattr(torchvision.models, backbone)(weights=None, norm_layer=norm_layer(norm),
                                                    replace_stride_with_dilation=[False, True, True])
        if encoder_weights:
            load_resnet_weights(net, encoder_weights)
        net.conv1 = adapted_first_conv(net.conv1, in_channels, pretrained=bool(encoder_weights))
        layers = {"layer4": "out", "layer3": "aux"} if aux else {"layer4": "out"}
        self.backbone = IntermediateLayerGetter(net, return_layers=layers)
        self.classifier = DeepLabHead(2048, num_classes)
        self.aux_classifier = FCNHead(1024, num_classes) if aux else None

    def _run(self, x, with_aux: bool):
        self.check_input(x)
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = F.interpolate(self.classifier(feats["out"]), size=size, mode="bilinear", align_corners=False)
        if not with_aux or self.aux_classifier is None:
            return out
        aux = F.interpolate(self.aux_classifier(feats["aux"]), size=size, mode="bilinear", align_corners=False)
        return out, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, False)

    def forward_with_aux(self, x: torch.Tensor):
        return self._run(x, True)


def build_deeplabv3(backbone, in_channels, num_classes, multichannel, encoder_weights, norm="batch", aux=True):
    stacked_only(multichannel, "DeepLabv3")
    return DeepLabV3(backbone, in_channels, num_classes, norm, encoder_weights, bool(aux))
