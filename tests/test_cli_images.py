"""The image verbs of the command line, run as a user runs them (`python -m ctrkernel ...`):
images, history, rmi, tag, image inspect, system df."""
import gzip
import json
import os
import re
import subprocess
import sys

import pytest

from ctrkernel.image import default_store, get_image


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                          text=True, timeout=300)


def rows_of(stdout):
    """A table as lists of cells (columns are separated by 2+ spaces)."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines()[1:] if line.strip()]


@pytest.fixture(scope="module")
def tagged():
    """busybox tagged as clitest:1 (the verbs below only touch names of their own)."""
    busybox = get_image("busybox")
    done = cli("tag", "busybox", "clitest:1")
    assert done.returncode == 0 and done.stdout == "", done.stderr
    return busybox


def test_tag_and_images_list_the_new_name_with_the_same_id(tagged):
    done = cli("images", "clitest")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED",
                                                   "SIZE"]
    (row,) = rows_of(done.stdout)
    assert row[:3] == ["clitest", "1", tagged.short_id] and row[-1].endswith("MB")
    assert cli("images", "-q", "clitest:1").stdout.split() == [tagged.short_id]
    assert cli("images", "-q", "--no-trunc", "clitest:1").stdout.split() == [tagged.id]
    lines = cli("images", "--format", "json").stdout.splitlines()
    found = [json.loads(l) for l in lines if json.loads(l)["Repository"] == "clitest"]
    assert found[0]["Tag"] == "1" and found[0]["ID"] == tagged.short_id


def test_tag_errors_exit_1_with_a_message():
    done = cli("tag", "no-such-image:9", "x:1")
    assert done.returncode == 1 and "no such image" in done.stderr.lower()
    done = cli("tag", "busybox", "Not_Valid:1")
    assert done.returncode == 1 and "invalid reference format" in done.stderr


def test_images_all_shows_the_intermediate_steps_of_a_build(tmp_path):
    (tmp_path / "a").write_text("a\n")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY a /a\nENV X=1\n")
    assert cli("build", "-q", "-t", "cliall:1", str(tmp_path)).returncode == 0
    plain, everything = cli("images", "-q").stdout.split(), cli("images", "-a", "-q").stdout.split()
    intermediate = set(everything) - set(plain)
    assert intermediate   # the COPY step's image: listed by -a only, as <none>
    rows = [r for r in rows_of(cli("images", "-a").stdout) if r[2] in intermediate]
    assert rows and all(r[:2] == ["<none>", "<none>"] for r in rows)


def test_history_rows_flags_and_raw_sizes(tagged):
    done = cli("history", "clitest:1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:3] == ["IMAGE", "CREATED", "CREATED"]
    rows = rows_of(done.stdout)
    assert len(rows) == len(tagged.config["history"])
    assert rows[0][0] == tagged.short_id and all(r[0] == "<missing>" for r in rows[1:])
    assert cli("history", "-q", "clitest:1").stdout.split()[0] == tagged.short_id
    full = cli("history", "--no-trunc", "clitest:1").stdout
    assert tagged.id in full and "busybox-static) and its applets in /" in full
    assert "…" in done.stdout and "applets in /" not in done.stdout   # truncated to 45
    raw = rows_of(cli("history", "-H=false", "clitest:1").stdout)
    layer_row = [r for r in raw if "ADD" in r[2]][0]
    assert re.match(r"\d{4}-\d\d-\d\dT", layer_row[1])
    assert int(layer_row[3]) == sum(len(gzip.decompress(default_store().blob_path(
        layer["digest"]).read_bytes())) for layer in tagged.layers)   # the tar's own bytes
    missing = cli("history", "nope:1")
    assert missing.returncode == 1 and "no such image" in missing.stderr.lower()


def test_image_inspect_prints_a_json_array_and_fails_on_a_missing_one(tagged):
    done = cli("image", "inspect", "clitest:1")
    assert done.returncode == 0, done.stderr
    (info,) = json.loads(done.stdout)
    assert info["Id"] == tagged.id and "clitest:1" in info["RepoTags"]
    assert info["RootFS"]["Layers"] == tagged.config["rootfs"]["diff_ids"]
    assert info["Config"]["Cmd"] == ["sh"]
    done = cli("image", "inspect", "clitest:1", "nope:2")
    assert done.returncode == 1 and "no such image: nope:2" in done.stderr.lower()
    assert len(json.loads(done.stdout)) == 1


def test_rmi_refuses_an_image_a_container_uses_then_untags_and_deletes(tmp_path):
    from ctrkernel.runtime import create

    (tmp_path / "f").write_text("only here\n")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY f /f\n")
    assert cli("build", "-q", "-t", "clirmi:1", str(tmp_path)).returncode == 0
    image = get_image("clirmi:1")
    own_layer = image.layers[-1]["digest"]
    c = create("clirmi:1", ["true"])            # created, never started: it still uses it
    try:
        done = cli("rmi", "clirmi:1")
        assert done.returncode == 1
        assert done.stderr.strip() == (
            'Error response from daemon: conflict: unable to remove repository reference '
            f'"clirmi:1" (must force) - container {c.short_id} is using its referenced image '
            f"{image.short_id}")
        done = cli("rmi", image.short_id)
        assert done.returncode == 1 and "(must be forced)" in done.stderr
        assert f"stopped container {c.short_id}" in done.stderr
        done = cli("rmi", "-f", "clirmi:1")          # forced: the name goes, the image stays
        assert done.returncode == 0 and done.stdout.splitlines() == ["Untagged: clirmi:1"]
        assert get_image(image.id).id == image.id
    finally:
        c.remove(force=True)
    done = cli("rmi", image.short_id)                # no container any more: deleted
    assert done.returncode == 0 and done.stdout.strip() == f"Deleted: {image.id}"
    assert not default_store().has_blob(own_layer)   # its own layer went with it
    assert default_store().has_blob(get_image("busybox").layers[0]["digest"])
    done = cli("rmi", "clirmi:1", "busybox:nosuchtag")
    assert done.returncode == 1 and done.stderr.count("no such image") == 2


def test_system_df_counts_shared_layers_once(tmp_path):
    for name in ("a", "b"):
        ctx = tmp_path / name
        ctx.mkdir()
        (ctx / "common.bin").write_bytes(b"\0" * 10)
        (ctx / "own.bin").write_bytes(os.urandom(20_000 if name == "a" else 40_000))
    common = os.urandom(300_000)
    for name in ("a", "b"):
        (tmp_path / name / "common.bin").write_bytes(common)
        (tmp_path / name / "Dockerfile").write_text(
            "FROM scratch\nCOPY common.bin /common.bin\nCOPY own.bin /own.bin\n")
        assert cli("build", "-q", "-t", f"clidf-{name}:1", str(tmp_path / name)).returncode == 0
    done = cli("system", "df")
    assert done.returncode == 0, done.stderr
    assert [r[0] for r in rows_of(done.stdout)] == ["Images", "Containers"]
    done = cli("system", "df", "-v")
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("Images space usage:")[1].split("Containers space usage:")[0]
    rows = {r[0]: r for r in rows_of(table.strip()) if r[0].startswith("clidf-")}
    # SIZE, SHARED SIZE, UNIQUE SIZE: the 300 kB layer is shared, each own.bin layer is not
    assert rows["clidf-a"][5] == rows["clidf-b"][5] == "302kB"
    assert (rows["clidf-a"][6], rows["clidf-b"][6]) == ("22kB", "42kB")
    assert (rows["clidf-a"][4], rows["clidf-b"][4]) == ("324kB", "344kB")


def test_unknown_flag_is_a_usage_error():
    done = cli("images", "--bogus")
    assert done.returncode == 125 and "unrecognized arguments" in done.stderr


def test_image_prune_removes_dangling_images_and_keeps_what_containers_use(tmp_path,
                                                                          monkeypatch):
    from ctrkernel.runtime import create
    # A home of its own: `prune -a` empties the store of everything no container uses.
    monkeypatch.setenv("CTRKERNEL_HOME", str(tmp_path / "home"))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nRUN echo one > /v\n")
    assert cli("build", "-q", "-t", "prunetest:1", str(tmp_path / "ctx")).returncode == 0
    old = default_store().get("prunetest:1")
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox\nRUN echo two > /v\n")
    assert cli("build", "-q", "-t", "prunetest:1", str(tmp_path / "ctx")).returncode == 0
    assert default_store().get(old.id).tags == []              # the tag moved: old dangles
    kept = create("prunetest:1", ["true"])                        # a container of the new one
    try:
        refused = cli("image", "prune")                           # no terminal, no -f
        assert refused.returncode == 1 and "-f" in refused.stderr
        done = cli("image", "prune", "-f")
        assert done.returncode == 0, done.stderr
        assert f"deleted: {old.id}" in done.stdout and "Total reclaimed space:" in done.stdout
        ids = cli("images", "-a", "-q", "--no-trunc").stdout.split()
        assert old.id not in ids and kept.attrs["ImageID"] in ids
        assert "busybox" in cli("images").stdout                  # tagged: not dangling
        done = cli("image", "prune", "-a", "-f")
        assert done.returncode == 0, done.stderr
        assert cli("images", "-q", "--no-trunc").stdout.split() == [kept.attrs["ImageID"]]
        assert default_store().fsck() == []
    finally:
        kept.remove()


def test_images_filters_as_docker_applies_them(tmp_path):
    """dangling, label, reference, before/since: each keeps what Docker's would, and an
    unknown filter is refused rather than ignored."""
    from ctrkernel.image import images
    ids = {}
    for step, (tag, label) in enumerate([("filt:old", "a"), ("filt:new", "b"),
                                         ("filt:new", "c")]):
        ctx = tmp_path / str(step)
        ctx.mkdir()
        (ctx / "f").write_text(f"{step}\n")
        (ctx / "Dockerfile").write_text(f"FROM busybox\nLABEL tier={label}\nCOPY f /f\n")
        done = cli("build", "-q", "-t", tag, str(ctx))
        assert done.returncode == 0, done.stderr
        ids[label] = done.stdout.strip()
    # the second filt:new build took the tag from the first: that image is now dangling
    dangling = cli("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout.split()
    assert ids["b"] in dangling and ids["a"] not in dangling and ids["c"] not in dangling
    tagged = cli("images", "-q", "--no-trunc", "-f", "dangling=false").stdout.split()
    assert ids["c"] in tagged and ids["b"] not in tagged
    assert cli("images", "-q", "--no-trunc", "-f", "label=tier=c").stdout.split() == [ids["c"]]
    # label=KEY alone: any value; two label filters must both match
    with_tier = cli("images", "-q", "--no-trunc", "-f", "label=tier").stdout.split()
    assert {ids["a"], ids["b"], ids["c"]} <= set(with_tier)
    assert cli("images", "-q", "-f", "label=tier", "-f", "label=tier=zzz").stdout == ""
    rows = rows_of(cli("images", "-f", "reference=fil*:old").stdout)
    assert [r[:2] for r in rows] == [["filt", "old"]]
    assert cli("images", "-q", "--no-trunc", "-f", "since=filt:old", "-f",
               "reference=filt").stdout.split() == [ids["c"]]
    assert cli("images", "-q", "--no-trunc", "-f", "before=filt:new", "-f",
               "reference=filt*").stdout.split() == [ids["a"]]
    # the core takes docker-py's filters dict (single values, booleans) directly
    assert [i.id for i in images(filters={"label": "tier=c"})] == [ids["c"]]
    assert ids["b"] in [i.id for i in images(filters={"dangling": True})]
    for bad, message in [("colour=red", "invalid filter 'colour'"),
                         ("dangling=maybe", "dangling=maybe"), ("nonsense", "bad format"),
                         ("since=no-such-image:1", "no such image")]:
        done = cli("images", "-f", bad)
        assert done.returncode == 1 and message in done.stderr.lower(), (bad, done.stderr)


def test_image_fsck_reports_a_missing_and_a_corrupt_blob(tmp_path):
    """`image fsck` is what "run fsck" in a digest error points to: it names each bad blob
    and exits 1; a sound store exits 0."""
    env = dict(os.environ, CTRKERNEL_HOME=str(tmp_path / "home"))

    def fsck(*flags):
        return subprocess.run([sys.executable, "-m", "ctrkernel", "image", "fsck", *flags],
                              env=env, capture_output=True, text=True, timeout=120)

    assert subprocess.run([sys.executable, "-m", "ctrkernel", "history", "busybox"], env=env,
                          capture_output=True, timeout=120).returncode == 0
    sound = fsck()
    assert sound.returncode == 0 and "sound" in sound.stdout, sound.stderr
    from ctrkernel.image import Store
    store = Store(tmp_path / "home" / "images")
    img = store.get("busybox")
    layer = store.blob_path(img.layers[0]["digest"])
    layer.write_bytes(layer.read_bytes()[:-1] + b"x")
    store.blob_path(img.id).unlink()                     # the config
    done = fsck("--format", "json")
    assert done.returncode == 1
    found = {p["digest"]: p["problem"] for p in json.loads(done.stdout)}
    assert set(found) == {img.layers[0]["digest"], img.id}, found
    table = fsck()
    assert table.returncode == 1 and img.id[:19] in table.stdout
