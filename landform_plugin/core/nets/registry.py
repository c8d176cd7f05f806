"""Architecture registry: one name -> (builder, output stride).

Helpers add architectures (unet, attention_unet, fcn8s, deeplabv3, ...) by
adding an ``Architecture`` entry to ``ARCHITECTURES``; everything else
(model files, tiled prediction, training) goes through ``build_model`` and
``output_stride`` only, so a new entry works everywhere at once.

A builder has the signature
``builder(backbone, in_channels, num_classes, multichannel, encoder_weights, **options) -> nn.Module``
and returns a module whose ``forward(x: N,C,H,W float) -> logits N,num_classes,H,W``
for any H, W (tiles are multiples of the output stride, but the decoder must
not depend on that).
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from ..errors import LandformError

MULTICHANNEL_MODES = ("stack", "per_factor")
NORMS = ("batch", "frozen_batch", "group")


@dataclass(frozen=True)
class Architecture:
    builder: Callable
    output_stride: int
    backbones: Tuple[str, ...] = ()
    description: str = ""
    # Options the builder accepts beyond the common ones, with their defaults
    # (stored in a model file's spec as "arch_options").
    default_options: Dict[str, object] = field(default_factory=dict)
    default_backbone: str = ""  # "": the first of ``backbones``


def _lazy_builder(module: str, name: str):
    """The builder ``name`` of ``module``, imported (with torch) only when a network is built."""

    def build(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(f".{module}", __package__), name)(*args, **kwargs)

    return build


def _entry(module: str, builder: str, stride: int, backbones, description: str, options=None, backbone: str = ""):
    return Architecture(_lazy_builder(module, builder), stride, tuple(backbones), description,
                        {"norm": "batch", **(options or {})}, backbone)


# The paper's FCN-ResNet and its Table 3 baselines (U-Net, Attention U-Net, FCN-8s, DeepLabv3).
ARCHITECTURES: Dict[str, Architecture] = {
    "fcn_resnet": _entry("fcn_resnet", "build_fcn_resnet", 32, ("resnet18", "resnet34", "resnet50", "resnet101", "resnet_tiny"),
                         "Yang et al. (2023) FCN-ResNet: ResNet encoder, layer2-4 into a light FCN-8s-style decoder",
                         {"decoder_channels": 256}, "resnet50"),
    "unet": _entry("unet", "build_unet", 16, ("none",),
                   "U-Net (Ronneberger et al. 2015), 64-1024 channels, trained from scratch"),
    "attention_unet": _entry("attention_unet", "build_attention_unet", 16, ("none",),
                             "Attention U-Net (Oktay et al. 2018): U-Net with attention gates on the skips"),
    "fcn8s": _entry("fcn8s", "build_fcn8s", 32, ("vgg16",),
                    "FCN-8s (Long et al. 2015) on a VGG16 encoder with 1x1 fc6/fc7"),
    "deeplabv3": _entry("deeplab", "build_deeplabv3", 8, ("resnet50", "resnet101"),
                        "DeepLabv3 (Chen et al. 2017), dilated ResNet, ASPP, auxiliary FCN head for training",
                        {"aux": True}, "resnet101"),
}


def get_architecture(architecture: str) -> Architecture:
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        raise LandformError(
            f"Unknown network architecture '{architecture}'; this plugin knows: {', '.join(sorted(ARCHITECTURES))}."
        ) from None


def output_stride(architecture: str) -> int:
    """Total downsampling of the encoder; tile offsets are kept multiples of it."""
    return get_architecture(architecture).output_stride


def resolve_options(architecture: str, options: Optional[dict] = None) -> dict:
    """The architecture's default options updated with ``options`` (unknown keys refused)."""
    arch = get_architecture(architecture)
    merged = dict(arch.default_options)
    for key, value in (options or {}).items():
        if key not in arch.default_options:
            raise LandformError(f"Architecture '{architecture}' has no option '{key}'.")
        merged[key] = value
    return merged


def build_model(
    architecture: str,
    backbone: str,
    in_channels: int,
    num_classes: int = 5,
    multichannel: str = "stack",
    encoder_weights: Optional[str] = None,
    **options,
):
    """Build an untrained (or encoder-initialised) network.

    ``multichannel``: "stack" = all input channels into one encoder;
    "per_factor" = one encoder per input channel, features concatenated per
    stage, one decoder (the paper's multichannel variant).
    ``encoder_weights``: optional path to a local ``.safetensors`` file with
    torchvision ResNet weights (nothing is downloaded).
    """
    arch = get_architecture(architecture)
    if arch.backbones and backbone not in arch.backbones:
        raise LandformError(
            f"Architecture '{architecture}' supports backbones {', '.join(arch.backbones)}, not '{backbone}'."
        )
    if multichannel not in MULTICHANNEL_MODES:
        raise LandformError(f"multichannel must be one of {MULTICHANNEL_MODES}, not '{multichannel}'.")
    if int(in_channels) < 1:
        raise LandformError("A network needs at least one input channel.")
    opts = resolve_options(architecture, options)
    return arch.builder(backbone, int(in_channels), int(num_classes), multichannel, encoder_weights, **opts)


def count_parameters(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# Named presets: the paper's Table 3 models plus light backbones for CPU users, in the
# order the Processing algorithm lists them (its choices are indices: append only).
PRESETS: Dict[str, Tuple[str, Optional[str]]] = {
    "fcn_resnet50": ("fcn_resnet", "resnet50"),
    "fcn_resnet101": ("fcn_resnet", "resnet101"),
    "deeplabv3_resnet101": ("deeplabv3", "resnet101"),
    "unet": ("unet", None),
    "attention_unet": ("attention_unet", None),
    "fcn8s": ("fcn8s", None),
    "fcn_resnet34": ("fcn_resnet", "resnet34"),
    "fcn_resnet18": ("fcn_resnet", "resnet18"),
    "deeplabv3_resnet50": ("deeplabv3", "resnet50"),
}
PRESET_LABELS = {
    "fcn_resnet50": "FCN-ResNet50 (paper's model)",
    "fcn_resnet101": "FCN-ResNet101",
    "deeplabv3_resnet101": "DeepLabv3-ResNet101",
    "unet": "U-Net",
    "attention_unet": "Attention U-Net",
    "fcn8s": "FCN-8s (VGG16)",
    "fcn_resnet34": "FCN-ResNet34 (light, for CPUs)",
    "fcn_resnet18": "FCN-ResNet18 (lightest, for CPUs)",
    "deeplabv3_resnet50": "DeepLabv3-ResNet50",
}


def default_backbone(architecture: str) -> str:
    a = get_architecture(architecture)
    return a.default_backbone or (a.backbones[0] if a.backbones else "none")


def resolve_architecture(architecture: str, backbone: Optional[str]) -> Tuple[str, str]:
    """(registry name, backbone) for a registry name or a preset; ``backbone`` None: the default."""
    arch = architecture
    if architecture in PRESETS:
        arch, preset_backbone = PRESETS[architecture]
        if backbone is None:
            backbone = preset_backbone
    return arch, backbone if backbone is not None else default_backbone(arch)
