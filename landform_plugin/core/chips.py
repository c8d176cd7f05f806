"""Export training chips once, with GDAL, to a plain folder that training reads with numpy only.

Layout of a chip folder::

    manifest.json          what the chips are (see below)
    chips/000000_x.npy     float32 (C, S, S): the network input, normalised exactly as
                           core.inputs does it for classification (same code)
    chips/000000_y.npy     uint8 (S, S): model class per pixel, 255 = ignored

manifest.json holds: ``format``/``version``, ``chip_size``, ``input_factors``,
``normalisation`` (per factor, core.inputs rules), ``pixel_size_m``,
``classes`` (code, name, colour), ``num_classes``, ``ignore_index``,
``code_mapping`` (user label code -> model class), ``label_strategy``, the
``sources`` (DEM, labels, CRS, processing grid) and per chip its source, window
on that grid (x0, y0, width, height in pixels) and class pixel counts.

Labels
------
A raster of class codes (reprojected and resampled NEAREST onto the DEM's
processing grid) or a polygon layer with a class field (any OGR-readable file,
rasterised onto that grid, pixel centres inside polygons). User codes are
mapped to model classes by ``code_mapping`` (default: 0-4 are the paper's
classes); a code may map to ``"ignore"``. DEM pixels without a label are ignored
(255) by the loss, and so are pixels where the DEM has NoData: classification
gives them class 0 "no data" from the DEM's mask, never from the network, and
their input holds the terrain filled in from around them (core.inputs.fill_voids),
which the network could not tell from real terrain. The boundary strategy (core.label_strategies) is applied to
the whole label grid before chips are cut.

Chips are ``chip_size`` squares without overlap (the paper: 1024), aligned to
the grid's top-left corner; the incomplete strip at the right and bottom edge
is not used. A chip is kept when at least ``min_labelled`` of its pixels are
valid DEM cells with a label.
"""
import json
import math
import os
import time
from typing import List, Optional

import numpy as np
from osgeo import gdal

from . import inputs
from .chipset import FORMAT, MANIFEST, VERSION, ChipConfig, read_manifest  # noqa: F401 (re-exported)
from .errors import LandformError
from .label_strategies import IGNORE_INDEX, STRATEGIES, apply_strategy
from .layers import Grid, labels_on_grid, model_labels, parse_mapping, resolve_mapping  # noqa: F401 (parse_mapping re-exported)
from .outputs import OutputSet
from .progress import Progress
from .schema import add_cli_options, from_cli
from .terrain import window_raster_box
from .rasters import (
    RasterInfo,
    Window,
    cell_sizes_m,
    check_output_path,
    linear_unit_metres,
    mean_cell_size_m,
    open_raster,
    read_band,
    read_window,
    require_crs,
)


# ----------------------------------------------------------------------------- grids


def native_pixel_size_m(info: RasterInfo) -> float:
    """The DEM's own cell size in metres (geometric mean of x and y; at the central row if geographic)."""
    if info.is_geographic:
        return mean_cell_size_m(info)
    unit = linear_unit_metres(info)
    return math.sqrt(info.pixel_width * unit * info.pixel_height * unit)


