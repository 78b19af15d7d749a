"""Every link from one chapter to another points at a notebook that exists: a learner clicking
"Next" must land somewhere (file names are case-sensitive on Linux)."""
import json
import re
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
LINK = re.compile(r"\]\(([^)#\s]+\.ipynb)(?:#[^)]*)?\)")


def test_links_between_notebooks_resolve():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert len(notebooks) >= 5
    broken, seen = [], 0
    for nb in notebooks:
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for target in LINK.findall("".join(cell["source"])):
                seen += 1
                if not (nb.parent / target).is_file():
                    broken.append(f"{nb.name} -> {target}")
    assert seen, "no links between notebooks found: the pattern no longer matches"
    assert not broken, "broken notebook links:\n" + "\n".join(broken)
