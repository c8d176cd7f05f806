"""The model file: one ``.safetensors`` file that carries everything needed to use a model.

Format (format_version 1)
-------------------------
A standard safetensors file (https://github.com/huggingface/safetensors):
8-byte little-endian header length, a JSON header, raw tensor bytes. No
pickle anywhere: ``torch.load`` is never used, so opening a model file
cannot execute code.

- tensors: the network's ``state_dict`` (float32; BatchNorm buffers included).
- header metadata key ``"landform_model"``: a JSON string, the *spec*::

    {
      "format_version": 1,
      "architecture": "fcn_resnet",        # nets.registry.ARCHITECTURES key
      "backbone": "resnet50",
      "norm": "batch",                     # batch | frozen_batch | group
      "multichannel": "stack",             # stack | per_factor
      "arch_options": {"decoder_channels": 256},
      "input_factors": ["dem"],            # channel order; "dem" or core.terrain names
      "normalisation": {"dem": {"method": "local_mean", "window_m": 10000, "scale_m": 500}},
      "classes": [{"code": 0, "name": "No data", "color": [0, 0, 0]}, ...],
      "pixel_size_m": 30.0,                # ground pixel size the model was trained at
      "tile_size": 512,                    # tile size it was trained / is best run at
      "training": {...},                   # free-form summary: data, epochs, loss, optimiser, date
      "metrics": {...}                     # free-form scores: PA, MIoU, per-class IoU
    }

``read_spec`` parses the header with plain Python (no torch), so QGIS can show
a model's description cheaply; ``load_model`` builds the architecture from the
spec and loads the weights strictly (every key and shape must match).
"""
import json
import os
import struct
from typing import Dict, List, Optional, Tuple

from .errors import LandformError
from .labels import DEFAULT_CLASSES

FORMAT_VERSION = 1
METADATA_KEY = "landform_model"
MAX_HEADER_BYTES = 100 * 1024 * 1024
REQUIRED_KEYS = (
    "format_version",
    "architecture",
    "backbone",
    "norm",
    "multichannel",
    "input_factors",
    "normalisation",
    "classes",
    "pixel_size_m",
    "tile_size",
)


def default_classes() -> List[dict]:
    return [{"code": c.code, "name": c.name, "color": list(c.color)} for c in DEFAULT_CLASSES]


def make_spec(
    architecture: str,
    backbone: str,
    input_factors: List[str],
    pixel_size_m: float,
    tile_size: int,
    norm: str = "batch",
    multichannel: str = "stack",
    arch_options: Optional[dict] = None,
    normalisation: Optional[Dict[str, dict]] = None,
    classes: Optional[List[dict]] = None,
    training: Optional[dict] = None,
    metrics: Optional[dict] = None,
) -> dict:
    """A complete spec with defaults (normalisation from ``inputs``, classes from ``labels``)."""
    from .inputs import DENOISE, default_normalisation

    norms = dict(normalisation or {})
    for f in input_factors:
        norms.setdefault(f, default_normalisation(f))
    spec = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "backbone": backbone,
        "norm": norm,
        "multichannel": multichannel,
        "arch_options": dict(arch_options or {}),
        "input_factors": list(input_factors),
        "normalisation": {f: norms[f] for f in input_factors + [DENOISE] if f in norms},
        "classes": classes or default_classes(),
        "pixel_size_m": float(pixel_size_m),
        "tile_size": int(tile_size),
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
    }
    validate_spec(spec, "the new model")
    return spec


