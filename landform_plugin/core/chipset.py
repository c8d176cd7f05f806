"""A chip set: how it is cut (``ChipConfig``) and, as training reads it, the
manifest, the chips and the split (numpy only).

Written by core.chips (with GDAL) and read here without it, so a chip folder can
be copied to a GPU machine that has torch and numpy but no GDAL or QGIS.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import LandformError
from .label_strategies import DEFAULT_BUFFER_PX, STRATEGIES
from .labels import DEFAULT_CLASSES, LandformClass
from .schema import option

FORMAT = "landform-chips"
VERSION = 1
MANIFEST = "manifest.json"
EXPORT_AGAIN = "export the chips again (Train landform model, or 'python -m landform_plugin.core chips')"


@dataclass
class ChipConfig:
    """How chips are cut (core.chips.export_chips); the user-facing settings declared once
    (core.schema) for the command line and the training algorithm."""

    dems: List[str]
    labels: str
    out_dir: str
    label_field: Optional[str] = None  # polygon layers: the attribute holding the class code
    code_mapping: Optional[Dict[str, Union[int, str]]] = None  # user code -> model class or "ignore"
    factors: List[str] = field(default_factory=lambda: ["dem"])
    normalisation: Optional[Dict[str, dict]] = None  # default: inputs.default_normalisation
    pixel_size_m: Optional[float] = option(None, "PIXEL_SIZE", "Processing resolution [m] (0 = the DEM's)", kind="float",
                                           minimum=0.0, maximum=100000.0, zero_means_none=True, flag="--pixel-size")
    chip_size: int = option(1024, "CHIP_SIZE", "Chip size [pixels, multiple of 32]", minimum=32, maximum=8192,
                            help="the paper: 1024")
    strategy: str = option("original", "STRATEGY", "Boundary labelling (paper Table 4)", choices=tuple(STRATEGIES),
                           choice_labels=("original boundaries", "ignore a buffer around boundaries",
                                          "random labels in the buffer"))
    buffer_px: int = option(DEFAULT_BUFFER_PX, "BUFFER", "Boundary buffer [pixels each side]", minimum=1, maximum=100,
                            flag="--buffer")
    seed: int = option(0, "SEED", "Random seed", processing=False)  # Processing: the training's seed
    robust_copies: int = option(0, "ROBUST_COPIES", "Perturbed copies of each DEM (noise, voids, crops; for robustness)",
                                minimum=0, maximum=50, advanced=True,
                                help="each copy adds random noise, often a smooth error field, voids or a crop, and "
                                     "keeps the labels of the clean DEM (core.perturb)")
    denoise_m: float = option(0.0, "DENOISE", "Denoise the DEM before deriving the inputs [Gaussian sigma, m; 0 = off]",
                              minimum=0.0, maximum=10000.0, advanced=True, flag="--denoise",
                              help="the model file keeps the rule and classification applies it; makes relief and "
                                   "slope inputs steadier under DEM noise (core.inputs)")
    min_labelled: float = option(0.5, "MIN_LABELLED", "Minimum share of labelled valid pixels per chip", minimum=0.0,
                                 maximum=1.0, processing=False)
    classes: List[LandformClass] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    dem_band: int = 1
    overwrite: bool = True


def read_manifest(chip_dir: str) -> dict:
    """Load and check a chip folder's manifest (json only: no GDAL needed)."""
    path = os.path.join(chip_dir, MANIFEST)
    if not os.path.isfile(path):
        raise LandformError(f"'{chip_dir}' is not a chip folder (no {MANIFEST}); export chips first.")
    try:
        with open(path, encoding="utf-8") as fh:
            m = json.load(fh)
    except (OSError, ValueError) as exc:
        raise LandformError(f"The chip manifest '{path}' cannot be read ({exc}); {EXPORT_AGAIN}.") from None
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
        size = int(manifest.get("chip_size", 0))
        self.shape = (len(manifest.get("input_factors", [])), size, size)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        x, y = self._load(item["x"]), self._load(item["y"])
        for name, arr, want in ((item["x"], x, self.shape), (item["y"], y, self.shape[1:])):
            if all(want) and tuple(arr.shape) != want:
                raise LandformError(f"The chip '{os.path.join(self.dir, name)}' has shape {tuple(arr.shape)}, not {want} "
                                    f"as its manifest says; {EXPORT_AGAIN}.")
        if self.augment:
            x, y = augment_pair(x, y, np.random.default_rng([self.seed, self.epoch, i]))
        return x.astype(np.float32, copy=False), y.astype(np.int64)

    def _load(self, name: str) -> np.ndarray:
        path = os.path.join(self.dir, name)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            why = "is missing" if not os.path.exists(path) else f"cannot be read ({exc})"
            raise LandformError(f"The chip '{path}' {why}; {EXPORT_AGAIN}.") from None

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
