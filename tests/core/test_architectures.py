"""Every architecture builds for 1 and 3 input channels and trains one step on a small input;
parameter counts are printed next to the paper's Table 3 (run with -s to see them)."""
import pytest
import torch

from landform_plugin.core.errors import LandformError
from landform_plugin.core.nets.registry import ARCHITECTURES, build_model, count_parameters
from landform_plugin.core.train import PRESETS, resolve_architecture

# Paper Table 3 (single channel = DEM only), millions of parameters
PAPER_M = {
    "unet": 34.53,
    "attention_unet": 34.88,
    "fcn8s": 15.12,
    "fcn_resnet50": 54.18,
    "deeplabv3_resnet101": 60.99,
    "fcn_resnet101": 73.18,
}
_SLOW = pytest.mark.slow  # 60-70 M parameter networks: ~10-40 s each on 2 busy cores
CASES = ["unet", "attention_unet", "fcn8s", "fcn_resnet18", pytest.param("fcn_resnet50", marks=_SLOW),
         pytest.param("deeplabv3_resnet101", marks=_SLOW), pytest.param("fcn_resnet101", marks=_SLOW)]


@pytest.mark.parametrize("preset", CASES)
def test_builds_and_trains_one_step(preset):
    arch, backbone = resolve_architecture(preset, None)
    torch.manual_seed(0)
    counts = {}
    for ch in (1, 3):
        model = build_model(arch, backbone, ch, 5)
        counts[ch] = count_parameters(model)
        x = torch.randn(2, ch, 32, 32)
        y = torch.randint(0, 5, (2, 32, 32))
        model.train()
        if hasattr(model, "forward_with_aux"):  # DeepLabv3 trains its auxiliary head too
            out, aux = model.forward_with_aux(x)
            loss = torch.nn.functional.cross_entropy(out, y) + 0.5 * torch.nn.functional.cross_entropy(aux, y)
        else:
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
        assert out.shape == (2, 5, 32, 32)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, ch, 40, 72)).shape == (1, 5, 40, 72)  # not square, not a multiple of 32
    paper = PAPER_M.get(preset)
    print(f"\n{preset:22s} 1 channel {counts[1] / 1e6:7.2f} M, 3 channels {counts[3] / 1e6:7.2f} M"
          + (f"   paper Table 3: {paper:.2f} M" if paper else ""))
    assert counts[3] > counts[1]


def test_counts_that_match_the_paper_by_construction():
    # U-Net / Attention U-Net as in LeeJunHyun/Image_Segmentation (3 channels in, 1 out) and
    # torchvision's DeepLabv3-ResNet101 with its auxiliary head (21 classes): the paper's figures.
    assert count_parameters(build_model("unet", "none", 3, 1)) / 1e6 == pytest.approx(34.53, abs=0.005)
    assert count_parameters(build_model("attention_unet", "none", 3, 1)) / 1e6 == pytest.approx(34.88, abs=0.005)
    assert count_parameters(build_model("deeplabv3", "resnet101", 3, 21)) / 1e6 == pytest.approx(60.99, abs=0.01)


def test_all_registered_and_clear_errors():
    assert {"fcn_resnet", "unet", "attention_unet", "fcn8s", "deeplabv3"} <= set(ARCHITECTURES)
    assert all(resolve_architecture(p, None)[0] in ARCHITECTURES for p in PRESETS)
    with pytest.raises(LandformError, match="stacked channels only"):
        build_model("unet", "none", 3, 5, multichannel="per_factor")
    with pytest.raises(LandformError, match="trained from scratch"):
        build_model("unet", "none", 1, 5, encoder_weights="x.safetensors")
    with pytest.raises(LandformError, match="supports backbones"):
        build_model("deeplabv3", "resnet18", 1, 5)


def test_deeplab_aux_head_and_vgg_weights(tmp_path):
    from safetensors.torch import save_file

    m = build_model("deeplabv3", "resnet50", 1, 5)
    out, aux = m.forward_with_aux(torch.randn(2, 1, 32, 32))
    assert out.shape == aux.shape == (2, 5, 32, 32)
    # FCN-8s from a local torchvision-VGG16-shaped file (random values, as a real file would be read)
    import torchvision

    vgg = torchvision.models.vgg16(weights=None)
    path = str(tmp_path / "vgg16.safetensors")
    save_file({k: v.contiguous() for k, v in vgg.state_dict().items()}, path)
    f = build_model("fcn8s", "vgg16", 1, 5, encoder_weights=path)
    conv0 = f.stages[0][0]
    assert torch.allclose(conv0.weight, vgg.features[0].weight.mean(1, keepdim=True) * 3.0)
    assert torch.equal(f.stages[4][0].weight, vgg.features[24].weight)
