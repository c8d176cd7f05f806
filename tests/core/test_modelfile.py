"""The .safetensors model file: round trip, torch-free spec reading, and refusal of bad files."""
import json
import pickle
import struct

import pytest

import torch  # installed by make setup; a missing torch must fail, not skip

from landform_plugin.core.errors import LandformError  # noqa: E402
from landform_plugin.core.modelfile import load_model, make_spec, read_spec, save_model  # noqa: E402
from landform_plugin.core.nets.registry import build_model  # noqa: E402


@pytest.fixture(scope="module")
def small_model_file(tmp_path_factory):
    torch.manual_seed(3)
    spec = make_spec("fcn_resnet", "resnet18", ["dem"], pixel_size_m=90.0, tile_size=256,
                     training={"epochs": 0, "note": "random weights for tests"}, metrics={"PA": 0.2})
    model = build_model("fcn_resnet", "resnet18", 1)
    # give BatchNorm non-trivial running statistics so the round trip checks buffers too
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("m") / "small.safetensors"
    save_model(str(path), model, spec)
    return str(path), model.eval(), spec


def test_round_trip_same_outputs(small_model_file):
    path, model, spec = small_model_file
    loaded, spec2 = load_model(path)
    assert spec2 == spec
    assert not loaded.training
    x = torch.randn(1, 1, 64, 96)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_read_spec_without_torch(small_model_file):
    import subprocess
    import sys

    path, _, spec = small_model_file
    code = (
        "import sys; from landform_plugin.core.modelfile import read_spec; s = read_spec(sys.argv[1]);"
        "assert 'torch' not in sys.modules; print(s['backbone'], s['pixel_size_m'], s['classes'][4]['name'])"
    )
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["resnet18", "90.0", "Mountain"]
    assert spec["normalisation"]["dem"]["method"] == "local_mean"


def test_wrong_number_of_factors(small_model_file):
    path, _, _ = small_model_file
    with pytest.raises(LandformError, match="expects 1 input factor"):
        load_model(path, expect_in_channels=3)
    with pytest.raises(LandformError, match="expects input factors"):
        load_model(path, expect_factors=["dem", "slope"])


def test_truncated_file(small_model_file, tmp_path):
    path, _, _ = small_model_file
    data = open(path, "rb").read()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(LandformError, match="truncated or corrupt"):
        read_spec(str(bad))
    with pytest.raises(LandformError, match="truncated or corrupt"):
        load_model(str(bad))


def test_corrupt_header(small_model_file, tmp_path):
    path, _, _ = small_model_file
    data = bytearray(open(path, "rb").read())
    data[10:30] = b"\xff" * 20
    bad = tmp_path / "garbled.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(LandformError, match="not a valid .safetensors"):
        load_model(str(bad))


def test_pickle_renamed_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(LandformError, match="not a valid .safetensors"):
        load_model(str(bad))
    assert not marker.exists()
    torch.save({"w": torch.zeros(3)}, str(tmp_path / "model.pt"))
    with pytest.raises(LandformError, match="not a valid .safetensors"):
        read_spec(str(tmp_path / "model.pt"))


def test_plain_safetensors_without_spec(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(LandformError, match="not a landform model"):
        read_spec(str(p))


def test_incomplete_spec_and_mismatched_weights(small_model_file, tmp_path):
    from safetensors.torch import load_file, save_file

    path, _, spec = small_model_file
    state = load_file(path)
    partial = {k: v for k, v in spec.items() if k != "pixel_size_m"}
    p = tmp_path / "nospec.safetensors"
    save_file(state, str(p), metadata={"landform_model": json.dumps(partial)})
    with pytest.raises(LandformError, match="lacks pixel_size_m"):
        read_spec(str(p))
    # spec claims resnet34 but the weights are resnet18: strict key check refuses it
    wrong = dict(spec, backbone="resnet34")
    p2 = tmp_path / "mismatch.safetensors"
    save_file(state, str(p2), metadata={"landform_model": json.dumps(wrong)})
    with pytest.raises(LandformError, match="does not match its declared architecture"):
        load_model(str(p2))
    # same keys, wrong shape: decoder width 128 declared, 256 stored
    wrong2 = dict(spec, arch_options={"decoder_channels": 128})
    p3 = tmp_path / "shape.safetensors"
    save_file(state, str(p3), metadata={"landform_model": json.dumps(wrong2)})
    with pytest.raises(LandformError, match="has shape"):
        load_model(str(p3))


def test_missing_file_and_bad_names(tmp_path):
    with pytest.raises(LandformError, match="does not exist"):
        read_spec(str(tmp_path / "nothing.safetensors"))
    m = build_model("fcn_resnet", "resnet18", 1)
    spec = make_spec("fcn_resnet", "resnet18", ["dem"], 30.0, 512)
    with pytest.raises(LandformError, match="end in .safetensors"):
        save_model(str(tmp_path / "x.pt"), m, spec)
    with pytest.raises(LandformError, match="input channel"):
        save_model(str(tmp_path / "x.safetensors"), m, dict(spec, input_factors=["dem", "slope"],
                   normalisation={"dem": spec["normalisation"]["dem"], "slope": {"method": "affine", "scale": 45}}))
    assert not list(tmp_path.glob("*.partial"))


def test_header_length_bomb(tmp_path):
    p = tmp_path / "bomb.safetensors"
    p.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(LandformError, match="not a valid"):
        read_spec(str(p))
