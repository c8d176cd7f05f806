"""FCN-ResNet and the architecture registry: shapes, variants, parameter counts, tile independence."""
import numpy as np
import pytest

import torch  # installed by make setup; a missing torch must fail, not skip

from landform_plugin.core.errors import LandformError  # noqa: E402
from landform_plugin.core.nets.registry import ARCHITECTURES, build_model, count_parameters, output_stride  # noqa: E402


def test_registry_and_stride():
    assert "fcn_resnet" in ARCHITECTURES
    assert output_stride("fcn_resnet") == 32
    with pytest.raises(LandformError, match="Unknown network architecture"):
        output_stride("nope")


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (70, 45)])
def test_forward_shape_any_size(size):
    torch.manual_seed(0)
    m = build_model("fcn_resnet", "resnet18", 1).eval()
    with torch.inference_mode():
        y = m(torch.randn(2, 1, *size))
    assert y.shape == (2, 5, *size)
    assert torch.isfinite(y).all()


def test_per_factor_has_one_encoder_per_channel():
    single = build_model("fcn_resnet", "resnet18", 1)
    multi = build_model("fcn_resnet", "resnet18", 3, multichannel="per_factor")
    stacked = build_model("fcn_resnet", "resnet18", 3, multichannel="stack")
    assert len(multi.encoders) == 3 and len(stacked.encoders) == 1
    assert count_parameters(multi) > 2.5 * count_parameters(single)
    assert count_parameters(stacked) < 1.01 * count_parameters(single)
    with torch.inference_mode():
        assert multi.eval()(torch.randn(1, 3, 64, 96)).shape == (1, 5, 64, 96)


def test_resnet50_parameter_count_documented():
    m = build_model("fcn_resnet", "resnet50", 1)
    n = count_parameters(m)
    # ResNet-50 trunk without fc is 23.5 M; decoder (256 ch) adds 8.2 M. The paper reports 54.18 M.
    assert 31.0e6 < n < 32.5e6


@pytest.mark.parametrize("norm", ["batch", "frozen_batch", "group"])
def test_norm_options(norm):
    m = build_model("fcn_resnet", "resnet18", 2, norm=norm).eval()
    with torch.inference_mode():
        assert m(torch.randn(1, 2, 64, 64)).shape == (1, 5, 64, 64)


def test_bad_requests():
    with pytest.raises(LandformError, match="backbones"):
        build_model("fcn_resnet", "vgg16", 1)
    with pytest.raises(LandformError, match="multichannel"):
        build_model("fcn_resnet", "resnet18", 1, multichannel="sum")
    with pytest.raises(LandformError, match="no option"):
        build_model("fcn_resnet", "resnet18", 1, dilation=2)
    m = build_model("fcn_resnet", "resnet18", 2).eval()
    with pytest.raises(LandformError, match="expects input"):
        m(torch.randn(1, 1, 64, 64))


def test_stem_in_strips_equals_the_stem_in_one_go():
    """Inference on large tiles runs the ResNet stem in strips of rows (its memory peak): the
    values must be those of the stem in one go, for any size and strip height."""
    from landform_plugin.core.nets.fcn_resnet import ResNetEncoder

    torch.manual_seed(0)
    enc = ResNetEncoder("resnet18", 3).eval()
    with torch.inference_mode():
        for h, w in ((96, 70), (131, 64), (200, 97), (67, 33)):
            x = torch.randn(1, 3, h, w)
            whole = enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))
            for rows in (1, 5, 32):
                np.testing.assert_allclose(enc.stem_in_strips(x, rows).numpy(), whole.numpy(), atol=1e-6)
        x = torch.randn(1, 3, 160, 96)  # taller than two strips: forward() takes the strips
        c2 = enc(x)[0]
        c2_whole = enc.layer2(enc.layer1(enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))))
        np.testing.assert_allclose(c2.numpy(), c2_whole.numpy(), atol=1e-5)
