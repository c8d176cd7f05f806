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


def test_stem_max_pool_is_torchs_max_pool_exactly():
    """The stem's row-then-column maximum gives torch's 3x3 stride-2 max-pool, bit for bit, on
    odd and even sizes, the smallest one included."""
    from landform_plugin.core.nets.fcn_resnet import max_pool_3x3_stride_2

    torch.manual_seed(1)
    for shape in ((1, 64, 67, 1154), (2, 8, 66, 35), (1, 4, 3, 3), (1, 4, 4, 5)):
        c = torch.randn(shape)
        out = max_pool_3x3_stride_2(c)
        assert out.shape == torch.nn.functional.max_pool2d(c, 3, 2).shape
        assert torch.equal(out, torch.nn.functional.max_pool2d(c, 3, 2))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_trunk_is_torchvisions_resnet(name):
    """The trunk that spares the FCN-ResNet torchvision's import: for one seed, the same
    state_dict (names, shapes, values) as torchvision's ResNet minus its ImageNet head, and
    the same features; torchvision's weights load into it unchanged."""
    import torchvision

    from landform_plugin.core.nets.resnet import ResNetTrunk

    torch.manual_seed(3)
    ours = ResNetTrunk(name).eval()
    torch.manual_seed(3)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    expected = {k: v for k, v in theirs.state_dict().items() if not k.startswith("fc.")}
    got = ours.state_dict()
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k].shape == v.shape and torch.equal(got[k], v), k

    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a = ours.layer4(ours.layer3(ours.layer2(ours.layer1(ours.maxpool(ours.relu(ours.bn1(ours.conv1(x))))))))
        t = theirs
        b = t.layer4(t.layer3(t.layer2(t.layer1(t.maxpool(t.relu(t.bn1(t.conv1(x))))))))
    assert torch.equal(a, b)


def test_frozen_batchnorm_is_torchvisions():
    import torchvision

    from landform_plugin.core.nets.resnet import FrozenBatchNorm2d

    bn = torch.nn.BatchNorm2d(8)
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    ours, theirs = FrozenBatchNorm2d(8), torchvision.ops.misc.FrozenBatchNorm2d(8)
    ours.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped, as torchvision does
    theirs.load_state_dict(bn.state_dict())
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(ours(x), theirs(x))
    assert torch.allclose(ours(x), bn.eval()(x), atol=1e-6)


def test_classifying_does_not_import_torchvision():
    """torchvision's import costs 0.17 GB of resident memory (torch._dynamo, sympy): building and
    running the FCN-ResNet must not need it."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from landform_plugin.core.nets.registry import build_model\n"
            "m = build_model('fcn_resnet', 'resnet18', 1).eval()\n"
            "from landform_plugin.core.nets.common import fuse_batchnorm\n"
            "fuse_batchnorm(m)(torch.zeros(1, 1, 64, 64))\n"
            "print('torchvision' in sys.modules, 'sympy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
