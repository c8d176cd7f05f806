"""Evaluate a landform classification against a reference map (Yang et al. 2023, section 2.3).

The reference (a raster of class codes, or a polygon layer with a class field)
is placed on the classified raster's grid (NEAREST resampling / rasterising
pixel centres, in the classified raster's CRS) and its codes are mapped to the
classification's classes. Reference pixels without a label (outside polygons,
reference NoData, codes mapped to "ignore") are not counted. Classified cells
that are NoData count as class 0 "no data", as in the paper, whose k + 1
classes include no data.

Outputs: PA and MIoU (core.metrics, paper eq. 2-3), per-class IoU, precision
and recall, the confusion matrix (CSV, rows = reference) and its row-normalised
figure like the paper's Fig. 6 (PNG), optionally the same per zone of a
polygon layer (the paper's six test areas, Fig. 8), and a report (HTML with
the figure embedded, or Markdown beside it).
"""
import base64
import csv
import html
import math
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from osgeo import gdal

from . import metrics
from .layers import Grid, labels_on_grid, model_labels, resolve_mapping, zones_on_grid
from .errors import LandformError
from .label_strategies import IGNORE_INDEX
from .labels import DEFAULT_CLASSES
from .outputs import OutputSet
from .progress import Progress
from .schema import add_cli_options, from_cli, option
from .rasters import check_output_path, mean_cell_size_m, open_raster, read_band, require_crs


@dataclass
class EvalOptions:
    """How the reference is read, declared once (core.schema) for the command line and Processing."""

    reference_field: Optional[str] = option(None, "REFERENCE_FIELD", "Class field (polygon reference)", kind="str",
                                            flag="--field", help="attribute holding the class code")
    code_mapping: Optional[str] = option(None, "CODE_MAPPING", "Class mapping (reference code:class, e.g. 10:1,20:2; "
                                         "empty = 0-4)", kind="str", flag="--mapping")


@dataclass
class EvalResult:
    scores: metrics.Scores
    zones: List[dict] = field(default_factory=list)  # {"zone": name, "scores": Scores}
    files: Dict[str, str] = field(default_factory=dict)

    @property
    def pa(self) -> float:
        return self.scores.pa

    @property
    def miou(self) -> float:
        return self.scores.miou


def class_names_for(classified_path: str, n: int) -> List[str]:
    """Category names stored in the classified raster, else the paper's scheme."""
    ds = gdal.Open(classified_path)
    names = ds.GetRasterBand(1).GetCategoryNames() if ds is not None else None
    if names and len(names) >= n and all(names[:n]):
        return list(names[:n])
    default = [c.name for c in DEFAULT_CLASSES]
    return default[:n] if n <= len(default) else default + [f"class {i}" for i in range(len(default), n)]


