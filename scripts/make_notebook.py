#!/usr/bin/env python3
"""Turn percent-format sources (notebooks/src/*.py) into executed notebooks (notebooks/*.ipynb).

Source format (the one jupytext calls "percent"):

    # %% [markdown]
    # # A title
    # Some *markdown*.

    # %%
    import ctrkernel

    # %% tags=["raises-exception"]
    ctrkernel.something_that_fails()

Usage: scripts/make_notebook.py [--no-exec] [SOURCE.py ...]   (default: every source)
Notebooks are executed in notebooks/ with the current Python's kernel so their stored outputs
are real; nbval later re-runs them and compares the cells marked # NBVAL_CHECK_OUTPUT.
"""
import ast
import re
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MARKER = re.compile(r"^# %%(?P<kind> \[markdown\])?(?P<meta>.*)$")


def parse(text):
    cells, kind, meta, lines = [], None, "", []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        tags = re.search(r"tags=(\[.*?\])", meta)
        if tags:
            cell.metadata["tags"] = ast.literal_eval(tags.group(1))
        cells.append(cell)

    for line in text.splitlines():
        m = MARKER.match(line)
        if m:
            flush()
            kind = "markdown" if m.group("kind") else "code"
            meta, lines = m.group("meta"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build(source, execute=True, timeout=900):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = parse(Path(source).read_text())
    target = NOTEBOOKS / (Path(source).stem + ".ipynb")
    if execute:
        import os
        import shutil
        import tempfile

        from nbclient import NotebookClient
        # A throw-away state directory, so building notebooks leaves nothing on this machine
        # (the kernel inherits the environment).
        home = tempfile.mkdtemp(prefix="ctrkernel-nbbuild-")
        saved = os.environ.get("CTRKERNEL_HOME")
        os.environ["CTRKERNEL_HOME"] = home
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                           resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        finally:
            if saved is None:
                os.environ.pop("CTRKERNEL_HOME", None)
            else:
                os.environ["CTRKERNEL_HOME"] = saved
            shutil.rmtree(home, ignore_errors=True)
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
        cell["id"] = f"{Path(source).stem[:5].replace('.', '')}-{i:03d}"
    nbformat.write(nb, target)
    return target


def main(argv):
    execute = "--no-exec" not in argv
    sources = [a for a in argv if not a.startswith("--")] or sorted((NOTEBOOKS / "src").glob("*.py"))
    for source in sources:
        print(f"{source} -> {build(source, execute)}")


if __name__ == "__main__":
    main(sys.argv[1:])
