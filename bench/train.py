"""Training throughput (chips per second) and peak memory, default vs light network.

    nice -n 10 .venv/bin/python bench/train.py [--chip-size 256] [--iterations 4] [--batch-size 4] [--device cpu]

Chips are exported once (core.chips) from the real bigtujunga DEM (30 m UTM) with
rule-derived labels (core.rules: a stand-in, not a landform map). Each network then
trains in its own process (so peak RSS is its own): the paper's step (Adam, weighted
cross-entropy as core.train computes it, eval-free), one warm-up iteration not timed,
then ``--iterations`` timed ones. Printed per network: seconds per iteration, chips
per second, peak RSS (and peak CUDA memory on a GPU), and the ratio of the default
FCN-ResNet50 to the light FCN-ResNet18 measured in the same run (the reference).
CPU autocast follows core.train's rule (bf16 only on CPUs with AVX512-BF16/AMX).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

NETWORKS = [("fcn_resnet50", "default, the paper's FCN-ResNet50"), ("fcn_resnet18", "light, FCN-ResNet18")]


def worker(args) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from landform_plugin.core import devices, train
    from landform_plugin.core.nets.registry import build_model, count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    m = train.read_manifest(args.chips)
    arch, backbone = train.resolve_architecture(args.worker, None)
    device = devices.resolve_device(args.device)
    amp = devices.autocast_dtype(device, "auto")
    torch.manual_seed(0)
    model = build_model(arch, backbone, 1, 5).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    counts = np.sum([c["class_counts"] for c in m["chips"]], axis=0)
    w = torch.tensor(train.paper_class_weights(counts, 20), dtype=torch.float32, device=device)
    ds = train.ChipSet(args.chips, m, list(range(len(m["chips"]))), False, 0)
    batches = []
    it = ds.batches(args.batch_size, True)
    while len(batches) < args.iterations + 1:
        try:
            batches.append(next(it))
        except StopIteration:
            ds.epoch += 1
            it = ds.batches(args.batch_size, True)
    model.train()
    times = []
    for k, (xb, yb) in enumerate(batches):
        x = torch.from_numpy(xb).to(device)
        y = torch.from_numpy(yb).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x)
        valid = y != 255
        loss = F.cross_entropy(out.float(), y, weight=w, ignore_index=255, reduction="sum") / valid.sum().clamp(min=1)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k > 0:
            times.append(time.perf_counter() - t0)
    s_it = float(np.median(times))
    print(json.dumps({
        "network": args.worker, "parameters_m": count_parameters(model) / 1e6, "s_per_it": s_it,
        "chips_per_s": args.batch_size / s_it, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "device": str(device), "amp": str(amp) if amp else None, "threads": torch.get_num_threads(),
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chip-size", type=int, default=256)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--chips", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from landform_plugin.core import chips, rules
    from landform_plugin.core.progress import Progress

    dem = os.path.join(REPO, "tests", "data", "topotoolbox_dems", "bigtujunga_srtm30m_utm11.tif")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as work:
        labels = os.path.join(work, "labels.tif")
        rules.classify_raster(dem, labels)
        t0 = time.perf_counter()
        m = chips.export_chips(chips.ChipConfig(dems=[dem], labels=labels, out_dir=os.path.join(work, "chips"),
                                                chip_size=args.chip_size, min_labelled=0.0), Progress())
        export_s = time.perf_counter() - t0
        print(f"chips: {len(m['chips'])} of {args.chip_size}x{args.chip_size} px from {os.path.basename(dem)} "
              f"in {export_s:.2f} s; batch {args.batch_size}, {args.iterations} timed iterations after 1 warm-up, "
              f"device {args.device}")
        results = {}
        for net, label in NETWORKS:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", net, "--chips", os.path.join(work, "chips"),
                   "--iterations", str(args.iterations), "--batch-size", str(args.batch_size), "--device", args.device,
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:])
                raise SystemExit(f"{net} failed")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[net] = r
            cuda = f", CUDA peak {r['cuda_peak_mb']:.0f} MB" if r["cuda_peak_mb"] else ""
            print(f"{net:14s} ({label}): {r['parameters_m']:.2f} M params, {r['s_per_it']:.3f} s/iteration, "
                  f"{r['chips_per_s']:.2f} chips/s, peak RSS {r['peak_rss_mb']:.0f} MB{cuda} "
                  f"[{r['device']}, amp {r['amp']}, {r['threads']} threads]")
        d, light = results["fcn_resnet50"], results["fcn_resnet18"]
        print(f"ratio default/light: {d['s_per_it'] / light['s_per_it']:.2f}x the time per iteration, "
              f"{d['peak_rss_mb'] / light['peak_rss_mb']:.2f}x the peak RSS")
        mpx = args.chip_size ** 2 / 1e6
        print(f"per megapixel of chip: default {d['s_per_it'] / (args.batch_size * mpx):.2f} s, "
              f"light {light['s_per_it'] / (args.batch_size * mpx):.2f} s (a 1024^2 chip is 1.05 Mpx)")


if __name__ == "__main__":
    main()
