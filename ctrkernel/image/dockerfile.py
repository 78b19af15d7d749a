"""Dockerfile parsing: read with `dockerfile-parse`, then check every line before a build starts.

`dockerfile-parse` (Red Hat's, well kept) does the lexing that is easy to get subtly wrong: line
continuations, comments between continued lines, 0-based line numbers, quoting. On top of it this
module adds what a build needs and the library leaves out: the instructions we know, the exec
(JSON) and shell forms, `ARG`/`ENV` substitution with Docker's `${VAR:-default}` forms, and
errors that name the line. `parse()` refuses a malformed file as a whole, so a build never runs
half of a Dockerfile whose line 9 is a typo.
"""
import json
import re
from dataclasses import dataclass, field

from ctrkernel.errors import BuildError, OptionalDependencyMissing

# What a build here carries out, and what Docker has but this course does not implement.
SUPPORTED = ("FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "CMD", "ENTRYPOINT",
             "LABEL", "EXPOSE", "VOLUME", "MAINTAINER", "STOPSIGNAL", "SHELL")
NOT_IMPLEMENTED = ("ONBUILD", "HEALTHCHECK")
# Docker substitutes variables in these; RUN, CMD and ENTRYPOINT are left to the shell.
SUBSTITUTED = ("FROM", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE",
               "VOLUME", "STOPSIGNAL")
EXEC_FORM = ("RUN", "CMD", "ENTRYPOINT", "SHELL", "VOLUME", "COPY", "ADD")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT = re.compile(r"^\d{1,5}(-\d{1,5})?(/(tcp|udp|sctp))?$")
VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
                      r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    """One instruction as written: `line` is 1-based (the first line of a continued one)."""

    line: int
    keyword: str
    value: str
    text: str = field(repr=False, default="")

    def exec_form(self):
        """The JSON list of an exec-form value, or None for the shell form."""
        if not self.value.lstrip().startswith("["):
            return None
        try:
            words = json.loads(self.value)
        except json.JSONDecodeError as e:
            raise BuildError(f"{self.keyword}: invalid JSON in exec form {self.value!r} ({e.msg})",
                             line=self.line) from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise BuildError(f"{self.keyword}: exec form must be a JSON list of strings",
                             line=self.line)
        return words

    def __str__(self):
        return f"{self.keyword} {self.value}"


def parse(text, path="Dockerfile"):
    """Parse and check a whole Dockerfile; returns [Instruction] or raises BuildError(line=...)."""
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:  # pragma: no cover - an extra of the course environment
        raise OptionalDependencyMissing("dockerfile-parse", "course", "building images") from None
    import io

    if text and not text.endswith("\n"):
        # dockerfile-parse needs whitespace after a keyword: a bare `USER` as the last line,
        # with no newline after it, would vanish instead of failing the argument check.
        text += "\n"
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    structure = [s for s in parser.structure if s["instruction"] != "COMMENT"]
    instructions = [Instruction(line=s["startline"] + 1, keyword=s["instruction"].upper(),
                                value=s["value"].strip(), text=s["content"])
                    for s in structure]
    _check_complete(text, structure)
    _check(instructions, path)
    return instructions


def _check_complete(text, structure):
    """Refuse a file that ends inside a continued instruction (a trailing `\\`).

    dockerfile-parse only records an instruction once its last line arrives, so one still
    waiting for its continuation at the end of the file is dropped without a word: the build
    would quietly skip the last step. Any non-blank, non-comment line after the last recorded
    instruction is such a dropped one (with the newline parse() ensures, every other line is
    recorded).
    """
    last = max((s["endline"] for s in structure), default=-1)
    lines = text.split("\n")
    dropped = [(number, line.strip()) for number, line in enumerate(lines[last + 1:], last + 2)
               if line.strip() and not line.lstrip().startswith("#")]
    if dropped:
        escape = dropped[-1][1][-1]  # `\` unless an `# escape=` directive chose another
        raise BuildError(f"the file ends inside this instruction ({dropped[0][1]}): its last "
                         f"line ends with the continuation {escape} and nothing follows it; "
                         f"remove that {escape} or complete the instruction",
                         line=dropped[0][0])


def _check(instructions, path):
    seen_from = False
    for ins in instructions:
        if ins.keyword in NOT_IMPLEMENTED:
            raise BuildError(f"{ins.keyword} is a Docker instruction that ctrkernel does not "
                             "implement", line=ins.line)
        if ins.keyword not in SUPPORTED:
            raise BuildError(f"unknown instruction: {ins.keyword}", line=ins.line)
        if not ins.value:
            raise BuildError(f"{ins.keyword} requires at least one argument", line=ins.line)
        if not seen_from and ins.keyword not in ("ARG", "FROM"):
            raise BuildError(f"no FROM before {ins.keyword}: a Dockerfile must start with FROM "
                             "(only ARG may come first)", line=ins.line)
        if ins.keyword == "FROM":
            if seen_from:
                raise BuildError("a second FROM (a multi-stage build) is not supported here",
                                 line=ins.line)
            words = ins.value.split()
            if len(words) != 1:
                raise BuildError(f"FROM takes one image (stages with AS are not supported): "
                                 f"{ins.value!r}", line=ins.line)
            seen_from = True
        if ins.keyword in EXEC_FORM:
            ins.exec_form()  # raises on bad JSON
        if ins.keyword == "SHELL" and ins.exec_form() is None:
            raise BuildError('SHELL needs the JSON (exec) form, e.g. SHELL ["/bin/bash", "-c"]',
                             line=ins.line)
        _check_substitution(ins)
        if ins.keyword == "ARG":
            arg_pairs(ins, {})
        if ins.keyword in ("ENV", "LABEL"):
            key_values(ins, {})
        if ins.keyword == "EXPOSE":
            for port in ins.value.split():
                if not PORT.match(port) and "$" not in port:
                    raise BuildError(f"EXPOSE: invalid port {port!r}", line=ins.line)
        if ins.keyword in ("COPY", "ADD"):
            copy_args(ins, {})
    if not seen_from:
        raise BuildError(f"{path} has no FROM instruction", line=(instructions[-1].line
                                                                  if instructions else 1))