def validate_spec(spec: dict, where: str) -> dict:
    """Check a spec's completeness and types; raise LandformError naming ``where``."""
    if not isinstance(spec, dict):
        raise LandformError(f"{where}: the model description is not a JSON object.")
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise LandformError(f"{where}: the model description lacks {', '.join(missing)}; the file is incomplete.")
    if int(spec["format_version"]) > FORMAT_VERSION:
        raise LandformError(
            f"{where}: model format version {spec['format_version']} is newer than this plugin supports "
            f"({FORMAT_VERSION}); update the plugin."
        )
    factors = spec["input_factors"]
    if not isinstance(factors, list) or not factors or not all(isinstance(f, str) for f in factors):
        raise LandformError(f"{where}: input_factors must be a non-empty list of factor names.")
    if len(set(factors)) != len(factors):
        raise LandformError(f"{where}: input_factors repeats a factor.")
    from .inputs import validate_normalisation

    try:
        validate_normalisation(factors, spec["normalisation"])
    except LandformError as exc:
        raise LandformError(f"{where}: {exc}") from None
    classes = spec["classes"]
    if not isinstance(classes, list) or len(classes) < 2:
        raise LandformError(f"{where}: the model must list at least two classes.")
    codes = []
    for c in classes:
        if not isinstance(c, dict) or not {"code", "name", "color"} <= set(c):
            raise LandformError(f"{where}: every class needs code, name and color.")
        if not (isinstance(c["color"], (list, tuple)) and len(c["color"]) == 3):
            raise LandformError(f"{where}: class '{c['name']}' colour must be [R, G, B].")
        codes.append(int(c["code"]))
    if codes != list(range(len(classes))):
        raise LandformError(f"{where}: class codes must be 0, 1, ..., n-1 in order (code 0 = no data); got {codes}.")
    try:
        px = float(spec["pixel_size_m"])
        tile = int(spec["tile_size"])
    except (TypeError, ValueError):
        raise LandformError(f"{where}: pixel_size_m and tile_size must be numbers.") from None
    if not px > 0 or tile < 32:
        raise LandformError(f"{where}: pixel_size_m must be positive and tile_size at least 32.")
    if spec["multichannel"] not in ("stack", "per_factor"):
        raise LandformError(f"{where}: multichannel must be 'stack' or 'per_factor'.")
    return spec


def _read_header(path: str) -> Tuple[dict, int]:
    """Parse a safetensors header with plain Python; check the file is complete."""
    path = str(path)
    if not os.path.exists(path):
        raise LandformError(f"Model file '{path}' does not exist.")
    if not os.path.isfile(path):
        raise LandformError(f"Model file '{path}' is not a file.")
    size = os.path.getsize(path)
    not_st = (
        f"'{path}' is not a landform model: it is not a valid .safetensors file "
        "(models are saved by this plugin's training as .safetensors; pickled .pt/.pth files are refused)."
    )
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise LandformError(not_st)
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise LandformError(not_st)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LandformError(not_st) from None
    if not isinstance(header, dict):
        raise LandformError(not_st)
    data_len = size - 8 - n
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            a, b = entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise LandformError(not_st) from None
        end = max(end, int(b))
    if end != data_len:
        raise LandformError(
            f"Model file '{path}' is truncated or corrupt: its header announces {end} bytes of weights, "
            f"the file holds {data_len}. Copy or download it again."
        )
    return header, n


def read_spec(path: str) -> dict:
    """The model's spec (dict), read without torch. Raises LandformError on any problem."""
    header, _ = _read_header(path)
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise LandformError(
            f"'{path}' is a safetensors file but not a landform model: it has no '{METADATA_KEY}' description."
        )
    try:
        spec = json.loads(meta[METADATA_KEY])
    except ValueError:
        raise LandformError(f"'{path}': the model description is not valid JSON; the file is corrupt.") from None
    return validate_spec(spec, f"Model file '{path}'")


def describe(spec: dict) -> str:
    """One paragraph for users: what this model is and how it scored."""
    factors = ", ".join(spec["input_factors"])
    names = ", ".join(c["name"] for c in spec["classes"] if int(c["code"]) != 0)
    text = (
        f"{spec['architecture']} ({spec['backbone']}, {spec['norm']} norm, {spec['multichannel']}) on {factors}; "
        f"trained at {spec['pixel_size_m']:g} m pixels, tiles of {spec['tile_size']}; classes: {names}."
    )
    m = spec.get("metrics") or {}
    scores = ", ".join(f"{k} {v}" for k, v in m.items() if isinstance(v, (int, float, str)))
    if scores:
        text += f" Scores: {scores}."
    return text


