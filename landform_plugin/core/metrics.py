"""Accuracy of a landform map: confusion matrix, PA and MIoU as in Yang et al. (2023).

The paper (section 2.3, equations 2 and 3) computes both numbers from one
confusion matrix over k + 1 classes, class 0 "no data" included::

    PA   = sum_i p_ii / sum_i sum_j p_ij
    MIoU = 1/(k+1) sum_i p_ii / (sum_j p_ij + sum_j p_ji - p_ii)

Here ``cm[i, j]`` counts pixels whose REFERENCE class is i and whose PREDICTED
class is j (rows = reference, columns = prediction, as in the paper's Fig. 6).

Classes absent from both the reference and the prediction have an IoU of 0/0.
The paper does not say what it did with them (all its classes occur in every
evaluated set). Here such a class has an undefined IoU (NaN) and is left out of
the mean, so MIoU is the mean over the classes that occur in the reference or
the prediction. A class that occurs in only one of the two has IoU 0 and counts.
Precision (p_jj / column sum) and recall (p_ii / row sum, the paper's per-class
"accuracy" in Fig. 6) are likewise NaN where their denominator is 0.

Pixels whose reference equals ``ignore_index`` (255 by default: unlabelled
pixels and the discarded boundary buffer of label_strategies) are not counted.
"""
import csv
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(
    reference: np.ndarray,
    predicted: np.ndarray,
    num_classes: int,
    ignore_index: Optional[int] = IGNORE_INDEX,
    mask: Optional[np.ndarray] = None,
) -> np.ndarray:
    """(num_classes x num_classes) int64 matrix, rows = reference, columns = prediction.

    Pixels where ``reference == ignore_index`` or ``mask`` is False are skipped.
    Any other value outside 0..num_classes-1 in either array is an error
    (ValueError naming the value), since silently dropping it would bias PA.
    """
    ref = np.asarray(reference)
    pred = np.asarray(predicted)
    if ref.shape != pred.shape:
        raise ValueError(f"reference {ref.shape} and prediction {pred.shape} differ in shape")
    ref = ref.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    keep = np.ones(ref.shape, dtype=bool)
    if ignore_index is not None:
        keep &= ref != ignore_index
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool).ravel()
    ref = ref[keep]
    pred = pred[keep]
    for name, arr in (("reference", ref), ("prediction", pred)):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            values = sorted(set(np.unique(arr[bad]).tolist()))[:10]
            raise ValueError(f"{name} holds class values {values} outside 0..{num_classes - 1}")
    return np.bincount(ref * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def pixel_accuracy(cm: np.ndarray) -> float:
    """Paper eq. 2; NaN for an empty matrix."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU (paper eq. 3 summand); NaN where the class is in neither map."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(axis=1) + cm.sum(axis=0) - tp)


def mean_iou(cm: np.ndarray) -> float:
    """Paper eq. 3 over the classes whose IoU is defined (see module docstring)."""
    iou = iou_per_class(cm)
    ok = ~np.isnan(iou)
    return float(iou[ok].mean()) if ok.any() else float("nan")


def precision_per_class(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    return _ratio(np.diag(cm), cm.sum(axis=0))


def recall_per_class(cm: np.ndarray) -> np.ndarray:
    cm = np.asarray(cm, dtype=np.float64)
    return _ratio(np.diag(cm), cm.sum(axis=1))


def row_normalised(cm: np.ndarray) -> np.ndarray:
    """Each reference row divided by its total (rows of absent classes are 0), as in Fig. 6."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


@dataclass
class Scores:
    """Everything computed from one confusion matrix."""

    confusion: np.ndarray
    class_names: List[str]
    pa: float
    miou: float
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    reference_pixels: np.ndarray
    predicted_pixels: np.ndarray
    extra: Dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    def as_dict(self) -> dict:
        """JSON-friendly (NaN -> None), used inside model files and reports."""

        def clean(v):
            v = float(v)
            return None if math.isnan(v) else v

        return {
            "pa": clean(self.pa),
            "miou": clean(self.miou),
            "pixels": self.total,
            "per_class": {
                name: {
                    "iou": clean(self.iou[i]),
                    "precision": clean(self.precision[i]),
                    "recall": clean(self.recall[i]),
                    "reference_pixels": int(self.reference_pixels[i]),
                    "predicted_pixels": int(self.predicted_pixels[i]),
                }
                for i, name in enumerate(self.class_names)
            },
            "confusion_matrix": self.confusion.astype(np.int64).tolist(),
        }


def scores(cm: np.ndarray, class_names: Optional[Sequence[str]] = None) -> Scores:
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    return Scores(
        confusion=cm,
        class_names=names,
        pa=pixel_accuracy(cm),
        miou=mean_iou(cm),
        iou=iou_per_class(cm),
        precision=precision_per_class(cm),
        recall=recall_per_class(cm),
        reference_pixels=cm.sum(axis=1),
        predicted_pixels=cm.sum(axis=0),
    )


# ----------------------------------------------------------------------------- files


def write_confusion_csv(cm: np.ndarray, class_names: Sequence[str], path: str) -> str:
    """Counts with a header row of predicted classes and a first column of reference classes,
    then a blank line and the per-class table (IoU, precision, recall in percent)."""
    s = scores(cm, class_names)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def pct(v):
        return "" if math.isnan(v) else f"{100.0 * v:.2f}"

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["reference \\ predicted"] + list(class_names) + ["total"])
        for i, name in enumerate(class_names):
            w.writerow([name] + [int(v) for v in cm[i]] + [int(cm[i].sum())])
        w.writerow(["total"] + [int(v) for v in cm.sum(axis=0)] + [int(cm.sum())])
        w.writerow([])
        w.writerow(["class", "IoU %", "precision %", "recall %", "reference pixels", "predicted pixels"])
        for i, name in enumerate(class_names):
            w.writerow(
                [name, pct(s.iou[i]), pct(s.precision[i]), pct(s.recall[i]), int(s.reference_pixels[i]),
                 int(s.predicted_pixels[i])]
            )
        w.writerow([])
        w.writerow(["PA %", pct(s.pa)])
        w.writerow(["MIoU %", pct(s.miou)])
    return path


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: str, title: str = "") -> str:
    """Row-normalised matrix as a heat map with percentages, like the paper's Fig. 6 (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    norm = row_normalised(cm) * 100.0
    n = len(class_names)
    fig = Figure(figsize=(1.2 * n + 2.2, 1.1 * n + 1.6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{norm[i, j]:.1f}", ha="center", va="center",
                    color="white" if norm[i, j] > 55 else "black", fontsize=9)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=30, ha="right")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("Reference class")
    s = scores(cm, class_names)
    ax.set_title(title or f"PA {100 * s.pa:.2f} %  MIoU {100 * s.miou:.2f} %", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of reference row")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path
