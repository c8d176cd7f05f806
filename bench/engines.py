"""CPU inference engines against torch float32, end to end, on the same DEM and model.

    .venv/bin/pip install onnxruntime openvino "onnx==1.16.2"    # the candidates (not in requirements.txt)
    .venv/bin/python bench/engines.py [--size 8192] [--model models/default_model.safetensors] [--threads 2]

Why: most users classify on a laptop CPU; an engine is worth offering only if it is at
least 1.5x faster END TO END (reading, inputs, writing included) with the same classes on
at least 99.9 % of cells. Engines that are not installed are reported as such.

DEM: bench/classify.py's --size x --size mosaic of real SRTM relief at 30 m; the model
(default: the bundled one, 90 m) processes it on its 90 m lattice. Each engine runs the
same classification (core.predict.classify_raster, default tiling) with the model's
forward pass replaced by the engine's; BatchNorm is folded into the convolutions first
for every engine, as classification does.

Engines:
- torch float32 (the reference), and torch with channels_last memory format;
- torch.compile (inductor; needs a C compiler; compile time reported apart);
- OpenVINO (converted from the torch module in memory; dynamic height and width);
- ONNX Runtime (the module exported to ONNX with dynamic axes; needs the onnx package).

Printed per engine: end-to-end wall seconds, FORWARD seconds, SPEED-UP END TO END over
torch float32, class agreement with torch float32 (% of cells), max |probability difference|.
An engine is "worth offering" when the speed-up is >= 1.5 and agreement >= 99.9 %. Run
it alone: the figures are ratios measured in one run, but load moves them (printed).
"""
import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

import numpy as np  # noqa: E402
from osgeo import gdal  # noqa: E402

from classify import make_dem  # noqa: E402
from landform_plugin.core import predict  # noqa: E402


class EnginePredictor(predict.Predictor):
    """A Predictor whose forward pass runs in another engine (``run``: float32 NCHW -> logits)."""

    def __init__(self, base: predict.Predictor, run):
        super().__init__(base.model, base.spec, base.device)
        self.run = run

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        logits = np.asarray(self.run(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        self.forward_s += time.perf_counter() - t0
        self.forward_pixels += batch.shape[0] * batch.shape[2] * batch.shape[3]
        return probs


def torch_channels_last(base, threads):
    import torch

    model = base.model.to(memory_format=torch.channels_last)

    def run(x):
        with torch.inference_mode():
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            return model(t).contiguous().numpy()
    return run


def torch_compiled(base, threads):
    import torch

    model = torch.compile(base.model, dynamic=True)

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    run(np.zeros((1, len(base.spec["input_factors"]), 256, 256), np.float32))  # compile now, not in the timing
    return run


def openvino_engine(base, threads):
    import openvino as ov
    import torch

    n_in = len(base.spec["input_factors"])
    ovm = ov.convert_model(base.model, example_input=torch.zeros(1, n_in, 256, 256), input=[(1, n_in, -1, -1)])
    compiled = ov.Core().compile_model(ovm, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: compiled(x)[0]


def onnxruntime_engine(base, threads):
    import onnxruntime as ort
    import torch

    n_in = len(base.spec["input_factors"])
    path = os.path.join(tempfile.mkdtemp(prefix="bench_onnx_"), "model.onnx")
    torch.onnx.export(base.model, torch.zeros(1, n_in, 256, 256), path, dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {2: "h", 3: "w"}, "logits": {2: "h", 3: "w"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


ENGINES = {
    "torch channels_last": torch_channels_last,
    "torch.compile": torch_compiled,
    "openvino": openvino_engine,
    "onnxruntime": onnxruntime_engine,
}


def classify(dem, model, predictor, work, label):
    cls, conf = os.path.join(work, f"{label}_c.tif"), os.path.join(work, f"{label}_p.tif")
    t0 = time.perf_counter()
    predict.classify_raster(dem, model, cls, conf, device="cpu", predictor=predictor)
    wall = time.perf_counter() - t0
    return wall, gdal.Open(cls).ReadAsArray(), gdal.Open(conf).ReadAsArray()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="DEM size at 30 m (default 8192)")
    ap.add_argument("--model", default=os.path.join(REPO, "models", "default_model.safetensors"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_engines_") as work:
        dem = os.path.join(work, "dem.tif")
        make_dem(dem, args.size)
        print(f"DEM {args.size} x {args.size} at 30 m (real SRTM mosaic); model {os.path.basename(args.model)}; "
              f"{args.threads} threads; load {os.getloadavg()[0]:.2f}")
        base = predict.Predictor.from_file(args.model, "cpu")
        classify(dem, args.model, base, work, "warmup")  # page cache and allocator, not timed
        base.forward_s = 0.0
        ref_wall, ref_c, ref_p = classify(dem, args.model, base, work, "torch")
        valid = ref_c > 0
        print(f"{'engine':22s} {'wall s':>8s} {'forward s':>10s} {'SPEED-UP END TO END':>20s} {'classes same %':>15s} "
              f"{'max |dp|':>9s}  verdict")
        print(f"{'torch float32':22s} {ref_wall:8.1f} {base.forward_s:10.1f} {1.0:20.3f} {100.0:15.3f} {0.0:9.2e}  reference")
        for name in [e.strip() for e in args.engines.split(",") if e.strip()]:
            t0 = time.perf_counter()
            try:
                fresh = predict.Predictor.from_file(args.model, "cpu")  # an engine may change its module
                eng = EnginePredictor(fresh, ENGINES[name](fresh, args.threads))
            except Exception as exc:  # an engine that is missing or fails to build is a result, not a crash
                print(f"{name:22s} not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}")
                continue
            build_s = time.perf_counter() - t0
            wall, c, p = classify(dem, args.model, eng, work, name.replace(" ", "_").replace(".", "_"))
            same = float((c[valid] == ref_c[valid]).mean())
            dp = float(np.abs(p.astype(np.float64) - ref_p)[:, valid].max()) if p.ndim == 3 else float("nan")
            speed = ref_wall / wall
            verdict = "worth offering" if speed >= 1.5 and same >= 0.999 else "not worth offering"
            print(f"{name:22s} {wall:8.1f} {eng.forward_s:10.1f} {speed:20.3f} {100 * same:15.3f} {dp:9.2e}  "
                  f"{verdict} (built in {build_s:.1f} s)")
        print(f"load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
