"""`--format` for every verb that has it (images, history, stats): the subset of Go templates
that docker users write, rendered over rows that are plain dicts of a verb's fields.

    table                         the verb's own table (the caller's default)
    json                          one JSON object per row (Docker's `--format json`)
    table {{.ID}}\t{{.Size}}      a table: a header row, columns split at tabs, aligned
    {{.ID}}: {{.Size}}            one line per row, no header, text kept as written
    {{json .}} / {{json .Size}}   a whole row / one field as JSON

One implementation, so that a template means the same thing to every verb. A field a verb does
not have is refused (Docker: "can't evaluate field"), never printed as an empty string.
"""
import json
import re

from ctrkernel.errors import InvalidArgument

# {{.Field}}, {{json .}}, {{json .Field}} with optional spaces inside the braces
_ACTION = re.compile(r"\{\{\s*(?:(json)\s+)?\.(\w*)\s*\}\}")
_ANY_ACTION = re.compile(r"\{\{.*?\}\}")


def _title(field, headers):
    """A column title: the verb's own (Docker's "IMAGE ID"), else the field in upper case with
    words split ("CreatedSince" -> "CREATED SINCE"), as the docker CLI derives it."""
    if field in headers:
        return headers[field]
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", field).upper()


def _fill(text, row, headers=None):
    """Execute one template line against a row (headers given: make the header line)."""
    def action(m):
        as_json, field = m.group(1), m.group(2)
        if headers is not None:
            return _title(field, headers) if field else ""
        if not field:
            if not as_json:
                raise InvalidArgument("template: {{.}} prints nothing useful; use {{json .}}")
            return json.dumps(row)
        if field not in row:
            raise InvalidArgument(f"template: can't evaluate field {field} (fields: "
                                  f"{', '.join(sorted(row))})")
        value = row[field]
        return json.dumps(value) if as_json else str(value)

    rest = _ACTION.sub("", text)
    leftover = _ANY_ACTION.search(rest)
    if leftover:
        raise InvalidArgument(f"template: {leftover.group(0)} is not supported (use "
                              "{{.Field}}, {{json .}} or {{json .Field}})")
    return _ACTION.sub(action, text)


def _align(lines):
    """Columns split at tabs, padded to the widest cell, 3 spaces apart (our `_table`)."""
    cells = [line.split("\t") for line in lines]
    count = max(len(c) for c in cells)
    widths = [max(len(c[i]) for c in cells if i < len(c)) for i in range(count)]
    return ["   ".join(cell.ljust(w) for cell, w in zip(c, widths)).rstrip() for c in cells]


def render(rows, template, headers=None):
    """The output lines for `--format template` over rows (dicts), or None when the template
    asks for the verb's own table (`table` alone, or no template), which the caller prints.
    headers: Docker's column titles for this verb's fields ({"ID": "IMAGE ID", ...})."""
    if template in (None, "", "table"):
        return None
    if template == "json":
        return [json.dumps(r) for r in rows]
    # A template written on a command line carries "\t" and "\n" as two characters.
    text = template.replace("\\t", "\t").replace("\\n", "\n")
    if text.startswith("table"):
        body = text[len("table"):].strip(" ")
        if not body.strip():
            return None
        header = _fill(body, {}, headers or {})
        return _align([header] + [_fill(body, r) for r in rows])
    return [_fill(text, r) for r in rows]