def build_from_spec(spec: dict, encoder_weights: Optional[str] = None):
    from .nets.registry import build_model

    return build_model(
        spec["architecture"],
        spec["backbone"],
        len(spec["input_factors"]),
        num_classes=len(spec["classes"]),
        multichannel=spec["multichannel"],
        encoder_weights=encoder_weights,
        norm=spec["norm"],
        **(spec.get("arch_options") or {}),
    )


def save_model(path: str, model, spec: dict, half: bool = False, outputs=None) -> str:
    """Write ``model``'s weights and ``spec`` to ``path`` (.safetensors), atomically.

    ``half``: store floating-point weights as float16 (they load into the float32
    network). ``outputs``: an ``outputs.OutputSet`` to commit with the run's other
    files; without one the model file is committed on its own.
    """
    from .outputs import OutputSet

    path = str(path)
    if not path.lower().endswith(".safetensors"):
        raise LandformError(f"Model files end in .safetensors; '{path}' does not.")
    validate_spec(spec, "the model to save")
    n_in = getattr(model, "in_channels", None)
    if n_in is not None and n_in != len(spec["input_factors"]):
        raise LandformError(
            f"The network takes {n_in} input channel(s) but the spec lists {len(spec['input_factors'])} factor(s)."
        )
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        state[k] = (v.half() if half and v.is_floating_point() else v).contiguous()
    metadata = {METADATA_KEY: json.dumps(spec, sort_keys=True)}
    if outputs is not None:
        write_safetensors(outputs.file(path), state, metadata, path)
        return path
    with OutputSet() as out:
        write_safetensors(out.file(path), state, metadata, path)
    return path


def write_safetensors(tmp: str, tensors: dict, metadata: dict, final: str) -> None:
    """safetensors' save_file, with its I/O errors (a full disk) as a LandformError naming ``final``."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from .outputs import write_failure

    try:
        save_file(tensors, tmp, metadata=metadata)
    except (SafetensorError, OSError) as exc:
        raise write_failure(final, str(exc)) from None


def load_model(path: str, device="cpu", expect_in_channels: Optional[int] = None, expect_factors=None):
    """Build the network from the file's spec and load its weights strictly.

    Returns ``(model, spec)`` with the model in eval mode on ``device``.
    ``expect_in_channels`` / ``expect_factors``: refuse a model that takes a
    different input than the caller will provide.
    """
    from .errors import import_torch

    import_torch()
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    spec = read_spec(path)
    n_in = len(spec["input_factors"])
    if expect_in_channels is not None and int(expect_in_channels) != n_in:
        raise LandformError(
            f"Model '{path}' expects {n_in} input factor(s) ({', '.join(spec['input_factors'])}), "
            f"but {expect_in_channels} were requested."
        )
    if expect_factors is not None and list(expect_factors) != spec["input_factors"]:
        raise LandformError(
            f"Model '{path}' expects input factors {spec['input_factors']}, not {list(expect_factors)}."
        )
    model = build_from_spec(spec)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise LandformError(f"Model file '{path}' is corrupt: {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise LandformError(
            f"Model file '{path}' does not match its declared architecture "
            f"({spec['architecture']}/{spec['backbone']}): {len(missing)} weight(s) missing "
            f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})."
        )
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise LandformError(
            f"Model file '{path}' does not match its declared architecture: weight '{k}' has shape "
            f"{tuple(state[k].shape)}, the network needs {tuple(expected[k].shape)} ({len(bad)} mismatched)."
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    model.to(device)
    return model, spec
