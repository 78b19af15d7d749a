"""The live dashboard in a real browser: JupyterLab 4 + headless Chromium (Playwright).

A notebook starts a CPU-bound container (or, where containers cannot run, a plain busy process)
and shows the live dashboard; a second cell then keeps the kernel busy for a few seconds. From
the page we check that the plotly chart is drawn and that its line gains points *while the other
cell runs*: the background sampler pushes to the browser without the main thread. A screenshot
is kept in tests/artifacts/.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CONTAINER = "ctrkernel-browser-dash"

SETUP = f"""\
import subprocess
from ctrkernel.host import doctor
from ctrkernel.widgets import Dashboard
from ctrkernel.runtime.cgroups import Resources
try:
    from ctrkernel.runtime import run
    doctor().require("pidns", "the browser test's container")
    target = run("busybox", ["sh", "-c", "while :; do :; done"], detach=True, name="{CONTAINER}",
                 resources=Resources(nano_cpus=500_000_000, memory=64 << 20, pids_limit=32))
except Exception as e:
    print("no container here, a plain process instead:", e)
    target = subprocess.Popen(["sh", "-c", "while :; do :; done"])
dash = Dashboard(target, interval=0.25, title="browser test")
dash.show()
"""
# Busy for up to a minute; the test interrupts it once it has measured.
BUSY = "import time\nfor _ in range(600):\n    time.sleep(0.1)"
CLEANUP = "dash.stop()\nhasattr(target, 'remove') and target.remove(force=True)\n" \
          "hasattr(target, 'kill') and target.kill()"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.timeout(180),
]


def _notebook(path):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(BUSY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(path))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


@pytest.fixture
def jupyter_lab():
    root = Path(tempfile.mkdtemp(prefix="ctrkernel-lab-"))
    for sub in ("notebooks", "runtime", "config", "data-home", "workspaces"):
        (root / sub).mkdir()
    _notebook(root / "notebooks" / "dashboard.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    settings = root / "config" / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(root / "config" / "lab-settings"),
               JUPYTER_CONFIG_DIR=str(root / "config"), HOME=str(root / "data-home"))
    jupyter = Path(sys.executable).parent / "jupyter"
    proc = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
         "--port", str(port), f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=None", f"--LabApp.workspaces_dir={root / 'workspaces'}",
         "--ServerApp.open_browser=False"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(root / "lab.log", "w"),
        start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
        yield f"http://127.0.0.1:{port}", token, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)          # the server and the kernels it started
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _remove_container()
        shutil.rmtree(root, ignore_errors=True)


def _remove_container():
    from ctrkernel.errors import CtrkernelError
    try:
        from ctrkernel.runtime import get
        get(CONTAINER).remove(force=True)
    except (CtrkernelError, ImportError):
        pass


POINTS_JS = """() => {
    const plots = document.querySelectorAll('.jp-OutputArea .js-plotly-plot');
    if (!plots.length) return null;
    const gd = plots[0];
    const path = gd.querySelector('g.trace.scatter path.js-line');
    const d = path ? path.getAttribute('d') || '' : '';
    return {plots: plots.length, svgPoints: (d.match(/[ML]/g) || []).length,
            dataPoints: gd.data && gd.data.length > 2 ? gd.data[2].x.length : 0,
            traces: gd.data ? gd.data.length : 0};
}"""

SECOND_CELL_PROMPT_JS = """() => {
    const prompts = document.querySelectorAll('.jp-Cell .jp-InputArea-prompt');
    return prompts.length > 1 ? prompts[1].textContent.trim() : null;
}"""

KERNEL_STATUS_JS = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return k ? k.status : null;
}"""


def test_live_dashboard_updates_in_the_browser(jupyter_lab):
    from playwright.sync_api import sync_playwright
    base, token, root = jupyter_lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        # A fresh profile directory for this run only (Playwright wants it passed this way).
        browser = p.chromium.launch_persistent_context(
            str(root / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
            viewport={"width": 1400, "height": 1000})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(f"{base}/lab/tree/dashboard.ipynb?token={token}")
            page.wait_for_function(KERNEL_STATUS_JS.replace("return k ? k.status : null;",
                                                            "return k && k.status === 'idle';"),
                                   timeout=60_000)
            # Not awaited: the command's promise resolves only when every cell has run.
            page.evaluate("() => { window.jupyterapp.commands.execute("
                          "'notebook:run-all-cells'); }")
            # The chart appears once the first cell has run; the second is then busy sleeping.
            page.wait_for_function("() => { const r = (" + POINTS_JS + ")(); "
                                   "return r && r.svgPoints >= 4; }", timeout=60_000)
            first = page.evaluate(POINTS_JS)
            busy = page.evaluate(SECOND_CELL_PROMPT_JS)
            time.sleep(3)
            second = page.evaluate(POINTS_JS)
            still_busy = page.evaluate(SECOND_CELL_PROMPT_JS)
            page.screenshot(path=str(ARTIFACTS / "browser_dashboard.png"), full_page=True)
            # Interrupt the busy cell, then tidy up in the kernel (stop sampling, remove the
            # container) before the server goes.
            kernel = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
            page.evaluate(f"() => {kernel}.interrupt()")
            page.evaluate(f"(code) => {kernel}.requestExecute({{code}}).done", CLEANUP)
        finally:
            browser.close()
    assert first["plots"] >= 1 and first["traces"] == 6, first
    # "[*]:" is JupyterLab's prompt of a cell that is running.
    assert busy == still_busy == "[*]:", f"the second cell should still run: {busy}, {still_busy}"
    assert second["svgPoints"] > first["svgPoints"] + 4, (first, second)
    assert second["dataPoints"] > first["dataPoints"], (first, second)
    print(json.dumps({"first": first, "second": second}))
