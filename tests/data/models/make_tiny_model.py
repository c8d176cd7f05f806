"""Generate tests/data/models/tiny_relief_60m.safetensors: a briefly trained test model.

Not a product model: a ``resnet_tiny`` FCN-ResNet (0.37 M parameters) trained for
200 Adam steps (batch 8, 128^2 crops, ~3 min on 2 CPU cores) to reproduce a
simple relief rule on the fixture DEMs resampled to 60 m:
local relief (max - min in a 17 x 17 cell window, ~1 km) < 60 m -> plain (1),
< 300 m -> hill (3), else mountain (4); NoData -> 0. BatchNorm statistics are
re-estimated at the end (precise BN) so eval mode matches training.
It gives the tiled-inference tests a model whose decisions follow terrain
(a random-weight network has near-ties everywhere and tests nothing about
seams). Run from the repository root:

    .venv/bin/python tests/data/models/make_tiny_model.py
"""
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from landform_plugin.core import inputs  # noqa: E402
from landform_plugin.core.modelfile import make_spec, save_model  # noqa: E402
from landform_plugin.core.nets.registry import build_model  # noqa: E402
from landform_plugin.core.grid import processing_grid  # noqa: E402
from landform_plugin.core.progress import Progress  # noqa: E402
from landform_plugin.core.rasters import open_raster  # noqa: E402
from landform_plugin.core.terrain import rdls_filter  # noqa: E402
from tests.conftest import DEMS  # noqa: E402

PX = 60.0
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_relief_60m.safetensors")
TRAIN_DEMS = ["bigtujunga", "vermont", "zion", "boulder", "fortworth", "jacksboro"]
STEPS, BATCH, CROP = 200, 8, 128


def resampled(path):
    ds, info = open_raster(str(path))
    with tempfile.TemporaryDirectory() as d:
        pds, _, _ = processing_grid(ds, info, PX, d, Progress())
        return pds.GetRasterBand(1).ReadAsArray().astype(np.float32)


def relief_labels(z):
    r = rdls_filter(np.pad(z, 8, constant_values=np.nan), (17, 17))
    lab = np.where(r < 60, 1, np.where(r < 300, 3, 4)).astype(np.int64)
    lab[~np.isfinite(z)] = 0
    return lab


def main():
    t0 = time.time()
    rule = inputs.default_normalisation("dem")
    data = []
    for name in TRAIN_DEMS:
        z = resampled(DEMS[name])
        x, _ = inputs.make_input(z, 0, ["dem"], {"dem": rule}, PX)
        data.append((x, relief_labels(z)))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("fcn_resnet", "resnet_tiny", 1, decoder_channels=32)
    opt = torch.optim.Adam(model.parameters(), 2e-3)

    def batch():
        xs, ys = [], []
        for _ in range(BATCH):
            x, y = data[rng.integers(len(data))]
            i, j = rng.integers(0, x.shape[1] - CROP), rng.integers(0, x.shape[2] - CROP)
            xs.append(x[:, i : i + CROP, j : j + CROP])
            ys.append(y[i : i + CROP, j : j + CROP])
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    weight = torch.tensor([0.0, 1, 1, 1, 1])
    model.train()
    for step in range(STEPS):
        x, y = batch()
        loss = torch.nn.functional.cross_entropy(model(x), y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for mod in model.modules():  # precise BN: exact averages over fresh batches
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    with torch.no_grad():
        for _ in range(10):
            model(batch()[0])
    model.eval()
    accs = {}
    with torch.inference_mode():
        for name, (x, y) in zip(TRAIN_DEMS, data):
            p = model(torch.from_numpy(x[None])).argmax(1)[0].numpy()
            accs[name] = round(float((p == y)[y > 0].mean()), 3)
    spec = make_spec(
        "fcn_resnet", "resnet_tiny", ["dem"], PX, 128, arch_options={"decoder_channels": 32},
        training={"purpose": "test fixture", "labels": "relief rule (<60 m plain, <300 m hill, else mountain)",
                  "steps": STEPS, "batch": BATCH, "crop": CROP, "optimiser": "Adam 2e-3", "dems": TRAIN_DEMS},
        metrics={"pixel_accuracy_train": accs},
    )
    save_model(OUT, model, spec)
    print(f"wrote {OUT} in {time.time() - t0:.0f} s; training-DEM accuracy {accs}")


if __name__ == "__main__":
    main()