def chip_grid(dem_path: str, pixel_size_m: Optional[float], band: int = 1, progress: Optional[Progress] = None) -> Grid:
    """The ``Grid`` chips are cut from: the DEM on its processing lattice, EXACTLY as classification builds it
    (``grid.processing_grid``): a projected DEM whose cells already have the pixel
    size is used as is; otherwise it is warped onto the processing lattice (same CRS if
    projected, its UTM zone if geographic; average when coarsening > 1.5x, else
    bilinear). ``pixel_size_m`` None: the DEM's own cell size.
    """
    import tempfile

    from .grid import processing_grid

    ds, info = open_raster(dem_path, band)
    require_crs(info)
    target = float(pixel_size_m) if pixel_size_m else native_pixel_size_m(info)
    if not target > 0:
        raise LandformError("The pixel size must be positive.")
    with tempfile.TemporaryDirectory(prefix="landform_chips_") as work:
        pds, pinfo, same = processing_grid(ds, info, target, work, progress or Progress())
        if same:
            mem = _to_mem_float(ds, info)
        else:
            mem = gdal.Translate("", pds, format="MEM")
            pds = None
    if mem is None:
        raise LandformError(f"Could not prepare '{dem_path}' at {target:g} m: {gdal.GetLastErrorMsg()}")
    minfo = RasterInfo(
        path=str(dem_path), band=1, width=mem.RasterXSize, height=mem.RasterYSize, band_count=1,
        geotransform=tuple(mem.GetGeoTransform()), crs_wkt=mem.GetProjection() or info.crs_wkt,
        nodata=float("nan"), data_type="Float32",
    )
    return Grid(mem, minfo, target, str(dem_path))


def _to_mem_float(ds, info: RasterInfo):
    arr = read_band(ds.GetRasterBand(info.band), path=info.path).astype(np.float32)
    if info.nodata is not None and not math.isnan(info.nodata):
        arr[arr == np.float32(info.nodata)] = np.nan
    mem = gdal.GetDriverByName("MEM").Create("", info.width, info.height, 1, gdal.GDT_Float32)
    mem.SetGeoTransform(list(info.geotransform))
    mem.SetProjection(info.crs_wkt)
    b = mem.GetRasterBand(1)
    b.SetNoDataValue(float("nan"))
    b.WriteArray(arr)
    return mem


# ----------------------------------------------------------------------------- export


def _window_cell_sizes(info: RasterInfo, win: Window):
    """dx, dy (metres) per row of ``win`` with its halo; rows outside the raster take the edge value."""
    rows = np.arange(win.y0 - win.halo, win.y0 + win.height + win.halo)
    r = np.clip(rows, 0, info.height - 1)
    lo, hi = int(r.min()), int(r.max())
    dx, dy = cell_sizes_m(info, lo, hi - lo + 1)
    return dx[r - lo], dy[r - lo]


def export_chips(cfg: ChipConfig, progress: Optional[Progress] = None) -> dict:
    """Write the chip folder; returns the manifest. On error/cancel nothing is left behind."""
    progress = progress or Progress()
    if not cfg.dems:
        raise LandformError("No DEM was given.")
    if cfg.strategy not in STRATEGIES:
        raise LandformError(f"Unknown labelling strategy '{cfg.strategy}'; choose one of {', '.join(STRATEGIES)}.")
    cs = int(cfg.chip_size)
    if cs < 32 or cs % 32:
        raise LandformError(f"The chip size must be a multiple of 32 pixels (at least 32), not {cs}.")
    factors = list(cfg.factors or ["dem"])
    norm = dict(cfg.normalisation or {})
    for f in factors:
        norm.setdefault(f, inputs.default_normalisation(f))
    norm = {f: norm[f] for f in factors}
    if cfg.denoise_m:
        norm[inputs.DENOISE] = inputs.denoise_rule(cfg.denoise_m)
    inputs.validate_normalisation(factors, norm)
    classes = list(cfg.classes)
    mapping = resolve_mapping(cfg.code_mapping, len(classes))

    out_dir = check_output_path(cfg.out_dir, cfg.dems + [cfg.labels], folder=True)
    if os.path.exists(out_dir) and os.listdir(out_dir):
        if not cfg.overwrite or not os.path.exists(os.path.join(out_dir, MANIFEST)):
            raise LandformError(f"The chip folder '{out_dir}' exists and is not an empty chip folder; choose another.")
    t0 = time.time()
    with OutputSet(inputs=cfg.dems + [cfg.labels]) as out:
        tmp = out.folder(out_dir)
        os.makedirs(os.path.join(tmp, "chips"))
        manifest = _export(cfg, factors, norm, classes, mapping, tmp, progress)
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
    progress.info(f"{len(manifest['chips'])} chips of {cs} px written to {out_dir} in {time.time() - t0:.1f} s")
    progress.update(100)
    return manifest


