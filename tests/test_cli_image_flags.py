"""Docker's flags of the image verbs, run as a user runs them (`python -m ctrkernel ...`):
build --label/--iidfile/--rm/--force-rm, images --digests/--format, history --format and its
IMAGE column for a local build, rmi --no-prune, commit --pause/-m/-a, the exit statuses of
save/load, and what `image fsck` says about the extracted-layer cache."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import requires_isolation
from ctrkernel.image import Store, get_image


def cli(*args, env=None, input=None):
    return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                          text=input is None, timeout=300, env=env, input=input)


def rows_of(stdout):
    """A table as lists of cells (columns are separated by 2+ spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines()[1:] if line.strip()]


def build(ctx, *flags, env=None):
    done = cli("build", *flags, str(ctx), env=env)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """busybox + COPY + ENV, tagged flagtest:1; the build log's step ids, oldest first."""
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "a").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a /a\nENV X=1\n")
    done = build(ctx, "--no-cache", "-t", "flagtest:1")
    steps = re.findall(r"^ ---> ([0-9a-f]{12})$", done.stdout, re.M)
    return get_image("flagtest:1"), steps


def test_build_label_iidfile_and_rm_flags(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nLABEL from=dockerfile\n")
    iid = tmp_path / "out" / "iid"
    iid.parent.mkdir()
    iid.write_text("stale")
    done = build(tmp_path, "-q", "--label", "tier=web", "--label", "note=x $HOME y",
                 "--label", "empty", "--iidfile", str(iid), "--rm", "--force-rm", "-t", "lbl:1")
    (image_id,) = done.stdout.split()          # -q: the id and nothing else
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    assert iid.read_text() == image_id         # docker writes the id alone, no newline
    (info,) = json.loads(cli("image", "inspect", "lbl:1").stdout)
    assert info["Id"] == image_id
    assert info["Config"]["Labels"] == {"from": "dockerfile", "tier": "web",
                                        "note": "x $HOME y", "empty": ""}   # taken literally
    top = json.loads(cli("history", "--format", "{{json .}}", "--no-trunc", "lbl:1")
                     .stdout.splitlines()[0])
    assert "LABEL" in top["CreatedBy"] and "tier=web" in top["CreatedBy"]
    # filtering by the label finds it, as with a LABEL line
    assert cli("images", "-q", "--no-trunc", "-f", "label=tier=web").stdout.split() == [image_id]
    assert build(tmp_path, "-q", "--rm=false", "--label", "tier=web", "--label",
                 "note=x $HOME y", "--label", "empty").stdout.split() == [image_id]  # cached
    assert "always" in cli("build", "--help").stdout     # help says containers always go


def test_images_digests_no_trunc_and_templates(built):
    image, _ = built
    done = cli("images", "--digests", "flagtest")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID",
                                                   "CREATED", "SIZE"]
    (row,) = rows_of(done.stdout)
    (info,) = json.loads(cli("image", "inspect", "flagtest:1").stdout)
    assert row[:4] == ["flagtest", "1", info["Descriptor"]["digest"], image.short_id]
    assert rows_of(cli("images", "--no-trunc", "flagtest").stdout)[0][2] == image.id
    table = cli("images", "--format", "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}", "flagtest")
    assert table.stdout.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID"]
    assert rows_of(table.stdout) == [["flagtest", "1", image.short_id]]
    plain = cli("images", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}", "flagtest")
    assert plain.stdout == f"flagtest:1 {image.manifest_digest}\n"
    whole = json.loads(cli("images", "--format", "{{json .}}", "flagtest").stdout)
    assert whole["ID"] == image.short_id and whole["Tag"] == "1"
    assert cli("images", "--format", "{{json .Tag}}", "flagtest").stdout == '"1"\n'
    bad = cli("images", "--format", "{{.Nope}}")
    assert bad.returncode == 1 and "can't evaluate field Nope" in bad.stderr


def test_history_shows_the_build_steps_ids_and_formats(built):
    image, steps = built
    busybox = get_image("busybox")
    rows = rows_of(cli("history", "flagtest:1").stdout)
    ids = [r[0] for r in rows]
    # newest first: the image, the COPY step's image, busybox (FROM); below it, busybox's own
    # steps were never images here
    assert ids[:3] == [image.short_id, steps[1], busybox.short_id]
    assert steps[0] == busybox.short_id and steps[2] == image.short_id
    assert ids[3:] and all(i == "<missing>" for i in ids[3:])
    full = cli("history", "-q", "--no-trunc", "flagtest:1").stdout.split()
    assert full[0] == image.id and full[2] == busybox.id
    assert full[1] in cli("images", "-a", "-q", "--no-trunc").stdout.split()
    table = cli("history", "--format", "table {{.ID}}\\t{{.CreatedBy}}\\t{{.Size}}",
                "flagtest:1")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["IMAGE", "CREATED", "BY", "SIZE"]
    assert [r[0] for r in rows_of(table.stdout)] == ids
    assert "ENV X=1" in table.stdout.splitlines()[1]
    raw = cli("history", "-H=false", "--no-trunc", "--format", "{{.ID}} {{.Size}}",
              "flagtest:1").stdout.splitlines()
    assert raw[0] == f"{image.id} 0" and re.fullmatch(r"\S+ \d+", raw[1])
    lines = [json.loads(l) for l in cli("history", "--format", "json", "flagtest:1")
             .stdout.splitlines()]
    assert [l["ID"] for l in lines] == ids and lines[0]["CreatedBy"].endswith("ENV X=1")
    # `docker inspect` names the image each step started from; busybox was made here, not
    # built from another image
    (info,) = json.loads(cli("image", "inspect", "flagtest:1").stdout)
    assert info["Parent"] == full[1]
    (info,) = json.loads(cli("image", "inspect", "busybox").stdout)
    assert info["Parent"] == ""


