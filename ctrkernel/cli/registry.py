"""The command line as one table of verbs (bocker's shape): a verb is a function whose docstring
is its help, and whose arguments are declared next to it with @arg. Verb modules register
themselves on import; `ctrkernel.cli.main` imports them all and builds the parser.
"""
VERBS = {}


def verb(name, group=None):
    """Register fn(args) -> exit status as the verb `name` (group: e.g. "vm" for `vm boot`)."""
    def register(fn):
        fn.verb_name, fn.verb_group = name, group
        fn.verb_args = list(reversed(getattr(fn, "verb_args", [])))
        VERBS[(group, name)] = fn
        return fn
    return register


def arg(*flags, **options):
    """Declare one argparse argument of a verb (stack several; they keep their order)."""
    def add(fn):
        fn.verb_args = getattr(fn, "verb_args", []) + [(flags, options)]
        return fn
    return add
