"""Train a landform segmentation network from a chip folder (torch + numpy only).

Runs without GDAL or QGIS, so a chip folder (core.chips) can be copied to a
rented GPU machine and trained there::

    python -m landform_plugin.core train --chips chips/ --out model.safetensors

Defaults are the paper's recipe (Yang et al. 2023, sections 2.3 and 3), every
value changeable:

- random train/validation split of the chips with a seed (the paper had
  2364 / 571 chips, a validation share of 19.5 %; default 0.2);
- weighted cross-entropy, eq. 1: ``loss = -1/N sum_n w_{y_n} log p_n(y_n)``
  over the N labelled pixels, with w(no data) = 1 and w(c) = 1 + 1/share(c),
  share the class's fraction of the labelled training pixels. The paper says
  "1.0 plus the inverse of their percentages"; read as a fraction (0.2848 ->
  4.5) this is what ../shared/GUIDE.md section 8 measured. A rare class gets a
  huge weight (platform at 0.3 % -> 334, over-predicted 11x there), hence the
  optional ``weight_cap``;
- Adam, learning rate 1e-5 held for 20 epochs, then decayed linearly to 0 at
  epoch 50 (per epoch: lr(e) = lr0 * (epochs - e) / (epochs - hold) for e >= hold);
- batch 4 for one input channel, 2 for several;
- optional flip / 90-degree rotation augmentation.

Validation always runs in eval mode (BatchNorm with running statistics, as
classification does). Each completed epoch writes a checkpoint (safetensors
weights + Adam state, JSON metadata: no pickle); a cancelled or interrupted run
resumes from it. Outputs beside the model file ``<stem>.safetensors``:
``<stem>_training.csv`` (per epoch: loss, PA, MIoU on train and validation,
learning rate, seconds), ``<stem>_training.png`` (curves),
``<stem>_val_confusion.csv`` / ``.png`` (validation confusion matrix, rows =
reference), and ``<stem>.checkpoint.safetensors`` while training.
"""
import csv
import json
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import metrics
from .errors import Cancelled, LandformError
from .progress import Progress

FORMAT = "landform-chips"
VERSION = 1
MANIFEST = "manifest.json"

# Named presets: the paper's Table 3 models plus light backbones for CPU users.
PRESETS: Dict[str, Tuple[str, Optional[str]]] = {
    "fcn_resnet50": ("fcn_resnet", "resnet50"),
    "fcn_resnet101": ("fcn_resnet", "resnet101"),
    "fcn_resnet34": ("fcn_resnet", "resnet34"),
    "fcn_resnet18": ("fcn_resnet", "resnet18"),
    "deeplabv3_resnet101": ("deeplabv3", "resnet101"),
    "deeplabv3_resnet50": ("deeplabv3", "resnet50"),
    "unet": ("unet", None),
    "attention_unet": ("attention_unet", None),
    "fcn8s": ("fcn8s", None),
}
DEFAULT_BACKBONE = {"fcn_resnet": "resnet50", "deeplabv3": "resnet101", "unet": "none", "attention_unet": "none", "fcn8s": "vgg16"}


@dataclass
class TrainConfig:
    chips: str
    out: str
    architecture: str = "fcn_resnet"  # registry name or a PRESETS key
    backbone: Optional[str] = None  # None: the architecture's default (resnet50 for fcn_resnet)
    multichannel: str = "stack"  # stack | per_factor
    norm: str = "batch"
    arch_options: Dict[str, object] = field(default_factory=dict)
    encoder_weights: Optional[str] = None  # local .safetensors with torchvision ResNet weights
    epochs: int = 50
    lr: float = 1e-5
    hold_epochs: int = 20
    batch_size: Optional[int] = None  # None: 4 for one channel, 2 for several
    val_fraction: float = 0.2
    seed: int = 0
    class_weights: str = "paper"  # paper | none
    weight_cap: Optional[float] = None
    augment: bool = False
    max_iterations: Optional[int] = None  # stop after this many training batches (this run)
    max_minutes: Optional[float] = None  # stop after this many minutes (this run)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (CUDA: bf16/fp16; CPU: bf16 only with AVX512-BF16/AMX) | on | off
    channels_last: Optional[bool] = None  # None: on for CUDA, off for CPU (slower here)
    num_workers: int = 0
    threads: Optional[int] = None
    keep: str = "last"  # last | best (by validation MIoU)
    resume: Optional[str] = None  # checkpoint path, or "auto" for <stem>.checkpoint.safetensors
    checkpoint_every_epoch: bool = True
    bn_recalibrate: int = 0  # >0: re-estimate BatchNorm statistics over this many training batches at the end


