"""One declaration per operation parameter, for every entry point.

An operation's settings are a dataclass; each field that a user can set carries
an ``Option`` (its Processing key, label, range, choices, help, advanced flag).
The command line options are built here from it, and the Processing parameters
in ``processing/algorithms/schema.py``, so defaults, ranges and choice lists
cannot disagree between the two.

    @dataclass
    class FactorParams:
        z_factor: float = option(1.0, "Z_FACTOR", "Z-factor (elevation multiplier)", minimum=0.0)
"""
import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Option:
    key: str  # Processing parameter name
    label: str  # Processing label (also the command line help's start)
    kind: str = ""  # "float" | "int" | "bool" | "choice" | "str"; "": from the default
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Tuple[str, ...] = ()  # values of a "choice" option
    choice_labels: Tuple[str, ...] = ()  # how Processing shows them (default: the values)
    help: str = ""  # extra command line help
    advanced: bool = False
    zero_means_none: bool = False  # Processing has no "unset" number: 0 there is None here
    processing: bool = True  # offered in Processing
    cli: bool = True  # offered on the command line
    flag: str = ""  # command line flag (default: --field-name)


def option(default, key: str, label: str, **kw):
    """A dataclass field carrying its ``Option``."""
    return field(default=default, metadata={"option": Option(key, label, **kw)})


def options(cls) -> List[Tuple[str, object, Option]]:
    """(field name, default, Option) of every field of ``cls`` that carries one."""
    out = []
    for f in fields(cls):
        opt = f.metadata.get("option")
        if opt is not None:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            out.append((f.name, default, _with_kind(opt, default)))
    return out


def _with_kind(opt: Option, default) -> Option:
    if opt.kind:
        return opt
    if opt.choices:
        kind = "choice"
    elif isinstance(default, bool):
        kind = "bool"
    elif isinstance(default, int):
        kind = "int"
    elif isinstance(default, float):
        kind = "float"
    else:
        kind = "str"
    return Option(**{**opt.__dict__, "kind": kind})


_TYPES = {"float": float, "int": int, "str": str, "choice": str}


def add_cli_options(parser: argparse.ArgumentParser, cls, skip: Sequence[str] = ()) -> None:
    """Command line options for the fields of ``cls`` (defaults None: unset means the dataclass default)."""
    for name, default, opt in options(cls):
        if not opt.cli or name in skip:
            continue
        flag = opt.flag or "--" + name.replace("_", "-")
        text = opt.label + (f"; {opt.help}" if opt.help else "")
        if opt.kind == "bool":
            if default:
                parser.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false", default=None, help=f"not: {text}")
            else:
                parser.add_argument(flag, dest=name, action="store_true", default=None, help=text)
            continue
        parser.add_argument(flag, dest=name, type=_TYPES[opt.kind], default=None, choices=opt.choices or None,
                            help=f"{text} (default {default})")


def from_cli(cls, args: argparse.Namespace, **fixed):
    """An instance of ``cls`` from parsed options (unset ones keep the dataclass defaults)."""
    kw = {}
    for name, _, opt in options(cls):
        value = getattr(args, name, None)
        if value is not None:
            kw[name] = None if opt.zero_means_none and value == 0 else value
    kw.update(fixed)
    return cls(**kw)


def choice_index(opt: Option, value) -> int:
    return list(opt.choices).index(value)

