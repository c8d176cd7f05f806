"""Metrics against confusion matrices computed by hand (paper eq. 2-3)."""
import csv
import math

import numpy as np
import pytest

from landform_plugin.core import metrics


def test_confusion_matrix_by_hand_with_class_absent_from_both():
    ref = np.array([[0, 1, 1, 2], [2, 2, 3, 255]])
    pred = np.array([[0, 1, 2, 2], [2, 1, 3, 4]])  # last pixel ignored via the reference
    cm = metrics.confusion_matrix(ref, pred, 5)
    expected = np.array(
        [
            [1, 0, 0, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 2, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(cm, expected)
    s = metrics.scores(cm, ["nd", "plain", "platform", "hill", "mountain"])
    assert s.pa == pytest.approx(5 / 7)
    # IoU: 1/1, 1/(2+2-1), 2/(3+3-2), 1/1, mountain absent from both -> NaN, excluded
    np.testing.assert_allclose(s.iou[:4], [1.0, 1 / 3, 0.5, 1.0])
    assert math.isnan(s.iou[4])
    assert s.miou == pytest.approx((1 + 1 / 3 + 0.5 + 1) / 4)
    np.testing.assert_allclose(s.precision[:4], [1.0, 0.5, 2 / 3, 1.0])
    np.testing.assert_allclose(s.recall[:4], [1.0, 0.5, 2 / 3, 1.0])
    assert math.isnan(s.precision[4]) and math.isnan(s.recall[4])
    d = s.as_dict()
    assert d["per_class"]["mountain"]["iou"] is None
    assert d["pixels"] == 7


def test_class_absent_from_reference_but_predicted_counts_as_zero_iou():
    ref = np.array([1, 1, 1, 1])
    pred = np.array([1, 1, 1, 4])
    cm = metrics.confusion_matrix(ref, pred, 5)
    assert cm[1, 1] == 3 and cm[1, 4] == 1 and cm.sum() == 4
    iou = metrics.iou_per_class(cm)
    assert iou[1] == pytest.approx(3 / 4)
    assert iou[4] == 0.0
    assert np.isnan(iou[[0, 2, 3]]).all()
    assert metrics.mean_iou(cm) == pytest.approx((0.75 + 0.0) / 2)
    assert metrics.precision_per_class(cm)[4] == 0.0
    assert math.isnan(metrics.recall_per_class(cm)[4])
    assert metrics.pixel_accuracy(cm) == pytest.approx(0.75)


def test_paper_formula_equals_textbook_iou_on_random_maps():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 5, (50, 60))
    pred = np.where(rng.random((50, 60)) < 0.7, ref, rng.integers(0, 5, (50, 60)))
    cm = metrics.confusion_matrix(ref, pred, 5)
    for c in range(5):
        inter = np.sum((ref == c) & (pred == c))
        union = np.sum((ref == c) | (pred == c))
        assert metrics.iou_per_class(cm)[c] == pytest.approx(inter / union)
    assert metrics.pixel_accuracy(cm) == pytest.approx(np.mean(ref == pred))


def test_mask_and_out_of_range_values():
    ref = np.array([1, 2, 3])
    pred = np.array([1, 2, 9])
    with pytest.raises(ValueError, match="prediction holds class values \\[9\\]"):
        metrics.confusion_matrix(ref, pred, 5)
    cm = metrics.confusion_matrix(ref, pred, 5, mask=np.array([True, True, False]))
    assert cm.sum() == 2 and metrics.pixel_accuracy(cm) == 1.0
    assert math.isnan(metrics.pixel_accuracy(np.zeros((5, 5), dtype=int)))


def test_row_normalised_and_files(tmp_path):
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    rn = metrics.row_normalised(cm)
    np.testing.assert_allclose(rn[0], [0.8, 0.2, 0.0])
    np.testing.assert_allclose(rn[1], [0.25, 0.75, 0.0])
    np.testing.assert_allclose(rn[2], [0, 0, 0])
    names = ["a", "b", "c"]
    p = metrics.write_confusion_csv(cm, names, str(tmp_path / "cm.csv"))
    rows = list(csv.reader(open(p)))
    assert rows[0] == ["reference \\ predicted", "a", "b", "c", "total"]
    assert rows[1] == ["a", "8", "2", "0", "10"]
    assert rows[4] == ["total", "9", "5", "0", "14"]
    assert ["PA %", f"{100 * 11 / 14:.2f}"] in rows
    png = metrics.plot_confusion_matrix(cm, names, str(tmp_path / "cm.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
