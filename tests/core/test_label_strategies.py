"""Boundary-buffer labelling strategies (paper Table 4) change exactly the pixels they should."""
import numpy as np
import pytest

from landform_plugin.core.errors import LandformError
from landform_plugin.core.label_strategies import IGNORE_INDEX, apply_strategy, boundary_buffer


def two_halves():
    lab = np.ones((20, 20), dtype=np.uint8)
    lab[:, 10:] = 3
    lab[0:3, 0:3] = IGNORE_INDEX  # unlabelled corner: no boundary, never changed
    return lab


def test_ignore_buffer_takes_n_columns_each_side_of_a_straight_boundary():
    lab = two_halves()
    out = apply_strategy(lab, "ignore", buffer_px=2)
    expected = lab.copy()
    expected[:, 8:12] = IGNORE_INDEX
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(lab, two_halves())  # input untouched


def test_buffer_is_a_euclidean_disk_around_an_island():
    lab = np.ones((11, 11), dtype=np.uint8)
    lab[5, 5] = 2
    buf = boundary_buffer(lab, 1)
    expected = np.zeros_like(buf)
    expected[5, 4:7] = True
    expected[4:7, 5] = True  # the island and its 4 neighbours; diagonals are sqrt(2) away
    np.testing.assert_array_equal(buf, expected)
    buf2 = boundary_buffer(lab, 2)
    yy, xx = np.mgrid[0:11, 0:11]
    np.testing.assert_array_equal(buf2, (yy - 5) ** 2 + (xx - 5) ** 2 <= 4)


def test_random_changes_only_buffer_pixels_to_nearby_classes_and_is_seeded():
    lab = two_halves()
    lab[15:, :] = 4  # a third class along the bottom
    out = apply_strategy(lab, "random", buffer_px=2, seed=7)
    buf = boundary_buffer(lab, 2)
    changed = out != lab
    assert not (changed & ~buf).any()  # nothing outside the buffer changes
    assert changed.sum() > 0.3 * buf.sum()  # a good share of the buffer is re-drawn
    # every value inside the buffer is a class present within 2 px
    for y, x in zip(*np.nonzero(buf)):
        win = lab[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
        assert out[y, x] in set(np.unique(win)) - {IGNORE_INDEX}
    # both sides of the 1|3 boundary get both classes
    band = out[5:12, 8:12]
    assert set(np.unique(band)) == {1, 3}
    np.testing.assert_array_equal(out, apply_strategy(lab, "random", buffer_px=2, seed=7))
    assert not np.array_equal(out, apply_strategy(lab, "random", buffer_px=2, seed=8))
    assert (out[0:3, 0:3] == IGNORE_INDEX).all()


def test_original_and_errors():
    lab = two_halves()
    np.testing.assert_array_equal(apply_strategy(lab, "original"), lab)
    np.testing.assert_array_equal(apply_strategy(lab, "ignore", buffer_px=0), lab)
    with pytest.raises(LandformError, match="Unknown labelling strategy"):
        apply_strategy(lab, "blur")