def evaluate(
    classified: str,
    reference: str,
    reference_field: Optional[str] = None,
    code_mapping=None,
    num_classes: int = 5,
    class_names: Optional[List[str]] = None,
    zones: Optional[str] = None,
    zone_field: Optional[str] = None,
    confusion_csv: Optional[str] = None,
    confusion_png: Optional[str] = None,
    report: Optional[str] = None,
    zones_csv: Optional[str] = None,
    title: str = "",
    progress: Optional[Progress] = None,
) -> EvalResult:
    """Compare ``classified`` (band 1 class codes 0..num_classes-1) with ``reference``."""
    progress = progress or Progress()
    for out in (confusion_csv, confusion_png, report, zones_csv):
        if out:  # before any work: a bad output folder should not cost a full evaluation
            check_output_path(out, [classified, reference])
    ds, info = open_raster(classified, 1)
    require_crs(info)
    names = list(class_names) if class_names else class_names_for(classified, num_classes)
    if len(names) != num_classes:
        raise LandformError(f"{len(names)} class names given for {num_classes} classes.")
    grid = Grid(ds, info, mean_cell_size_m(info), classified)
    pred = read_band(ds.GetRasterBand(1), path=classified).astype(np.int64)
    if info.nodata is not None and not math.isnan(info.nodata):
        pred[pred == int(info.nodata)] = 0
    bad = (pred < 0) | (pred >= num_classes)
    if bad.any():
        vals = np.unique(pred[bad])[:10].tolist()
        raise LandformError(
            f"The classified raster '{classified}' holds values {vals} that are not classes 0-{num_classes - 1}; "
            "evaluate a class raster written by this plugin (or map it to these classes first)."
        )
    progress.update(10)
    progress.check()
    idx, codes = labels_on_grid(reference, grid, reference_field)
    mapping = resolve_mapping(code_mapping, num_classes)
    ref = model_labels(idx, codes, mapping, np.ones(idx.shape, dtype=bool), reference)
    del idx
    labelled = ref != IGNORE_INDEX
    if not labelled.any():
        raise LandformError(f"The reference '{reference}' labels no pixel of the classified raster '{classified}'.")
    progress.update(40)
    cm = metrics.confusion_matrix(ref, pred, num_classes)
    result = EvalResult(metrics.scores(cm, names))
    progress.info(
        f"PA {100 * result.pa:.2f} %, MIoU {100 * result.miou:.2f} % over {result.scores.total} reference pixels "
        f"({100 * labelled.mean():.1f} % of the classified raster)"
    )
    if zones:
        progress.check()
        zidx, znames = zones_on_grid(zones, grid, zone_field)
        for k, zname in enumerate(znames):
            sel = zidx == k
            if not (sel & labelled).any():
                continue
            zcm = metrics.confusion_matrix(ref, pred, num_classes, mask=sel)
            result.zones.append({"zone": zname, "scores": metrics.scores(zcm, names)})
        if not result.zones:
            raise LandformError(f"No zone of '{zones}' covers a labelled pixel of the classified raster.")
        progress.info(f"{len(result.zones)} zone(s) evaluated")
    progress.update(70)
    png = confusion_png or (os.path.splitext(report)[0] + "_confusion.png" if report else None)
    result.files = _write_outputs(result, cm, names, classified, reference, title, {
        "confusion_csv": confusion_csv, "confusion_png": png,
        "zones_csv": zones_csv if result.zones else None, "report": report,
    })
    progress.update(100)
    return result


def _write_outputs(result: EvalResult, cm, names, classified: str, reference: str, title: str, finals: dict) -> dict:
    """Write the requested files together: all of them or, on any failure, none."""
    finals = {k: v for k, v in finals.items() if v}
    with OutputSet(inputs=[classified, reference]) as out:
        tmp = {k: out.file(v) for k, v in finals.items()}
        if "confusion_csv" in tmp:
            metrics.write_confusion_csv(cm, names, tmp["confusion_csv"])
        if "confusion_png" in tmp:
            metrics.plot_confusion_matrix(cm, names, tmp["confusion_png"], title=title)
        if "zones_csv" in tmp:
            write_zones_csv(result.zones, names, tmp["zones_csv"])
        if "report" in tmp:
            write_report(result, tmp["report"], classified, reference, tmp.get("confusion_png"), title,
                         png_link=finals.get("confusion_png"), report_name=finals["report"])
    return dict(finals)


def _pct(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100.0 * float(v):.2f}"


def write_zones_csv(zones: List[dict], names: List[str], path: str) -> str:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["zone", "pixels", "PA %", "MIoU %"] + [f"IoU {n} %" for n in names])
        for z in zones:
            s = z["scores"]
            w.writerow([z["zone"], s.total, _pct(s.pa), _pct(s.miou)] + [_pct(v) for v in s.iou])
    return path