@dataclass
class TrainResult:
    model_path: str
    epochs_done: int
    iterations: int
    history: List[dict]
    val_scores: Optional[metrics.Scores]
    files: Dict[str, str]
    stopped_early: str = ""


# ----------------------------------------------------------------------------- helpers (numpy only)


def resolve_architecture(architecture: str, backbone: Optional[str]) -> Tuple[str, str]:
    arch = architecture
    if architecture in PRESETS:
        arch, preset_backbone = PRESETS[architecture]
        if backbone is None:
            backbone = preset_backbone
    if backbone is None:
        backbone = DEFAULT_BACKBONE.get(arch)
    if backbone is None:
        from .nets.registry import get_architecture

        a = get_architecture(arch)
        backbone = a.backbones[0] if a.backbones else "none"
    return arch, backbone


def split_chips(n: int, val_fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Random train / validation indices (seeded); at least one chip in each."""
    if not 0 < val_fraction < 1:
        raise LandformError(f"The validation share must be between 0 and 1, not {val_fraction}.")
    n_val = int(round(n * val_fraction))
    if n < 2 or n_val < 1 or n - n_val < 1:
        raise LandformError(
            f"Too few chips for a validation split: {n} chip(s) with a validation share of {val_fraction:g} "
            f"leaves {n_val} for validation and {n - n_val} for training. Export more chips (a smaller chip size, "
            "more or larger DEMs, a lower minimum labelled share) or change the validation share."
        )
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def paper_class_weights(counts, cap: Optional[float] = None, nodata_class: int = 0) -> np.ndarray:
    """w(no data) = 1, w(c) = 1 + 1/share(c) (share a fraction); 1 for absent classes; optional cap."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    w = np.ones(len(counts), dtype=np.float64)
    for c in range(len(counts)):
        if c == nodata_class or counts[c] <= 0 or total <= 0:
            continue
        w[c] = 1.0 + total / counts[c]
    if cap is not None:
        w = np.minimum(w, float(cap))
    return w


def lr_at(epoch: int, lr0: float, hold: int, epochs: int) -> float:
    """The paper's schedule: lr0 for ``hold`` epochs, then linear to 0 at ``epochs`` (epoch 0-based)."""
    if epoch < hold or epochs <= hold:
        return float(lr0)
    return float(lr0) * max(0.0, (epochs - epoch) / float(epochs - hold))


def augment_pair(x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Random horizontal/vertical flip and 90-degree rotation of a (C,H,W) / (H,W) pair."""
    k = int(rng.integers(0, 4))
    if k:
        x = np.rot90(x, k, axes=(1, 2))
        y = np.rot90(y, k, axes=(0, 1))
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
        y = y[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def write_history_csv(history: List[dict], path: str) -> str:
    cols = ["epoch", "iterations", "lr", "train_loss", "train_pa", "train_miou", "val_loss", "val_pa", "val_miou", "seconds"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    return path


def plot_history(history: List[dict], path: str) -> str:
    """Loss and validation PA / MIoU per epoch (like the paper's Fig. 5)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.6), dpi=100)
    ax1 = fig.add_subplot(1, 2, 1)
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(ep, [h["val_loss"] for h in history], "s--", label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("weighted cross-entropy")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2 = fig.add_subplot(1, 2, 2)
    for key, style, label in (("val_pa", "o-", "PA (val)"), ("val_miou", "s-", "MIoU (val)"),
                              ("train_pa", "o:", "PA (train)"), ("train_miou", "s:", "MIoU (train)")):
        ax2.plot(ep, [100 * (h[key] if h[key] is not None else float("nan")) for h in history], style, label=label)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("%")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path)
    return path


def output_paths(out: str) -> Dict[str, str]:
    out = os.path.abspath(out)
    if not out.lower().endswith(".safetensors"):
        raise LandformError(f"The model file must end in .safetensors; '{out}' does not.")
    stem = out[: -len(".safetensors")]
    os.makedirs(os.path.dirname(out), exist_ok=True)  # every file below goes next to the model
    return {
        "model": out,
        "log_csv": stem + "_training.csv",
        "curve_png": stem + "_training.png",
        "confusion_csv": stem + "_val_confusion.csv",
        "confusion_png": stem + "_val_confusion.png",
        "checkpoint": stem + ".checkpoint.safetensors",
    }


# ----------------------------------------------------------------------------- data


def read_manifest(chip_dir: str) -> dict:
    """Load and check a chip folder's manifest (json only: no GDAL needed)."""
    path = os.path.join(chip_dir, MANIFEST)
    if not os.path.isfile(path):
        raise LandformError(f"'{chip_dir}' is not a chip folder (no {MANIFEST}); export chips first.")
    with open(path, encoding="utf-8") as fh:
        m = json.load(fh)
    if m.get("format") != FORMAT:
        raise LandformError(f"'{path}' is not a landform chip manifest.")
    if int(m.get("version", 0)) > VERSION:
        raise LandformError(f"'{path}' was written by a newer version of the plugin (format {m.get('version')}).")
    if not m.get("chips"):
        raise LandformError(f"The chip folder '{chip_dir}' holds no chips.")
    return m


class ChipSet:
    """Chips listed in a manifest, loaded on demand with numpy."""

    def __init__(self, chip_dir: str, manifest: dict, ids: List[int], augment: bool, seed: int):
        self.dir = chip_dir
        self.items = [manifest["chips"][i] for i in ids]
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        x = np.load(os.path.join(self.dir, item["x"]))
        y = np.load(os.path.join(self.dir, item["y"]))
        if self.augment:
            x, y = augment_pair(x, y, np.random.default_rng([self.seed, self.epoch, i]))
        return x.astype(np.float32, copy=False), y.astype(np.int64)

    def batches(self, batch_size: int, shuffle: bool):
        """Batches in a per-epoch seeded order. When shuffling (training) a trailing batch of
        a single chip is left out (BatchNorm cannot train on one sample with a 1x1 map, as in
        ASPP's pooling branch); the next epoch's order differs, so every chip is still used."""
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng([self.seed, 7919, self.epoch]).permutation(len(self))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            if shuffle and len(idx) == 1 and batch_size > 1:
                return
            xs, ys = zip(*(self[int(i)] for i in idx))
            yield np.stack(xs), np.stack(ys)


def _prefetch(it, workers: int):
    """Load the next batches in threads (numpy I/O releases the GIL)."""
    if workers <= 0:
        yield from it
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as ex:
        it = iter(it)
        fut = ex.submit(next, it, None)
        while True:
            item = fut.result()
            if item is None:
                return
            fut = ex.submit(next, it, None)
            yield item


# ----------------------------------------------------------------------------- checkpoints (no pickle)


def save_checkpoint(path: str, model, optimizer, meta: dict) -> str:
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    osd = optimizer.state_dict()
    for pid, st in osd["state"].items():
        for name, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(float(v))
            tensors[f"optim.{pid}.{name}"] = t.detach().to("cpu").contiguous()
    meta = dict(meta)
    meta["param_groups"] = osd["param_groups"]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial")
    try:
        save_file(tensors, tmp, metadata={"landform_checkpoint": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: str, model, optimizer, device) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise LandformError(f"Checkpoint '{path}' does not exist; nothing to resume.")
    try:
        with safe_open(path, framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["landform_checkpoint"])
        tensors = load_file(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad checkpoint
        raise LandformError(f"'{path}' is not a readable training checkpoint ({exc}).") from None
    mstate = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(mstate, strict=True)
    except RuntimeError as exc:
        raise LandformError(f"Checkpoint '{path}' is for a different network: {str(exc).splitlines()[0]}") from None
    state: Dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


# ----------------------------------------------------------------------------- training


def recalibrate_batchnorm(model, chipset: "ChipSet", batches: int, batch_size: int, to_dev, autocast, progress) -> int:
    """Re-estimate BatchNorm running statistics as exact averages over ``batches`` training
    batches (no gradient). BatchNorm trained at small batch from scratch can collapse in eval
    mode (../shared/GUIDE.md section 8); this fixes its statistics without changing weights.
    Returns the number of BatchNorm layers updated."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    done = 0
    chipset.epoch += 1000  # a different order than the last training epoch
    with torch.no_grad():
        while done < batches:
            start = done
            for xb, yb in chipset.batches(batch_size, True):
                progress.check()
                x, _ = to_dev(xb, yb)
                with autocast():
                    model(x)
                done += 1
                if done >= batches:
                    break
            chipset.epoch += 1
            if done == start:  # fewer chips than two: nothing to average over
                break
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return len(bns)



def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LandformError("CUDA was requested but no CUDA GPU is available to PyTorch; use device 'cpu' or 'auto'.")
    return torch.device(name)


def _amp_dtype(device, amp: str):
    import torch

    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (amp == "on" or _cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def _cpu_has_fast_bf16() -> bool:
    """bf16 autocast pays off on CPUs with AVX512-BF16 or AMX only (measured here on an
    AVX2-only CPU: 8x slower than float32)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train(cfg: TrainConfig, progress: Optional[Progress] = None) -> TrainResult:
    """Train per ``cfg``; write the model file and logs; return a summary."""
    from .errors import import_torch

    torch = import_torch()
    import torch.nn.functional as F

    from . import modelfile
    from .nets.registry import build_model, count_parameters

    progress = progress or Progress()
    t_start = time.time()
    manifest = read_manifest(cfg.chips)
    paths = output_paths(cfg.out)
    arch, backbone = resolve_architecture(cfg.architecture, cfg.backbone)
    factors = list(manifest["input_factors"])
    n_in = len(factors)
    num_classes = int(manifest["num_classes"])
    ignore = int(manifest.get("ignore_index", 255))
    if cfg.keep not in ("last", "best"):
        raise LandformError("keep must be 'last' or 'best'.")
    if cfg.epochs < 1:
        raise LandformError("Train for at least one epoch.")
    if cfg.multichannel == "per_factor" and n_in == 1:
        multichannel = "stack"  # identical for one channel
    else:
        multichannel = cfg.multichannel
    batch_size = int(cfg.batch_size or (4 if n_in == 1 else 2))

    train_ids, val_ids = split_chips(len(manifest["chips"]), cfg.val_fraction, cfg.seed)
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in train_ids:
        counts += np.asarray(manifest["chips"][i]["class_counts"][:num_classes], dtype=np.int64)
    if cfg.class_weights == "paper":
        weights = paper_class_weights(counts, cfg.weight_cap)
    elif cfg.class_weights == "none":
        weights = np.ones(num_classes)
    else:
        raise LandformError("class_weights must be 'paper' or 'none'.")
    present = [manifest["classes"][c]["name"] for c in range(num_classes) if counts[c] > 0]
    progress.info(
        f"{len(train_ids)} training / {len(val_ids)} validation chips of {manifest['chip_size']} px; "
        f"classes in training: {', '.join(present)}; weights "
        + ", ".join(f"{manifest['classes'][c]['name']} {weights[c]:.2f}" for c in range(num_classes))
    )

    device = _device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % (2**32))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    options = dict(cfg.arch_options)
    options.pop("norm", None)
    model = build_model(arch, backbone, n_in, num_classes, multichannel, cfg.encoder_weights, norm=cfg.norm, **options)
    n_params = count_parameters(model)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda") if (amp_dtype == torch.float16 and device.type == "cuda") else None
    use_aux = hasattr(model, "forward_with_aux") and getattr(model, "aux_classifier", None) is not None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    wt = torch.tensor(weights, dtype=torch.float32, device=device)
    progress.info(f"{arch}/{backbone} ({multichannel}), {n_params / 1e6:.2f} M parameters, on {device}"
                  + (f" with {str(amp_dtype).replace('torch.', '')} autocast" if amp_dtype else ""))

    history: List[dict] = []
    start_epoch = 0
    best = {"miou": -1.0, "epoch": None, "state": None, "cm": None}
    resume = paths["checkpoint"] if cfg.resume == "auto" else cfg.resume
    if resume:
        meta = load_checkpoint(resume, model, optimizer, device)
        if meta.get("architecture") != arch or meta.get("backbone") != backbone or meta.get("input_factors") != factors:
            raise LandformError(
                f"Checkpoint '{resume}' is for {meta.get('architecture')}/{meta.get('backbone')} on "
                f"{meta.get('input_factors')}, not {arch}/{backbone} on {factors}."
            )
        history = list(meta.get("history", []))
        start_epoch = int(meta["epoch"]) + 1
        if meta.get("best_epoch") is not None:
            best["miou"], best["epoch"] = float(meta.get("best_miou", -1)), int(meta["best_epoch"])
        progress.info(f"Resumed from '{resume}' after epoch {start_epoch} (of {cfg.epochs}).")

    train_set = ChipSet(cfg.chips, manifest, train_ids, cfg.augment, cfg.seed)
    val_set = ChipSet(cfg.chips, manifest, val_ids, False, cfg.seed)
    n_batches = len(train_set) // batch_size + (1 if len(train_set) % batch_size > 1 else 0)
    total_its = max(1, (cfg.epochs - start_epoch) * n_batches)
    if cfg.max_iterations:
        total_its = min(total_its, int(cfg.max_iterations))
    deadline = t_start + 60.0 * cfg.max_minutes if cfg.max_minutes else None
    its = 0
    its_before = int(history[-1]["iterations"]) if history else 0
    stopped = ""
    last_cm = None

    def to_dev(xb, yb):
        x = torch.from_numpy(xb).to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(yb).to(device, non_blocking=True)

    def loss_and_cm(logits, y):
        logits = logits.float()
        valid = y != ignore
        n_valid = valid.sum()
        loss = F.cross_entropy(logits, y, weight=wt, ignore_index=ignore, reduction="sum") / n_valid.clamp(min=1)
        pred = logits.argmax(1)
        yv, pv = y[valid], pred[valid]
        cm = torch.bincount(yv * num_classes + pv, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
        return loss, cm, int(n_valid)

    def autocast():
        if amp_dtype is None:
            import contextlib

            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    def validate():
        """Validation, always in eval mode (BatchNorm with running statistics)."""
        model.eval()
        cm_val = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        vloss_sum, vloss_n = 0.0, 0
        with torch.no_grad():
            for xb, yb in _prefetch(val_set.batches(batch_size, False), cfg.num_workers):
                progress.check()
                x, y = to_dev(xb, yb)
                with autocast():
                    out = model(x)
                loss, cm_b, nv = loss_and_cm(out, y)
                cm_val += cm_b
                vloss_sum += float(loss) * nv
                vloss_n += nv
        return cm_val.cpu().numpy(), vloss_sum, vloss_n

    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t_ep = time.time()
            lr = lr_at(epoch, cfg.lr, cfg.hold_epochs, cfg.epochs)
            for g in optimizer.param_groups:
                g["lr"] = lr
            train_set.epoch = epoch
            model.train()
            cm_tr = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
            loss_sum, loss_n = 0.0, 0
            for b, (xb, yb) in enumerate(_prefetch(train_set.batches(batch_size, True), cfg.num_workers)):
                progress.check()
                x, y = to_dev(xb, yb)
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    if use_aux:
                        out, aux = model.forward_with_aux(x)
                    else:
                        out, aux = model(x), None
                loss, cm_b, nv = loss_and_cm(out, y)
                if nv == 0:
                    continue
                if aux is not None:  # DeepLabv3's auxiliary head, weight 0.5 (torchvision's recipe)
                    loss = loss + 0.5 * loss_and_cm(aux, y)[0]
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                loss_val = float(loss.detach())
                if not math.isfinite(loss_val):
                    raise LandformError(
                        f"Training diverged (loss {loss_val}) in epoch {epoch + 1}; lower the learning rate or turn off mixed precision."
                    )
                cm_tr += cm_b
                loss_sum += loss_val * nv
                loss_n += nv
                its += 1
                progress.update(100.0 * its / total_its)
                if cfg.max_iterations and its >= cfg.max_iterations:
                    stopped = f"stopped after {its} iterations (max_iterations)"
                    break
                if deadline and time.time() > deadline:
                    stopped = f"stopped after {cfg.max_minutes:g} minutes (max_minutes)"
                    break
            cm_val_np, vloss_sum, vloss_n = validate()
            cm_tr_np = cm_tr.cpu().numpy()
            last_cm = cm_val_np
            row = {
                "epoch": epoch + 1,
                "iterations": its_before + its,
                "lr": lr,
                "train_loss": loss_sum / max(1, loss_n),
                "train_pa": _nan_none(metrics.pixel_accuracy(cm_tr_np)),
                "train_miou": _nan_none(metrics.mean_iou(cm_tr_np)),
                "val_loss": vloss_sum / max(1, vloss_n),
                "val_pa": _nan_none(metrics.pixel_accuracy(cm_val_np)),
                "val_miou": _nan_none(metrics.mean_iou(cm_val_np)),
                "seconds": round(time.time() - t_ep, 3),
            }
            history.append(row)
            progress.info(
                f"epoch {epoch + 1}/{cfg.epochs}: lr {lr:.2e}, loss {row['train_loss']:.4f} / val {row['val_loss']:.4f}, "
                f"val PA {100 * (row['val_pa'] or 0):.2f} %, MIoU {100 * (row['val_miou'] or 0):.2f} % ({row['seconds']:.1f} s)"
            )
            vm = row["val_miou"] if row["val_miou"] is not None else -1.0
            if vm > best["miou"]:
                best.update(miou=vm, epoch=epoch + 1, cm=cm_val_np)
                if cfg.keep == "best":
                    best["state"] = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
            write_history_csv(history, paths["log_csv"])
            if cfg.checkpoint_every_epoch:
                save_checkpoint(paths["checkpoint"], model, optimizer, {
                    "epoch": epoch, "architecture": arch, "backbone": backbone, "input_factors": factors,
                    "history": history, "config": _jsonable(asdict(cfg)), "best_epoch": best["epoch"],
                    "best_miou": best["miou"],
                })
            if stopped:
                break
    except Cancelled:
        done = len(history)
        where = (f"the last completed epoch ({history[-1]['epoch']}) is kept in '{paths['checkpoint']}'; "
                 "resume from it to continue") if done and cfg.checkpoint_every_epoch and os.path.exists(paths["checkpoint"]) else "no epoch was completed"
        raise Cancelled(f"training cancelled: {where}") from None

    if cfg.keep == "best" and best["state"] is not None:
        model.load_state_dict(best["state"])
        final_cm = best["cm"]
        chosen_epoch = best["epoch"]
    else:
        final_cm = last_cm
        chosen_epoch = history[-1]["epoch"] if history else None
    if final_cm is None:
        raise LandformError("No epoch was completed; nothing to save.")
    bn_note = None
    if cfg.bn_recalibrate > 0:
        n_bn = recalibrate_batchnorm(model, train_set, int(cfg.bn_recalibrate), batch_size, to_dev, autocast, progress)
        if n_bn:
            before = metrics.mean_iou(final_cm)
            final_cm = validate()[0]
            bn_note = f"re-estimated over {cfg.bn_recalibrate} training batches"
            progress.info(
                f"BatchNorm statistics {bn_note}: validation MIoU {100 * before:.2f} % -> {100 * metrics.mean_iou(final_cm):.2f} %"
            )
    class_names = [c["name"] for c in manifest["classes"]]
    val_scores = metrics.scores(final_cm, class_names)
    files = dict(paths)
    metrics.write_confusion_csv(final_cm, class_names, paths["confusion_csv"])
    try:
        metrics.plot_confusion_matrix(final_cm, class_names, paths["confusion_png"],
                                      title=f"Validation, epoch {chosen_epoch}: PA {100 * val_scores.pa:.2f} %, MIoU {100 * val_scores.miou:.2f} %")
        plot_history(history, paths["curve_png"])
    except ImportError:  # a bare GPU box without matplotlib: the CSVs hold the same numbers
        progress.info("matplotlib is not installed: no PNG figures (the CSV files hold the numbers).")
        files.pop("confusion_png")
        files.pop("curve_png")
    training = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chips": os.path.abspath(cfg.chips),
        "chip_size": manifest["chip_size"],
        "sources": [os.path.basename(s["dem"]) for s in manifest.get("sources", [])],
        "label_strategy": manifest.get("label_strategy"),
        "code_mapping": manifest.get("code_mapping"),
        "train_chips": len(train_ids),
        "val_chips": len(val_ids),
        "split_seed": cfg.seed,
        "class_pixel_counts_train": counts.tolist(),
        "class_weights": [round(float(w), 6) for w in weights],
        "weight_cap": cfg.weight_cap,
        "optimizer": "Adam",
        "lr": cfg.lr,
        "schedule": f"held {cfg.hold_epochs} epochs, linear to 0 at epoch {cfg.epochs}",
        "epochs_planned": cfg.epochs,
        "epochs_done": len(history),
        "iterations": its_before + its,
        "batch_size": batch_size,
        "augment": cfg.augment,
        "encoder_weights": os.path.basename(cfg.encoder_weights) if cfg.encoder_weights else None,
        "device": str(device),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "parameters": n_params,
        "kept_epoch": chosen_epoch,
        "batchnorm_statistics": bn_note,
        "stopped_early": stopped or None,
        "seconds": round(time.time() - t_start, 1),
        "history": history,
    }
    spec = modelfile.make_spec(
        architecture=arch, backbone=backbone, input_factors=factors, pixel_size_m=float(manifest["pixel_size_m"]),
        tile_size=int(manifest["chip_size"]), norm=cfg.norm, multichannel=multichannel, arch_options=options,
        normalisation=manifest["normalisation"], classes=manifest["classes"], training=training,
        metrics={"val_pa": round(100 * val_scores.pa, 2), "val_miou": round(100 * val_scores.miou, 2),
                 "validation": val_scores.as_dict()},
    )
    model.to("cpu")
    if channels_last:
        model = model.to(memory_format=torch.contiguous_format)
    modelfile.save_model(paths["model"], model, spec)
    if not stopped and len(history) and history[-1]["epoch"] >= cfg.epochs and os.path.exists(paths["checkpoint"]):
        os.remove(paths["checkpoint"])  # finished: the model file has everything; a stopped run keeps it to resume
    if not os.path.exists(paths["checkpoint"]):
        files.pop("checkpoint")
    progress.info(
        f"Model written to {paths['model']} (epoch {chosen_epoch}: validation PA {100 * val_scores.pa:.2f} %, "
        f"MIoU {100 * val_scores.miou:.2f} %)" + (f"; {stopped}" if stopped else "")
    )
    progress.update(100)
    return TrainResult(paths["model"], len(history), its_before + its, history, val_scores, files, stopped)


def _nan_none(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


# ----------------------------------------------------------------------------- CLI


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a landform network from a chip folder (torch + numpy only)",
        description="Train from chips written by 'chips'. Defaults follow Yang et al. (2023).",
    )
    p.add_argument("--chips", required=True, help="chip folder (with manifest.json)")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--architecture", default="fcn_resnet",
                   help="registry name (fcn_resnet, deeplabv3, unet, attention_unet, fcn8s) or preset ("
                   + ", ".join(PRESETS) + ")")
    p.add_argument("--backbone", default=None, help="resnet18/34/50/101 (default: resnet50 for fcn_resnet)")
    p.add_argument("--multichannel", choices=["stack", "per_factor"], default="stack")
    p.add_argument("--norm", choices=["batch", "frozen_batch", "group"], default="batch")
    p.add_argument("--encoder-weights", default=None, help="local .safetensors with torchvision ResNet (ImageNet) weights")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--hold-epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=None, help="default 4 (one channel) / 2 (several)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-weights", choices=["paper", "none"], default="paper")
    p.add_argument("--weight-cap", type=float, default=None, help="cap on class weights (e.g. 20)")
    p.add_argument("--augment", action="store_true", help="random flips and 90-degree rotations")
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--workers", type=int, default=0, help="background loading threads (0 or 1)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--keep", choices=["last", "best"], default="last")
    p.add_argument("--resume", default=None, help="checkpoint to resume from ('auto': the one beside --out)")
    p.add_argument("--bn-recalibrate", type=int, default=0, metavar="BATCHES",
                   help="re-estimate BatchNorm statistics over this many training batches at the end (0 = off)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    cfg = TrainConfig(
        chips=args.chips, out=args.out, architecture=args.architecture, backbone=args.backbone,
        multichannel=args.multichannel, norm=args.norm, encoder_weights=args.encoder_weights, epochs=args.epochs,
        lr=args.lr, hold_epochs=args.hold_epochs, batch_size=args.batch_size, val_fraction=args.val_fraction,
        seed=args.seed, class_weights=args.class_weights, weight_cap=args.weight_cap, augment=args.augment,
        max_iterations=args.max_iterations, max_minutes=args.max_minutes, device=args.device, amp=args.amp,
        channels_last=False if args.no_channels_last else None, num_workers=args.workers, threads=args.threads,
        keep=args.keep, resume=args.resume, bn_recalibrate=args.bn_recalibrate,
    )
    last = [-1]

    def show(p):
        if int(p) // 5 != last[0]:
            last[0] = int(p) // 5
            print(f"  {p:5.1f} %", flush=True)

    res = train(cfg, Progress(set_progress=show, log=lambda m: print(m, flush=True)))
    print(f"model: {res.model_path}")
    for k in ("log_csv", "curve_png", "confusion_csv", "confusion_png", "checkpoint"):
        if k in res.files:
            print(f"{k}: {res.files[k]}")
    return 0
