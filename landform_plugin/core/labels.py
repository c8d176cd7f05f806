"""The landform class scheme of Yang et al. (2023): ids, names and map colours.

Class 0 is "no data" (outside the DEM or NoData in it); 1-4 are the first-level
landform types of China's 1:1,000,000 geomorphological map (Cheng et al. 2011)
with its four mountain relief classes merged, as in the paper's Table 1.
Every raster this plugin writes uses these codes; a model file may carry its
own scheme (see ``modelfile``), which defaults to this one.
"""
from dataclasses import dataclass
from typing import List, Tuple

NODATA_CLASS = 0


@dataclass(frozen=True)
class LandformClass:
    code: int
    name: str
    color: Tuple[int, int, int]  # RGB 0-255, used for the paletted renderer and previews


DEFAULT_CLASSES: List[LandformClass] = [
    LandformClass(0, "No data", (0, 0, 0)),
    LandformClass(1, "Plain", (168, 221, 120)),
    LandformClass(2, "Platform", (254, 224, 139)),
    LandformClass(3, "Hill", (244, 165, 96)),
    LandformClass(4, "Mountain", (165, 42, 42)),
]

CLASS_NAMES = [c.name for c in DEFAULT_CLASSES]
NUM_CLASSES = len(DEFAULT_CLASSES)