def _export(cfg, factors, norm, classes, mapping, tmp, progress) -> dict:
    cs = int(cfg.chip_size)
    chips, sources = [], []
    totals = np.zeros(len(classes), dtype=np.int64)
    grids = _grids(cfg, progress)
    ps_all = [g.pixel_size_m for g in grids]
    pixel_size_m = float(cfg.pixel_size_m) if cfg.pixel_size_m else float(np.median(ps_all))
    n_dem = len(grids)
    for i, grid in enumerate(grids):
        sp = progress.sub(100.0 * i / n_dem, 100.0 * (i + 1) / n_dem)
        source = _cut_chips(cfg, i, grid, factors, norm, classes, mapping, tmp, chips, totals, sp)
        sources.append(source)
        progress.info(f"{os.path.basename(grid.source)}: {source['chips']} of {source['candidate_windows']} chips kept")
    if not chips:
        raise LandformError(
            f"No chip of {cs} px has at least {100 * cfg.min_labelled:.0f} % labelled DEM pixels: the labels may not "
            "cover the DEM, or the chip size is too large."
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chip_size": cs,
        "in_channels": len(factors),
        "input_factors": factors,
        "normalisation": norm,
        "pixel_size_m": pixel_size_m,
        "classes": [{"code": c.code, "name": c.name, "color": list(c.color)} for c in classes],
        "num_classes": len(classes),
        "ignore_index": IGNORE_INDEX,
        "code_mapping": {k: ("ignore" if v == IGNORE_INDEX else v) for k, v in mapping.items()},
        "label_strategy": {"name": cfg.strategy, "buffer_px": int(cfg.buffer_px), "seed": int(cfg.seed)},
        "min_labelled": cfg.min_labelled,
        "sources": sources,
        "class_counts": totals.tolist(),
        "chips": chips,
    }


def _grids(cfg, progress) -> List[Grid]:
    """Every DEM on its processing grid, checked against the chip size."""
    cs = int(cfg.chip_size)
    grids = []
    for dem in cfg.dems:
        progress.check()
        grid = chip_grid(dem, cfg.pixel_size_m, cfg.dem_band, progress)
        gi = grid.info
        if cs > gi.width or cs > gi.height:
            raise LandformError(
                f"The chip size ({cs} px) is larger than the DEM '{dem}' ({gi.width} x {gi.height} px at "
                f"{grid.pixel_size_m:.1f} m): choose a smaller chip size (or a finer pixel size)."
            )
        grids.append(grid)
    ps_all = [g.pixel_size_m for g in grids]
    if max(ps_all) > 1.05 * min(ps_all):
        progress.info(
            "Warning: the DEMs have different cell sizes ("
            + ", ".join(f"{p:.1f}" for p in ps_all)
            + " m); give a pixel size to train at one resolution."
        )
    return grids


