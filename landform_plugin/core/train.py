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
  4.5) is the reading that trained well when measured. A rare class gets a
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
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from . import devices, metrics, modelfile
from .chipset import FORMAT, MANIFEST, VERSION, ChipSet, augment_pair, read_manifest, split_chips  # noqa: F401 (re-exported)
from .errors import Cancelled, LandformError
from .inputs import DENOISE
from .nets.registry import MULTICHANNEL_MODES, NORMS, PRESETS, resolve_architecture  # noqa: F401 (re-exported)
from .outputs import OutputSet, check_output_path
from .progress import Progress
from .schema import add_cli_options, from_cli, option


# The consistency term's views are cut this many cells smaller than the chip, at a random offset
# of 0..CONSISTENCY_SHIFT cells: one whole stride of a ResNet (32), so every phase occurs.
CONSISTENCY_SHIFT = 32


@dataclass
class TrainConfig:
    """The settings of a training run; each user-facing one declared once (core.schema)
    for the command line and the Processing algorithm alike."""

    chips: str
    out: str
    architecture: str = "fcn_resnet"  # registry name or a nets.registry.PRESETS key
    backbone: Optional[str] = None  # None: the architecture's default (resnet50 for fcn_resnet)
    multichannel: str = option(
        "per_factor", "MULTICHANNEL", "Several factors", choices=MULTICHANNEL_MODES[::-1], advanced=True,
        choice_labels=("one encoder per factor (paper)", "stacked channels, one encoder"),
        help="per_factor: one encoder per factor (the paper's); stack: all factors as channels of one encoder")
    norm: str = option("batch", "NORM", "Normalisation layers", choices=NORMS, processing=False)
    arch_options: Dict[str, object] = field(default_factory=dict)
    encoder_weights: Optional[str] = None  # local .safetensors with torchvision ResNet weights
    init_model: Optional[str] = None  # a landform model file to fine-tune: its network and weights replace the above
    epochs: int = option(50, "EPOCHS", "Epochs", minimum=1, maximum=10000, advanced=True)
    lr: float = option(1e-5, "LR", "Learning rate", minimum=1e-9, maximum=1.0, advanced=True)
    hold_epochs: int = option(20, "HOLD_EPOCHS", "Epochs at the full learning rate", minimum=0, maximum=10000, advanced=True)
    batch_size: Optional[int] = option(None, "BATCH_SIZE", "Batch size [chips] (0 = 4 for one factor, 2 for several)",
                                       kind="int", minimum=0, maximum=1024, advanced=True, zero_means_none=True)
    val_fraction: float = option(0.2, "VAL_FRACTION", "Validation share", minimum=0.01, maximum=0.9, advanced=True)
    seed: int = option(0, "SEED", "Random seed", minimum=0, maximum=2**31 - 1, advanced=True)
    class_weights: str = option("paper", "CLASS_WEIGHTS", "Class weights", choices=("paper", "none"), processing=False,
                                help="paper: 1 + 1/share of each class")
    weight_cap: Optional[float] = option(None, "WEIGHT_CAP", "Class weight cap (0 = none)", kind="float", minimum=0.0,
                                         maximum=1e6, advanced=True, zero_means_none=True, help="e.g. 20")
    augment: bool = option(False, "AUGMENT", "Flip/rotate augmentation", advanced=True)
    consistency: float = option(
        0.0, "CONSISTENCY", "Shift/flip consistency weight (0 = off)", minimum=0.0, maximum=100.0, advanced=True,
        help="adds this weight times the divergence between each chip's prediction and that of a copy shifted "
             "by up to a stride, cut by as much and flipped (asks for the same classes under shifts and flips); "
             "one more forward and backward pass per batch on that copy: 1.6x the work at 128-cell chips")
    max_minutes: Optional[float] = option(None, "MAX_MINUTES", "Time limit [minutes] (0 = none)", kind="float",
                                          minimum=0.0, maximum=1e6, advanced=True, zero_means_none=True)
    max_iterations: Optional[int] = option(None, "MAX_ITERATIONS", "Iteration limit [batches] (0 = none)", kind="int",
                                           minimum=0, maximum=10**9, advanced=True, zero_means_none=True)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = option("auto", "AMP", "Mixed precision", choices=("auto", "on", "off"), processing=False,
                      help="auto: bf16/fp16 on CUDA, bf16 on CPUs with AVX512-BF16/AMX")
    channels_last: Optional[bool] = None  # None: on for CUDA, off for CPU (slower here)
    num_workers: int = option(0, "WORKERS", "Background loading threads (0 or 1)", processing=False, flag="--workers")
    threads: Optional[int] = option(None, "THREADS", "Torch CPU threads", kind="int", processing=False)
    keep: str = option("last", "KEEP", "Weights to keep", choices=("last", "best"), processing=False,
                       help="best: the epoch with the highest validation MIoU")
    resume: Optional[str] = None  # checkpoint path, or "auto" for <stem>.checkpoint.safetensors
    checkpoint_every_epoch: bool = True
    bn_recalibrate: int = option(0, "BN_RECALIBRATE", "Re-estimate BatchNorm statistics over N training batches at the end "
                                 "(0 = off)", minimum=0, maximum=100000, advanced=True)


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
    paths = {
        "model": out,
        "log_csv": stem + "_training.csv",
        "curve_png": stem + "_training.png",
        "confusion_csv": stem + "_val_confusion.csv",
        "confusion_png": stem + "_val_confusion.png",
        "checkpoint": stem + ".checkpoint.safetensors",
    }
    for path in paths.values():  # every file goes next to the model: check the folder before any work
        check_output_path(path)
    return paths


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

    tensors = {f"model.{k}": v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    osd = optimizer.state_dict()
    for pid, st in osd["state"].items():
        for name, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(float(v))
            tensors[f"optim.{pid}.{name}"] = t.detach().to("cpu").contiguous()
    meta = dict(meta)
    meta["param_groups"] = osd["param_groups"]
    with OutputSet() as out:
        modelfile.write_safetensors(out.file(path), tensors, {"landform_checkpoint": json.dumps(meta)}, path)
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


# ----------------------------------------------------------------------------- training engine


class Step:
    """What every batch needs: the device, the precision and the loss (weighted
    cross-entropy over labelled pixels, eq. 1) with the confusion counts."""

    def __init__(self, device, num_classes: int, ignore: int, weights=None, dtype=None, channels_last: bool = False):
        self.device, self.num_classes, self.ignore = device, num_classes, ignore
        self.weights, self.dtype, self.channels_last = weights, dtype, channels_last

    def to_device(self, xb, yb):
        import torch

        x = torch.from_numpy(xb).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(yb).to(self.device, non_blocking=True)

    def autocast(self):
        return devices.autocast(self.device, self.dtype)

    def loss_and_cm(self, logits, y):
        import torch
        import torch.nn.functional as F

        n = self.num_classes
        logits = logits.float()
        valid = y != self.ignore
        n_valid = valid.sum()
        loss = F.cross_entropy(logits, y, weight=self.weights, ignore_index=self.ignore, reduction="sum") / n_valid.clamp(min=1)
        pred = logits.argmax(1)
        cm = torch.bincount(y[valid] * n + pred[valid], minlength=n * n).reshape(n, n)
        return loss, cm, int(n_valid)


def view_consistency_loss(model, x, y, logits, rng: np.random.Generator, ignore: int = 255,
                          shift: int = CONSISTENCY_SHIFT):
    """Divergence of a shifted, cut and flipped view's prediction from the whole chip's.

    A strided network's output depends on where the terrain falls on its stride (a 32-cell
    grid for a ResNet) and on how much context it sees: a DEM shifted by one cell, flipped
    or cut changes a few percent of the classes though the terrain is the same. Here the
    batch ``x`` (whose prediction is ``logits``) is predicted again in a view ``shift`` cells
    smaller, at a random offset (so a random phase on the stride), in a random one of the 8
    flips and rotations. The view's log-probabilities are pulled towards the whole chip's
    (held fixed: the chip has the wider context) by their KL divergence, averaged over the
    labelled cells (``y != ignore``) the two share.
    """
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if h <= shift or w <= shift:
        return logits.new_zeros(())
    dy, dx, k, flip = (int(v) for v in rng.integers(0, (shift + 1, shift + 1, 4, 2)))
    rows, cols = slice(dy, dy + h - shift), slice(dx, dx + w - shift)
    view = x[..., rows, cols]
    view = torch.rot90(view.flip(-1) if flip else view, k, (-2, -1))
    pred = torch.rot90(model(view).float(), -k, (-2, -1))
    pred = pred.flip(-1) if flip else pred
    target = F.log_softmax(logits.detach().float()[..., rows, cols], dim=1)
    labelled = (y[..., rows, cols] != ignore).unsqueeze(1)
    kl = (target.exp() * (target - F.log_softmax(pred, dim=1))).sum(1, keepdim=True)
    return (kl * labelled).sum() / labelled.sum().clamp(min=1)


def evaluate_chips(model, chipset: ChipSet, step: Step, batch_size: int, progress: Progress, workers: int = 0):
    """Confusion matrix and summed loss over ``chipset``, always in eval mode (BatchNorm
    with running statistics, as classification runs). Returns (cm, loss_sum, pixels)."""
    import torch

    model.eval()
    cm_val = torch.zeros(step.num_classes, step.num_classes, dtype=torch.int64, device=step.device)
    loss_sum, n = 0.0, 0
    with torch.no_grad():
        for xb, yb in _prefetch(chipset.batches(batch_size, False), workers):
            progress.check()
            x, y = step.to_device(xb, yb)
            with step.autocast():
                out = model(x)
            loss, cm_b, nv = step.loss_and_cm(out, y)
            cm_val += cm_b
            loss_sum += float(loss) * nv
            n += nv
    return cm_val.cpu().numpy(), loss_sum, n


def recalibrate_batchnorm(model, chipset: ChipSet, batches: int, batch_size: int, step: Step, progress: Progress) -> int:
    """Re-estimate BatchNorm running statistics as exact averages over ``batches`` training
    batches (no gradient). BatchNorm trained at small batch from scratch can collapse in eval
    mode; this fixes its statistics without changing weights.
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
                with step.autocast():
                    model(step.to_device(xb, yb)[0])
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


class Trainer:
    """One training run, in the shape of torchgeo's trainers: ``setup`` (data, model,
    resume), ``train_epoch``, ``validate``, ``checkpoint`` and ``finish`` (BatchNorm
    statistics, the model file and its reports, written together or not at all)."""

    def __init__(self, cfg: TrainConfig, progress: Optional[Progress] = None):
        self.cfg = cfg
        self.progress = progress or Progress()
        self.t_start = time.time()
        self.history: List[dict] = []
        self.best = {"miou": -1.0, "epoch": None, "state": None, "cm": None}
        self.its, self.its_before, self.stopped, self.last_cm = 0, 0, "", None

    def fit(self) -> TrainResult:
        self.setup()
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.end_epoch(epoch, self.train_epoch(epoch))
                if self.stopped:
                    break
        except Cancelled:
            raise Cancelled(f"training cancelled: {self._kept()}") from None
        return self.finish()

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        self._setup_data()
        self._setup_model()
        self._resume()
        cfg = self.cfg
        self.train_set = ChipSet(cfg.chips, self.manifest, self.train_ids, cfg.augment, cfg.seed)
        self.val_set = ChipSet(cfg.chips, self.manifest, self.val_ids, False, cfg.seed)
        self.view_rng = np.random.default_rng([cfg.seed, 4099, self.start_epoch])  # the consistency term's views
        bs = self.batch_size
        n_batches = len(self.train_set) // bs + (1 if len(self.train_set) % bs > 1 else 0)
        self.total_its = max(1, (cfg.epochs - self.start_epoch) * n_batches)
        if cfg.max_iterations:
            self.total_its = min(self.total_its, int(cfg.max_iterations))
        self.deadline = self.t_start + 60.0 * cfg.max_minutes if cfg.max_minutes else None
        self.its_before = int(self.history[-1]["iterations"]) if self.history else 0

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.manifest = m = read_manifest(cfg.chips)
        self.paths = output_paths(cfg.out)
        self.arch, self.backbone = resolve_architecture(cfg.architecture, cfg.backbone)
        self.factors = list(m["input_factors"])
        self.num_classes = n = int(m["num_classes"])
        if cfg.keep not in ("last", "best"):
            raise LandformError("keep must be 'last' or 'best'.")
        if cfg.epochs < 1:
            raise LandformError("Train for at least one epoch.")
        single = len(self.factors) == 1
        self.multichannel = "stack" if cfg.multichannel == "per_factor" and single else cfg.multichannel  # same for one
        self.batch_size = int(cfg.batch_size or (4 if single else 2))
        self.train_ids, self.val_ids = split_chips(len(m["chips"]), cfg.val_fraction, cfg.seed)
        self.counts = np.zeros(n, dtype=np.int64)
        for i in self.train_ids:
            self.counts += np.asarray(m["chips"][i]["class_counts"][:n], dtype=np.int64)
        if cfg.class_weights not in ("paper", "none"):
            raise LandformError("class_weights must be 'paper' or 'none'.")
        self.weights = paper_class_weights(self.counts, cfg.weight_cap) if cfg.class_weights == "paper" else np.ones(n)
        names = [c["name"] for c in m["classes"]]
        self.progress.info(
            f"{len(self.train_ids)} training / {len(self.val_ids)} validation chips of {m['chip_size']} px; "
            f"classes in training: {', '.join(names[c] for c in range(n) if self.counts[c] > 0)}; weights "
            + ", ".join(f"{names[c]} {self.weights[c]:.2f}" for c in range(n))
        )

    def _setup_model(self) -> None:
        from .errors import import_torch
        from .nets.registry import build_model, count_parameters

        torch = import_torch()
        cfg = self.cfg
        device = devices.resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.options = {k: v for k, v in cfg.arch_options.items() if k != "norm"}
        self.norm = cfg.norm
        if cfg.init_model:
            model = self._initial_model()
        else:
            model = build_model(self.arch, self.backbone, len(self.factors), self.num_classes, self.multichannel,
                                cfg.encoder_weights, norm=cfg.norm, **self.options)
        self.n_params = count_parameters(model)
        channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
        model.to(device)
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        dtype = devices.autocast_dtype(device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda") if (dtype == torch.float16 and device.type == "cuda") else None
        self.use_aux = hasattr(model, "forward_with_aux") and getattr(model, "aux_classifier", None) is not None
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        wt = torch.tensor(self.weights, dtype=torch.float32, device=device)
        ignore = int(self.manifest.get("ignore_index", 255))
        self.step = Step(device, self.num_classes, ignore, wt, dtype, channels_last)
        self.progress.info(f"{self.arch}/{self.backbone} ({self.multichannel}), {self.n_params / 1e6:.2f} M parameters, "
                           f"on {device}" + (f" with {_dtype_name(dtype)} autocast" if dtype else ""))

    def _initial_model(self):
        """The network and weights of ``cfg.init_model`` (fine-tuning), checked against the chips:
        same input factors and normalisation, same number of classes."""
        path = self.cfg.init_model
        model, spec = modelfile.load_model(path, expect_factors=self.factors)
        m = self.manifest
        if len(spec["classes"]) != self.num_classes:
            raise LandformError(f"The model to fine-tune, '{path}', has {len(spec['classes'])} classes; the chips have "
                                f"{self.num_classes}.")
        strip = lambda norm: {k: v for k, v in norm.items() if k != DENOISE}  # noqa: E731
        if strip(spec["normalisation"]) != strip(m["normalisation"]):
            raise LandformError(f"The model to fine-tune, '{path}', normalises its inputs differently from the chips "
                                f"({spec['normalisation']} vs {m['normalisation']}); export the chips with its rules.")
        if spec["normalisation"].get(DENOISE) != m["normalisation"].get(DENOISE):
            # the weights adapt to a denoised (or no longer denoised) DEM; the new file keeps the chips' rule
            self.progress.info(f"The chips denoise the DEM as {m['normalisation'].get(DENOISE) or 'not at all'}, the "
                               f"model to fine-tune as {spec['normalisation'].get(DENOISE) or 'not at all'}: the new "
                               "model will use the chips' rule.")
        if abs(float(spec["pixel_size_m"]) - float(m["pixel_size_m"])) > 0.05 * float(spec["pixel_size_m"]):
            self.progress.info(f"Warning: the model to fine-tune was trained at {spec['pixel_size_m']:g} m, the chips are "
                               f"at {m['pixel_size_m']:g} m.")
        self.arch, self.backbone, self.multichannel = spec["architecture"], spec["backbone"], spec["multichannel"]
        self.norm, self.options = spec["norm"], dict(spec.get("arch_options") or {})
        self.progress.info(f"fine-tuning {os.path.basename(path)} ({self.arch}/{self.backbone})")
        model.train()
        return model

    def _resume(self) -> None:
        self.start_epoch = 0
        resume = self.paths["checkpoint"] if self.cfg.resume == "auto" else self.cfg.resume
        if not resume:
            return
        meta = load_checkpoint(resume, self.model, self.optimizer, self.step.device)
        if (meta.get("architecture"), meta.get("backbone"), meta.get("input_factors")) != (self.arch, self.backbone, self.factors):
            raise LandformError(
                f"Checkpoint '{resume}' is for {meta.get('architecture')}/{meta.get('backbone')} on "
                f"{meta.get('input_factors')}, not {self.arch}/{self.backbone} on {self.factors}."
            )
        self.history = list(meta.get("history", []))
        self.start_epoch = int(meta["epoch"]) + 1
        if meta.get("best_epoch") is not None:
            self.best["miou"], self.best["epoch"] = float(meta.get("best_miou", -1)), int(meta["best_epoch"])
        self.progress.info(f"Resumed from '{resume}' after epoch {self.start_epoch} (of {self.cfg.epochs}).")

    # ------------------------------------------------------------------ epochs

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training chips; returns its learning rate, confusion matrix, summed loss,
        labelled pixels and start time."""
        import torch

        cfg, t_ep = self.cfg, time.time()
        lr = lr_at(epoch, cfg.lr, cfg.hold_epochs, cfg.epochs)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.train_set.epoch = epoch
        self.model.train()
        cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self.step.device)
        loss_sum, n = 0.0, 0
        for xb, yb in _prefetch(self.train_set.batches(self.batch_size, True), cfg.num_workers):
            self.progress.check()
            done = self._train_batch(xb, yb, epoch)
            if done is None:
                continue
            loss_val, cm_b, nv = done
            cm += cm_b
            loss_sum += loss_val * nv
            n += nv
            self.its += 1
            self.progress.update(100.0 * self.its / self.total_its)
            if self._limit_reached():
                break
        return {"lr": lr, "cm": cm.cpu().numpy(), "loss_sum": loss_sum, "pixels": n, "start": t_ep}

    def _train_batch(self, xb, yb, epoch: int):
        step = self.step
        x, y = step.to_device(xb, yb)
        self.optimizer.zero_grad(set_to_none=True)
        with step.autocast():
            out, aux = self.model.forward_with_aux(x) if self.use_aux else (self.model(x), None)
        loss, cm_b, nv = step.loss_and_cm(out, y)
        if nv == 0:
            return None
        if aux is not None:  # DeepLabv3's auxiliary head, weight 0.5 (torchvision's recipe)
            loss = loss + 0.5 * step.loss_and_cm(aux, y)[0]
        if self.cfg.consistency > 0:
            with step.autocast():
                term = view_consistency_loss(self.model, x, y, out, self.view_rng, step.ignore)
            loss = loss + self.cfg.consistency * term
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        loss_val = float(loss.detach())
        if not math.isfinite(loss_val):
            raise LandformError(
                f"Training diverged (loss {loss_val}) in epoch {epoch + 1}; lower the learning rate or turn off mixed precision."
            )
        return loss_val, cm_b, nv

    def _limit_reached(self) -> bool:
        cfg = self.cfg
        if cfg.max_iterations and self.its >= cfg.max_iterations:
            self.stopped = f"stopped after {self.its} iterations (max_iterations)"
        elif self.deadline and time.time() > self.deadline:
            self.stopped = f"stopped after {cfg.max_minutes:g} minutes (max_minutes)"
        return bool(self.stopped)

    def validate(self):
        """(confusion matrix, summed loss, pixels) of the validation chips."""
        return evaluate_chips(self.model, self.val_set, self.step, self.batch_size, self.progress, self.cfg.num_workers)

    def end_epoch(self, epoch: int, stats: dict) -> None:
        """Validate, log the epoch, remember the best one, checkpoint."""
        cm_val, vloss_sum, vloss_n = self.validate()
        cm_tr, self.last_cm = stats["cm"], cm_val
        row = {
            "epoch": epoch + 1, "iterations": self.its_before + self.its, "lr": stats["lr"],
            "train_loss": stats["loss_sum"] / max(1, stats["pixels"]),
            "train_pa": _nan_none(metrics.pixel_accuracy(cm_tr)), "train_miou": _nan_none(metrics.mean_iou(cm_tr)),
            "val_loss": vloss_sum / max(1, vloss_n),
            "val_pa": _nan_none(metrics.pixel_accuracy(cm_val)), "val_miou": _nan_none(metrics.mean_iou(cm_val)),
            "seconds": round(time.time() - stats["start"], 3),
        }
        self.history.append(row)
        self.progress.info(
            f"epoch {epoch + 1}/{self.cfg.epochs}: lr {row['lr']:.2e}, loss {row['train_loss']:.4f} / val {row['val_loss']:.4f}, "
            f"val PA {100 * (row['val_pa'] or 0):.2f} %, MIoU {100 * (row['val_miou'] or 0):.2f} % ({row['seconds']:.1f} s)"
        )
        vm = row["val_miou"] if row["val_miou"] is not None else -1.0
        if vm > self.best["miou"]:
            self.best.update(miou=vm, epoch=epoch + 1, cm=cm_val)
            if self.cfg.keep == "best":
                self.best["state"] = {k: v.detach().to("cpu").clone() for k, v in self.model.state_dict().items()}
        with OutputSet() as out:
            write_history_csv(self.history, out.file(self.paths["log_csv"]))
        if self.cfg.checkpoint_every_epoch:
            self.checkpoint(epoch)

    def checkpoint(self, epoch: int) -> None:
        save_checkpoint(self.paths["checkpoint"], self.model, self.optimizer, {
            "epoch": epoch, "architecture": self.arch, "backbone": self.backbone, "input_factors": self.factors,
            "history": self.history, "config": _jsonable(asdict(self.cfg)), "best_epoch": self.best["epoch"],
            "best_miou": self.best["miou"],
        })

    def _kept(self) -> str:
        ckpt = self.paths["checkpoint"]
        if self.history and self.cfg.checkpoint_every_epoch and os.path.exists(ckpt):
            return f"the last completed epoch ({self.history[-1]['epoch']}) is kept in '{ckpt}'; resume from it to continue"
        return "no epoch was completed"

    # ------------------------------------------------------------------ finish

    def finish(self) -> TrainResult:
        """Choose the kept weights, re-estimate BatchNorm if asked, write the model and its reports."""
        if self.cfg.keep == "best" and self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])
            final_cm, chosen = self.best["cm"], self.best["epoch"]
        else:
            final_cm, chosen = self.last_cm, (self.history[-1]["epoch"] if self.history else None)
        if final_cm is None:
            raise LandformError("No epoch was completed; nothing to save.")
        final_cm, bn_note = self._recalibrate(final_cm)
        val_scores = metrics.scores(final_cm, [c["name"] for c in self.manifest["classes"]])
        files = self._write_outputs(final_cm, val_scores, chosen, bn_note)
        paths = self.paths
        finished = not self.stopped and self.history and self.history[-1]["epoch"] >= self.cfg.epochs
        if finished and os.path.exists(paths["checkpoint"]):
            os.remove(paths["checkpoint"])  # finished: the model file has everything; a stopped run keeps it to resume
        if not os.path.exists(paths["checkpoint"]):
            files.pop("checkpoint")
        self.progress.info(
            f"Model written to {paths['model']} (epoch {chosen}: validation PA {100 * val_scores.pa:.2f} %, "
            f"MIoU {100 * val_scores.miou:.2f} %)" + (f"; {self.stopped}" if self.stopped else "")
        )
        self.progress.update(100)
        return TrainResult(paths["model"], len(self.history), self.its_before + self.its, self.history, val_scores,
                           files, self.stopped)

    def _recalibrate(self, final_cm):
        n = int(self.cfg.bn_recalibrate)
        if n <= 0 or not recalibrate_batchnorm(self.model, self.train_set, n, self.batch_size, self.step, self.progress):
            return final_cm, None
        before = metrics.mean_iou(final_cm)
        final_cm = self.validate()[0]
        note = f"re-estimated over {n} training batches"
        self.progress.info(f"BatchNorm statistics {note}: validation MIoU {100 * before:.2f} % -> "
                           f"{100 * metrics.mean_iou(final_cm):.2f} %")
        return final_cm, note

    def _write_outputs(self, final_cm, val_scores, chosen, bn_note) -> Dict[str, str]:
        """The model file, the validation confusion matrix and the figures: all of them or none."""
        import torch

        paths, files = self.paths, dict(self.paths)
        names = [c["name"] for c in self.manifest["classes"]]
        with OutputSet(inputs=[self.cfg.chips]) as out:
            metrics.write_confusion_csv(final_cm, names, out.file(paths["confusion_csv"]))
            try:
                import matplotlib  # noqa: F401
            except ImportError:  # a bare GPU box without matplotlib: the CSVs hold the same numbers
                self.progress.info("matplotlib is not installed: no PNG figures (the CSV files hold the numbers).")
                files.pop("confusion_png")
                files.pop("curve_png")
            else:
                metrics.plot_confusion_matrix(final_cm, names, out.file(paths["confusion_png"]),
                                              title=f"Validation, epoch {chosen}: PA {100 * val_scores.pa:.2f} %, "
                                                    f"MIoU {100 * val_scores.miou:.2f} %")
                plot_history(self.history, out.file(paths["curve_png"]))
            spec = self._spec(val_scores, chosen, bn_note)
            self.model.to("cpu")
            if self.step.channels_last:
                self.model = self.model.to(memory_format=torch.contiguous_format)
            modelfile.save_model(paths["model"], self.model, spec, outputs=out)
        return files

    def _spec(self, val_scores, chosen, bn_note) -> dict:
        m = self.manifest
        return modelfile.make_spec(
            architecture=self.arch, backbone=self.backbone, input_factors=self.factors,
            pixel_size_m=float(m["pixel_size_m"]), tile_size=int(m["chip_size"]), norm=self.norm,
            multichannel=self.multichannel, arch_options=self.options, normalisation=m["normalisation"],
            classes=m["classes"], training=self._training_summary(chosen, bn_note),
            metrics={"val_pa": round(100 * val_scores.pa, 2), "val_miou": round(100 * val_scores.miou, 2),
                     "validation": val_scores.as_dict()},
        )

    def _training_summary(self, chosen, bn_note) -> dict:
        cfg, m = self.cfg, self.manifest
        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "chips": os.path.abspath(cfg.chips), "chip_size": m["chip_size"],
            "sources": [os.path.basename(s["dem"]) for s in m.get("sources", [])],
            "label_strategy": m.get("label_strategy"), "code_mapping": m.get("code_mapping"),
            "train_chips": len(self.train_ids), "val_chips": len(self.val_ids), "split_seed": cfg.seed,
            "class_pixel_counts_train": self.counts.tolist(),
            "class_weights": [round(float(w), 6) for w in self.weights], "weight_cap": cfg.weight_cap,
            "optimizer": "Adam", "lr": cfg.lr,
            "schedule": f"held {cfg.hold_epochs} epochs, linear to 0 at epoch {cfg.epochs}",
            "epochs_planned": cfg.epochs, "epochs_done": len(self.history), "iterations": self.its_before + self.its,
            "batch_size": self.batch_size, "augment": cfg.augment, "consistency": cfg.consistency,
            "encoder_weights": os.path.basename(cfg.encoder_weights) if cfg.encoder_weights else None,
            "init_model": os.path.basename(cfg.init_model) if cfg.init_model else None,
            "device": str(self.step.device), "amp": _dtype_name(self.step.dtype) if self.step.dtype else None,
            "parameters": self.n_params, "kept_epoch": chosen, "batchnorm_statistics": bn_note,
            "stopped_early": self.stopped or None, "seconds": round(time.time() - self.t_start, 1),
            "history": self.history,
        }


def train(cfg: TrainConfig, progress: Optional[Progress] = None) -> TrainResult:
    """Train per ``cfg``; write the model file and logs; return a summary."""
    return Trainer(cfg, progress).fit()


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


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
    p.add_argument("--encoder-weights", default=None, help="local .safetensors with torchvision ResNet (ImageNet) weights")
    p.add_argument("--init-model", default=None,
                   help="fine-tune this landform model file (its network and weights; --architecture is ignored)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--resume", default=None, help="checkpoint to resume from ('auto': the one beside --out)")
    add_cli_options(p, TrainConfig)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    cfg = from_cli(
        TrainConfig, args, chips=args.chips, out=args.out, architecture=args.architecture, backbone=args.backbone,
        encoder_weights=args.encoder_weights, init_model=args.init_model, device=args.device, resume=args.resume,
        channels_last=False if args.no_channels_last else None,
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
