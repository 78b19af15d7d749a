"""`ctrkernel`: a command line with Docker's verbs, flags and exit conventions.

Exit statuses follow `docker run`: 125 when ctrkernel itself fails, 126 when the container's
command cannot be invoked, 127 when it is not found, otherwise the command's own status.
"""
import argparse
import importlib
import sys

from ctrkernel.cli.registry import VERBS
from ctrkernel.errors import CtrkernelError

# Each module registers its verbs on import. One line per area of the core.
VERB_MODULES = (
    "ctrkernel.cli.doctor",
    "ctrkernel.cli.vm",
    "ctrkernel.cli.containers",
    "ctrkernel.cli.build",
    "ctrkernel.cli.images",
    "ctrkernel.cli.stats",
    "ctrkernel.cli.limits",
    "ctrkernel.cli.archive",
)


def build_parser():
    for module in VERB_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="ctrkernel",
        description="A small, real container runtime for learning (Docker's verbs and flags).",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")
    groups = {}
    for (group, name), fn in sorted(VERBS.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        doc = (fn.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        if group:
            if group not in groups:
                holder = verbs.add_parser(group, help=f"{group} commands")
                groups[group] = holder.add_subparsers(dest="subverb", metavar="COMMAND")
            container = groups[group]
        else:
            container = verbs
        sub = container.add_parser(name, help=summary, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
        for flags, options in fn.verb_args:
            sub.add_argument(*flags, **options)
        sub.set_defaults(handler=fn)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.verb is None else 2
    try:
        return handler(args) or 0
    except CtrkernelError as e:
        print(f"ctrkernel: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