def test_rmi_no_prune_keeps_the_intermediate_steps(tmp_path):
    (tmp_path / "f").write_text("no-prune\n")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY f /f\nENV Y=2\n")
    image_id = build(tmp_path, "-q", "--no-cache", "-t", "noprune:1").stdout.strip()
    before = set(cli("images", "-a", "-q", "--no-trunc").stdout.split())
    steps = [i for i in cli("history", "-q", "--no-trunc", "noprune:1").stdout.split()
             if i not in (image_id, get_image("busybox").id, "<missing>")]
    assert steps and set(steps) <= before
    done = cli("rmi", "--no-prune", "noprune:1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Untagged: noprune:1", f"Deleted: {image_id}"]
    after = set(cli("images", "-a", "-q", "--no-trunc").stdout.split())
    assert set(steps) <= after and image_id not in after
    # the step left without a child is an image of its own now: <none> in `images`
    assert steps[0] in cli("images", "-q", "--no-trunc").stdout.split()
    done = cli("rmi", steps[0])                  # the rest of the chain goes with it now
    assert done.returncode == 0, done.stderr
    assert not set(steps) & set(cli("images", "-a", "-q", "--no-trunc").stdout.split())


@requires_isolation("full")
def test_commit_pauses_a_running_container_unless_told_not_to():
    from ctrkernel.runtime import create, get
    c = create("busybox", ["sh", "-c", "dd if=/dev/urandom of=/big bs=1M count=64 "
                                       "2>/dev/null; echo ready; exec sleep 300"])
    try:
        c.start()
        deadline = time.time() + 60
        while b"ready" not in c.logs() and time.time() < deadline:
            time.sleep(0.1)
        assert b"ready" in c.logs()

        def commit_watching(*flags):
            """Run `commit`, polling the container's status (as `docker ps` shows it)."""
            proc = subprocess.Popen([sys.executable, "-m", "ctrkernel", "commit", *flags,
                                     c.id], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            seen = set()
            while proc.poll() is None:
                seen.add(get(c.id).status)
                time.sleep(0.005)
            out, err = proc.communicate()
            assert proc.returncode == 0, err
            return out.strip(), seen

        image_id, seen = commit_watching("-m", "a snapshot", "-a", "Ada <ada@example.org>")
        assert "paused" in seen and get(c.id).status == "running"
        (info,) = json.loads(cli("image", "inspect", image_id).stdout)
        assert info["Author"] == "Ada <ada@example.org>" and info["Comment"] == "a snapshot"
        second, seen = commit_watching("--pause=false")
        assert seen == {"running"} and get(c.id).status == "running"
        assert cli("rmi", image_id, second).returncode == 0
    finally:
        c.remove(force=True)


def test_save_and_load_failures_exit_1(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"junk" * 1000)
    for done in (cli("load", "-i", str(junk)), cli("load", input=b"junk" * 1000),
                 cli("load", "-i", str(tmp_path / "missing.tar"))):
        assert done.returncode == 1, done.stderr
        assert b"Traceback" not in (done.stderr if isinstance(done.stderr, bytes)
                                    else done.stderr.encode())
    missing = cli("save", "-o", str(tmp_path / "x.tar"), "no-such-image:1")
    assert missing.returncode == 1 and "no such image" in missing.stderr
    assert not (tmp_path / "x.tar").exists()
    nowhere = cli("save", "-o", str(tmp_path / "no" / "dir" / "x.tar"), "busybox")
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    assert "no such file" in nowhere.stderr.lower()
    assert cli("save", "--bogus").returncode == 125      # a flag error stays Docker's 125


def test_image_fsck_reports_the_extracted_layer_cache(tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, CTRKERNEL_HOME=str(home))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "f").write_text("extracted\n")
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nCOPY f /f\n")
    build(tmp_path / "ctx", "-q", "-t", "fsck:1", env=env)
    store = Store(home / "images")
    img = store.get("fsck:1")
    img.layer_dirs()                                # extracted, as a container start does
    sound = cli("image", "fsck", env=env)
    assert sound.returncode == 0 and "sound" in sound.stdout, sound.stdout
    # the image goes but (as after an interrupted removal) gc never ran: its tree stays
    own = store.layers / img.diff_ids[-1].partition(":")[2]
    store.remove("fsck:1", prune=False)
    assert own.is_dir()
    # a partial extraction an interrupted process left, and one that may still be running
    stale = store.tmp / "layer-interrupted"
    (stale / "tree").mkdir(parents=True)
    os.utime(stale, (time.time() - 7200,) * 2)
    (store.tmp / "layer-live" / "tree").mkdir(parents=True)
    done = cli("image", "fsck", "--format", "json", env=env)
    assert done.returncode == 1
    problems = {p["what"]: p["problem"] for p in json.loads(done.stdout)}
    assert problems == {f"extracted layer {own}": "extracted, but no image in the store has "
                                                  "this layer",
                        f"extraction {stale}": "partial extraction left by an interrupted "
                                               "process"}, problems
    # a layer whose blob went missing under an image that still names it
    base = store.get("busybox")
    base_dir = store.layers / base.diff_ids[0].partition(":")[2]
    assert base_dir.is_dir()
    store.blob_path(base.layers[0]["digest"]).unlink()
    table = cli("image", "fsck", env=env)
    assert table.returncode == 1
    assert f"extracted layer {base_dir}" in table.stdout
    assert f"its layer blob {base.layers[0]['digest']} is missing" in table.stdout