def write_report(result: EvalResult, path: str, classified: str, reference: str, png: Optional[str], title: str = "",
                 png_link: Optional[str] = None, report_name: Optional[str] = None) -> str:
    """HTML (figure embedded as data URI: one self-contained file) or Markdown (figure linked).

    ``png`` is read (to embed it); ``png_link`` and ``report_name`` are the final names
    when the files are written under temporary ones (the Markdown link and the format)."""
    s = result.scores
    names = s.class_names
    report_name = report_name or path
    png_link = png_link or png
    title = title or "Landform classification accuracy"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    class_rows = [
        (n, _pct(s.iou[i]), _pct(s.precision[i]), _pct(s.recall[i]), int(s.reference_pixels[i]), int(s.predicted_pixels[i]))
        for i, n in enumerate(names)
    ]
    if report_name.lower().endswith(".md"):
        lines = [f"# {title}", "", f"Classified: `{classified}`  ", f"Reference: `{reference}`  ", f"Date: {when}", "",
                 f"**PA {_pct(s.pa)} %**, **MIoU {_pct(s.miou)} %** over {s.total} reference pixels "
                 "(Yang et al. 2023, eq. 2-3; classes absent from both maps are left out of the mean).", "",
                 "| class | IoU % | precision % | recall % | reference pixels | predicted pixels |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {' | '.join(str(c) for c in r)} |" for r in class_rows]
        lines += ["", "Confusion matrix (rows = reference, columns = predicted, pixels):", "",
                  "| reference \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {n} | " + " | ".join(str(int(v)) for v in s.confusion[i]) + " |" for i, n in enumerate(names)]
        if png:
            lines += ["", f"![Row-normalised confusion matrix]({os.path.relpath(png_link, os.path.dirname(os.path.abspath(report_name)))})"]
        if result.zones:
            lines += ["", "## Zones", "", "| zone | pixels | PA % | MIoU % |", "|---|---|---|---|"]
            lines += [f"| {z['zone']} | {z['scores'].total} | {_pct(z['scores'].pa)} | {_pct(z['scores'].miou)} |" for z in result.zones]
        text = "\n".join(lines) + "\n"
    else:
        e = html.escape
        img = ""
        if png and os.path.exists(png):
            with open(png, "rb") as fh:
                img = ('<img alt="Row-normalised confusion matrix" src="data:image/png;base64,'
                       + base64.b64encode(fh.read()).decode("ascii") + '">')
        rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in class_rows)
        cmrows = "".join(
            f"<tr><th>{e(n)}</th>" + "".join(f"<td>{int(v)}</td>" for v in s.confusion[i]) + "</tr>" for i, n in enumerate(names)
        )
        zrows = "".join(
            f"<tr><td>{e(z['zone'])}</td><td>{z['scores'].total}</td><td>{_pct(z['scores'].pa)}</td><td>{_pct(z['scores'].miou)}</td></tr>"
            for z in result.zones
        )
        text = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:2px 8px;text-align:right}}</style></head><body>
<h1>{e(title)}</h1>
<p>Classified: <code>{e(classified)}</code><br>Reference: <code>{e(reference)}</code><br>Date: {when}</p>
<p><b>PA {_pct(s.pa)} %</b>, <b>MIoU {_pct(s.miou)} %</b> over {s.total} reference pixels
(Yang et al. 2023, eq. 2-3; classes absent from both maps are left out of the mean).</p>
<h2>Per class</h2>
<table><tr><th>class</th><th>IoU %</th><th>precision %</th><th>recall %</th><th>reference pixels</th><th>predicted pixels</th></tr>{rows}</table>
<h2>Confusion matrix</h2>
<p>Rows: reference, columns: predicted (pixels).</p>
<table><tr><th>reference \\ predicted</th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr>{cmrows}</table>
<p>{img}</p>
{"<h2>Zones</h2><table><tr><th>zone</th><th>pixels</th><th>PA %</th><th>MIoU %</th></tr>" + zrows + "</table>" if result.zones else ""}
</body></html>
"""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


# ----------------------------------------------------------------------------- CLI


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="PA, MIoU and confusion matrix of a class raster against a reference map")
    p.add_argument("--classified", required=True, help="class raster (band 1: classes 0-4)")
    p.add_argument("--reference", required=True, help="reference raster of class codes, or polygon layer (with --field)")
    add_cli_options(p, EvalOptions)
    p.add_argument("--zones", default=None, help="optional polygon layer: evaluate each zone too")
    p.add_argument("--zone-field", default=None, help="zone name attribute (default: feature id)")
    p.add_argument("--out-dir", required=True, help="folder for confusion.csv, confusion.png, zones.csv, report.html")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from .layers import parse_mapping

    d = args.out_dir
    opts = from_cli(EvalOptions, args)
    res = evaluate(
        args.classified, args.reference, opts.reference_field, parse_mapping(opts.code_mapping), zones=args.zones,
        zone_field=args.zone_field,
        confusion_csv=os.path.join(d, "confusion.csv"), confusion_png=os.path.join(d, "confusion.png"),
        report=os.path.join(d, "report.html"), zones_csv=os.path.join(d, "zones.csv"), progress=Progress(log=print),
    )
    for k, v in res.files.items():
        print(f"{k}: {v}")
    print(f"PA {100 * res.pa:.2f}  MIoU {100 * res.miou:.2f}")
    return 0
