"""`ctrkernel`: a command line with Docker's verbs, flags and exit conventions.

Exit statuses follow `docker run`: 125 when ctrkernel itself fails (a verb's usage error too),
126 when the container's command cannot be invoked, 127 when it is not found, otherwise the
command's own status.
"""
import argparse
import importlib
import os
import re
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


# Docker exits 125 for a flag or usage error of any verb (its "engine/flag error" status).
USAGE_ERROR = 125
# argparse only takes "-5" and "-0.5" as values; Docker also takes "-5m" (then refuses the
# negative limit with its own message), so a dash, digits and a unit suffix are values too.
NEGATIVE_VALUE = re.compile(r"^-\d+(\.\d*)?[a-zA-Z]*$|^-\.\d+[a-zA-Z]*$")
# A shell reports a process killed by SIGPIPE as 128 + 13, as it would for `docker ... | head`.
BROKEN_PIPE = 141


class VerbParser(argparse.ArgumentParser):
    """A verb's parser: usage errors exit 125 (Docker's), negative-looking values are values."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_VALUE

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def build_parser():
    for module in VERB_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="ctrkernel",
        description="A small, real container runtime for learning (Docker's verbs and flags).",
    )
    # The top level keeps argparse's status 2 for an unknown verb; verbs (and groups' verbs, which
    # inherit the parser class) are VerbParsers.
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=VerbParser)
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
    args, unknown = parser.parse_known_args(argv)
    handler = getattr(args, "handler", None)
    if unknown:
        # argparse hands a verb's unknown flags up to the top-level parser; report them with
        # the verb's own usage and status (`ctrkernel run: error: unrecognized arguments`).
        verb_parser = _verb_parser(parser, args)
        verb_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if handler is None:
        parser.print_help()
        return 0 if args.verb is None else 2
    try:
        status = handler(args) or 0
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # As the CPython docs on SIGPIPE advise: point stdout at devnull so the flush at exit
        # does not raise again, and exit as a process killed by SIGPIPE would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
    except CtrkernelError as e:
        print(f"ctrkernel: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        return 130


def _verb_parser(parser, args):
    """The sub-parser that parsed `args`' verb (the top-level parser if there is none)."""
    found = parser
    for key in ("verb", "subverb"):
        name = getattr(args, key, None)
        actions = [a for a in found._actions if isinstance(a, argparse._SubParsersAction)]
        if not name or not actions or name not in actions[0].choices:
            break
        found = actions[0].choices[name]
    return found


if __name__ == "__main__":
    sys.exit(main())