def _cut_chips(cfg, i, grid, factors, norm, classes, mapping, tmp, chips, totals, sp) -> dict:
    """Label DEM ``i`` on its grid, cut and save its chips (appended to ``chips``); returns its source entry."""
    cs = int(cfg.chip_size)
    gi = grid.info
    band = grid.ds.GetRasterBand(1)
    dem_valid = np.isfinite(read_band(band, path=grid.source))
    idx, codes = labels_on_grid(cfg.labels, grid, cfg.label_field)
    lab = model_labels(idx, codes, mapping, dem_valid, grid.source)
    del idx
    lab = apply_strategy(lab, cfg.strategy, cfg.buffer_px, seed=cfg.seed + i)
    lab[~dem_valid] = IGNORE_INDEX  # class 0 comes from the DEM's mask (module docstring)
    sp.update(10)
    halo = inputs.halo_pixels(factors, norm, grid.pixel_size_m)
    wins = [Window(x0, y0, cs, cs, halo) for y0 in range(0, gi.height - cs + 1, cs) for x0 in range(0, gi.width - cs + 1, cs)]
    kept = 0
    clean_end = 10 + 90 / (1 + int(cfg.robust_copies))
    for k, win in enumerate(wins):
        sp.check()
        y = lab[win.y0 : win.y0 + cs, win.x0 : win.x0 + cs]
        if (y != IGNORE_INDEX).mean() >= cfg.min_labelled:  # lab is IGNORE_INDEX where the DEM has no data
            raw = read_window(band, win, None)
            dx, dy = _window_cell_sizes(gi, win)
            box = window_raster_box(win, gi.width, gi.height)  # where the DEM lies in the window, as classify has it
            x, _valid = inputs.make_input(raw, halo, factors, norm, grid.pixel_size_m, dx, dy, raster_box=box)
            chips.append(_save_chip(tmp, len(chips), i, win, x, y, len(classes)))
            totals += chips[-1]["class_counts"]
            kept += 1
        sp.update(10 + (clean_end - 10) * (k + 1) / len(wins))
    robust = 0
    if cfg.robust_copies:
        robust = _robust_chips(cfg, i, grid, lab, factors, norm, halo, tmp, chips, totals, len(classes),
                               sp.sub(clean_end, 100))
    return {
        "dem": os.path.abspath(grid.source), "labels": str(cfg.labels), "label_field": cfg.label_field,
        "crs_wkt": gi.crs_wkt, "geotransform": list(gi.geotransform), "width": gi.width, "height": gi.height,
        "pixel_size_m": grid.pixel_size_m, "chips": kept + robust, "candidate_windows": len(wins),
        "clean_chips": kept, "robust_chips": robust, "label_codes_found": sorted(set(codes)),
    }


def _robust_chips(cfg, i, grid, lab, factors, norm, halo, tmp, chips, totals, n_classes, sp) -> int:
    """Chips of ``cfg.robust_copies`` perturbed copies of DEM ``i`` (core.perturb.training_copy),
    each cut at a random offset so chip edges fall elsewhere; returns how many were kept.

    A copy's input is what classification would compute from that DEM: noise and voids in
    the elevations and, when the copy is a crop, the input computed on the crop alone and
    mirrored past the crop's edges (as for a projected DEM's edge). Its labels are those of
    the clean, whole DEM, so the network learns to give the clean DEM's class from a noisy,
    holed or cut one. Cells past a crop's edge and in voids are ignored by the loss
    (classification takes "no data" from the DEM's mask). The copies are made in memory (a few times
    the DEM's size in float32).
    """
    from osgeo import gdal_array

    from . import perturb

    cs = int(cfg.chip_size)
    gi = grid.info
    clean = read_band(grid.ds.GetRasterBand(1), path=grid.source).astype(np.float32)
    kept = 0
    n = int(cfg.robust_copies)
    for k in range(n):
        sp.check()
        rng = np.random.default_rng([int(cfg.seed), i, k, 1])
        copy = perturb.training_copy(clean, grid.pixel_size_m, cs // 2, rng)
        z = copy.z
        bx0, by0, bx1, by1 = copy.box
        cut = copy.box != (0, 0, gi.width, gi.height)
        z[:by0], z[by1:], z[:, :bx0], z[:, bx1:] = np.nan, np.nan, np.nan, np.nan
        z_ds = gdal_array.OpenArray(z)  # a GDAL view of the copy (no copy), read like the DEM
        z_band = z_ds.GetRasterBand(1)
        ox, oy = (int(v) for v in rng.integers(0, cs, 2))
        wins = [(x0, y0) for y0 in range(oy, gi.height - cs + 1, cs) for x0 in range(ox, gi.width - cs + 1, cs)]
        for x0, y0 in wins:
            ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x0 + cs, bx1), min(y0 + cs, by1)
            if ix1 - ix0 < 2 or iy1 - iy0 < 2:
                continue
            y = lab[y0 : y0 + cs, x0 : x0 + cs].copy()
            # past the crop (NaN in z) and in voids: class 0 comes from the mask, as for the DEM's own NoData
            y[~np.isfinite(z[y0 : y0 + cs, x0 : x0 + cs])] = IGNORE_INDEX
            if (y != IGNORE_INDEX).mean() < cfg.min_labelled:
                continue
            win = Window(ix0, iy0, ix1 - ix0, iy1 - iy0, halo)
            raw = read_window(z_band, win, None)
            box = None
            if cut:  # the crop's edge is the raster's: NoData carried past it, 3x3 factors as gdaldem -compute_edges
                box = (by0 - (iy0 - halo), by1 - (iy0 - halo), bx0 - (ix0 - halo), bx1 - (ix0 - halo))
            dx, dy = _window_cell_sizes(gi, win)
            x, _valid = inputs.make_input(raw, halo, factors, norm, grid.pixel_size_m, dx, dy, raster_box=box)
            x = inputs.reflect_pad(x, ((0, 0), (iy0 - y0, y0 + cs - iy1), (ix0 - x0, x0 + cs - ix1)))
            rec = _save_chip(tmp, len(chips), i, Window(x0, y0, cs, cs, 0), x, y, n_classes)
            rec.update(copy=k, perturbation=copy.description)
            chips.append(rec)
            totals += rec["class_counts"]
            kept += 1
        sp.update(100.0 * (k + 1) / n)
    return kept


