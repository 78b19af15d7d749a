"""Shared vs unique bytes of images (`docker system df -v`), on a store of its own."""
import os

import pytest

from ctrkernel.image import Store, create_image, layer_from_dir
from ctrkernel.image.usage import image_usage, summary


@pytest.fixture
def three_images(tmp_path):
    """base (one layer), web = base + html layer, api = base + app layer."""
    store = Store(tmp_path / "images")

    def layer(name, files):
        root = tmp_path / name
        root.mkdir()
        for rel, size in files.items():
            (root / rel).write_bytes(os.urandom(size))   # random: no compression luck
        return layer_from_dir(store, root)

    os_layer = layer("os", {"libc": 200_000})
    html, app = layer("html", {"index.html": 3_000}), layer("app", {"app.bin": 50_000})
    base = create_image(store, steps=[(os_layer, {"created_by": "os"})], tags=["base:1"])
    web = create_image(store, base, steps=[(html, {"created_by": "html"})], tags=["web:1"])
    api = create_image(store, base, steps=[(app, {"created_by": "app"})], tags=["api:1"])
    return store, (base, web, api), (os_layer, html, app)


def test_shared_and_unique_bytes_per_image(three_images):
    store, (base, web, api), (os_layer, html, app) = three_images
    rows = {r.image.tags[0]: r for r in image_usage([base, web, api], containers={})}
    assert rows["web:1"].size == os_layer.tar_size + html.tar_size
    assert rows["web:1"].shared == os_layer.tar_size          # the os layer is also base's
    assert rows["web:1"].unique == html.tar_size
    assert rows["api:1"].unique == app.tar_size > 50_000
    assert rows["base:1"].unique == 0                         # all of it is in web and api
    # Without base in the set, web and api still share the os layer with each other...
    pair = {r.image.tags[0]: r for r in image_usage([web, api], containers={})}
    assert pair["web:1"].shared == os_layer.tar_size
    # ...and an image alone shares nothing.
    (alone,) = image_usage([api], containers={})
    assert (alone.shared, alone.unique) == (0, os_layer.tar_size + app.tar_size)


def test_summary_counts_each_layer_once_and_what_containers_keep(three_images):
    store, (base, web, api), (os_layer, html, app) = three_images
    everything = os_layer.tar_size + html.tar_size + app.tar_size
    idle = summary(store=store, containers={})
    assert idle == {"total": 3, "active": 0, "size": everything, "reclaimable": everything}
    busy = summary(store=store, containers={web.id: 2})
    assert busy["active"] == 1 and busy["reclaimable"] == app.tar_size
    assert [r.containers for r in image_usage([web], containers={web.id: 2})] == [2]


def test_removing_an_image_frees_its_unique_layer_only(three_images):
    store, (base, web, api), (os_layer, html, app) = three_images
    store.remove("api:1")
    assert not store.has_blob(app.digest)                     # unique: gone
    assert store.has_blob(os_layer.digest)                    # shared: kept for base and web
    assert summary(store=store, containers={})["size"] == os_layer.tar_size + html.tar_size