def _check_substitution(ins):
    """Substitute with no variables set, split as the build will, so that a malformed `${...`
    fails now, naming its line, and not when its step is reached after earlier RUNs ran.
    (ENV, LABEL, ARG, COPY and ADD are checked by their own parsers in _check.)"""
    if ins.keyword in ("FROM", "WORKDIR", "USER", "STOPSIGNAL"):
        substitute(ins.value, {}, ins.line)
    elif ins.keyword in ("EXPOSE", "VOLUME"):
        form = ins.exec_form()
        if form is not None:
            for word in form:
                substitute(word, {}, ins.line)
        else:
            words(ins.value, {}, ins.line)


def substitute(word, env, line=None):
    """Replace $VAR, ${VAR}, ${VAR:-default} and ${VAR:+alternative} as Docker does.

    Text inside single quotes and a backslash-escaped `$` are left alone. An unset variable
    becomes the empty string (Docker's rule, not the shell's `set -u`).
    """
    out, i, quote = [], 0, None
    while i < len(word):
        ch = word[i]
        if ch == "\\" and i + 1 < len(word) and word[i + 1] == "$" and quote != "'":
            out.append("\\$")
            i += 2
            continue
        if ch == "'" and quote in (None, "'"):
            quote = None if quote else "'"
        elif ch == '"' and quote in (None, '"'):
            quote = None if quote else '"'
        if ch == "$" and quote != "'":
            m = VARIABLE.match(word, i)
            if m:
                name = m.group("braced") or m.group("plain")
                value = env.get(name)
                if m.group("op") == "-":
                    value = value if value else substitute(m.group("word"), env, line)
                elif m.group("op") == "+":
                    value = substitute(m.group("word"), env, line) if value else ""
                out.append(value or "")
                i = m.end()
                continue
            if word.startswith("${", i):
                raise BuildError(f"bad substitution in {word!r}", line=line)
        out.append(ch)
        i += 1
    return "".join(out)


def words(value, env=None, line=None):
    """Split a value into words as Docker does (quotes group, backslash escapes), substituting
    variables word by word so that a value with spaces stays one word."""
    from dockerfile_parse.util import WordSplitter

    raw = list(WordSplitter(value).split(dequote=False))
    if env is not None:
        raw = [substitute(w, env, line) for w in raw]
    return [WordSplitter(w).dequote() for w in raw]


def key_values(ins, env):
    """ENV and LABEL: `k=v k2="v 2"` or the legacy `k value with spaces`; returns [(k, v)]."""
    from dockerfile_parse.util import WordSplitter

    raw = list(WordSplitter(ins.value).split(dequote=False))
    if "=" not in raw[0]:
        key, _, rest = ins.value.partition(" ")
        if not rest.strip():
            raise BuildError(f"{ins.keyword} {key} needs a value (write {key}=value)",
                             line=ins.line)
        return [(key, WordSplitter(substitute(rest.strip(), env, ins.line)).dequote())]
    pairs = []
    for word in raw:
        if "=" not in word:
            raise BuildError(f"{ins.keyword}: {word!r} is not of the form name=value",
                             line=ins.line)
        key, value = word.split("=", 1)
        key = WordSplitter(substitute(key, env, ins.line)).dequote()
        if not key:
            raise BuildError(f"{ins.keyword}: empty name in {word!r}", line=ins.line)
        pairs.append((key, WordSplitter(substitute(value, env, ins.line)).dequote()))
    return pairs


def arg_pairs(ins, env=None):
    """ARG NAME[=default] ...; returns [(name, default or None)]."""
    pairs = []
    for word in words(ins.value, env, ins.line):
        name, eq, default = word.partition("=")
        if not NAME.match(name):
            raise BuildError(f"ARG: invalid name {name!r} (letters, digits and _ only)",
                             line=ins.line)
        pairs.append((name, default if eq else None))
    return pairs


def copy_args(ins, env):
    """COPY/ADD [--chown=uid:gid] src... dest (or the JSON form); returns (sources, dest, chown)."""
    exec_words = ins.exec_form()
    parts = exec_words if exec_words is not None else words(ins.value, env, ins.line)
    if exec_words is not None:
        parts = [substitute(p, env, ins.line) for p in parts]
    chown = None
    while parts and parts[0].startswith("--"):
        flag, _, value = parts.pop(0).partition("=")
        if flag == "--chown":
            chown = _numeric_owner(value, ins)
        else:
            raise BuildError(f"{ins.keyword}: flag {flag} is not supported here", line=ins.line)
    if len(parts) < 2:
        raise BuildError(f"{ins.keyword} needs a source and a destination", line=ins.line)
    return parts[:-1], parts[-1], chown


def _numeric_owner(value, ins):
    user, _, group = value.partition(":")
    try:
        return int(user), int(group or user)
    except ValueError:
        # A name would need the image's /etc/passwd; numbers keep the layer reproducible.
        raise BuildError(f"--chown={value}: use numeric uid:gid", line=ins.line) from None
