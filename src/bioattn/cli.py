"""The ``bioattn`` command line: parses arguments, then calls library code.

Every command has a Python equivalent (named in its ``--help``). Errors in the input end the
command with ``error: <one line>`` and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from .errors import BioattnError

# Each entry adds one sub-command: ``add(subparsers)`` creates its parser and sets
# ``func=<callable taking the parsed args>``.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(add: Callable[[argparse._SubParsersAction], None]):
    COMMANDS.append(add)
    return add


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------
@command
def _models(sub):
    p = sub.add_parser("models", help="list bioattn's registered models with parameter counts",
                       description="List bioattn's models (Python: bioattn.models.list_models).")
    p.add_argument("pattern", nargs="?", default="", help="only names containing this text")
    p.add_argument("--num-classes", type=int, default=None,
                   help="count parameters for this many classes (default: each model's own)")
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from .models import count_parameters, create_model, list_models

    names = list_models(args.pattern)
    if not names:
        raise BioattnError(f"no bioattn model matches '{args.pattern}'")
    width = max(len(n) for n in names)
    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    for name in names:
        model = create_model(name, **kwargs)
        print(f"{name:<{width}}  {count_parameters(model) / 1e6:9.2f}M")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bioattn",
        description="Brain-inspired visual attention (AbSViT, VARS, RS-RNN): train, evaluate "
        "robustness, and look at where models attend.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BioattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
