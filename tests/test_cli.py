"""The command line: Docker-shaped verbs, help from docstrings, exit conventions."""
import json
import subprocess
import sys
from pathlib import Path

from ctrkernel.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                          text=True, timeout=120)


def test_help_lists_verbs():
    done = run_cli("--help")
    assert done.returncode == 0
    assert "doctor" in done.stdout


def test_doctor_json_is_one_object():
    done = run_cli("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["isolation"] in ("full", "rootless", "none")
    assert all({"name", "ok", "detail"} <= set(c) for c in report["checks"])


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "ctrkernel"
    assert script.exists(), "pip install should have created the ctrkernel command"
    done = subprocess.run([str(script), "doctor"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "isolation:" in done.stdout


def test_unknown_verb_is_a_usage_error(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as e:
        assert e.code == 2
    assert "invalid choice" in capsys.readouterr().err