def _save_chip(tmp, n, source, win, x, y, n_classes) -> dict:
    cid = f"{n:06d}"
    cs = win.width
    np.save(os.path.join(tmp, "chips", f"{cid}_x.npy"), x.astype(np.float32, copy=False))
    np.save(os.path.join(tmp, "chips", f"{cid}_y.npy"), np.ascontiguousarray(y, dtype=np.uint8))
    counts = np.bincount(y[y != IGNORE_INDEX].ravel(), minlength=n_classes)[:n_classes]
    return {
        "id": cid, "x": f"chips/{cid}_x.npy", "y": f"chips/{cid}_y.npy", "source": source,
        "window": [win.x0, win.y0, cs, cs], "class_counts": counts.tolist(),
        "ignored": int((y == IGNORE_INDEX).sum()),
    }


# ----------------------------------------------------------------------------- CLI


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "chips",
        help="export training chips (numpy + JSON) from DEMs and landform labels",
        description="Cut DEMs and their labels into chips for 'train'. Needs GDAL; training then needs only torch+numpy.",
    )
    p.add_argument("--dem", action="append", required=True, help="DEM raster (repeat for several)")
    p.add_argument("--labels", required=True, help="label raster of class codes, or polygon layer (with --field)")
    p.add_argument("--field", default=None, help="polygon layers: attribute holding the class code")
    p.add_argument("--mapping", default=None, help="user code -> model class, e.g. '10:1,20:2,30:3,40:4,99:ignore' (default: 0-4 as is)")
    p.add_argument("--factors", default="dem", help="comma-separated input factors (default: dem)")
    add_cli_options(p, ChipConfig)
    p.add_argument("--out", required=True, help="chip folder to write")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    cfg = from_cli(
        ChipConfig, args, dems=args.dem, labels=args.labels, out_dir=args.out, label_field=args.field,
        code_mapping=parse_mapping(args.mapping), factors=[f.strip() for f in args.factors.split(",") if f.strip()],
    )
    m = export_chips(cfg, Progress(log=print))
    counts = np.asarray(m["class_counts"], dtype=float)
    share = counts / max(1.0, counts.sum())
    print(f"{len(m['chips'])} chips; class shares: " + ", ".join(f"{c['name']} {100 * s:.2f} %" for c, s in zip(m["classes"], share)))
    return 0
