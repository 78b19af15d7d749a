"""The chapter 04 helpers: layers by hand with whiteouts, the union view, sharing, the explorer.

None of these needs a container or a privilege: a Binder user gets all of them.
"""
from ctrkernel.image.build import build
from ctrkernel.lessons import images as L


def test_a_layer_by_hand_records_a_deletion_as_a_whiteout_and_the_union_applies_it(tmp_path):
    empty, v1 = tmp_path / "empty", tmp_path / "v1"
    empty.mkdir()
    L.make_tree(v1, {"etc/keep": "1\n", "etc/gone": "2\n", "var/cache/a": "3\n"})
    v2 = tmp_path / "v2"
    L.make_tree(v2, {"etc/keep": "changed\n", "new": "4\n"})
    first, second = L.layer_from_change(empty, v1), L.layer_from_change(v1, v2)
    entries = {name: kind for name, kind, _ in L.tar_listing(second["blob"])}
    assert entries["etc/.wh.gone"] == "whiteout" and entries[".wh.var"] == "whiteout"
    assert "etc/keep" in entries and "new" in entries
    union = L.union_view([first, second], tmp_path / "union")
    assert L.tree_listing(union) == L.tree_listing(v2)
    assert (union / "etc" / "keep").read_text() == "changed\n"


def test_images_built_from_the_same_base_share_layers_and_the_explorer_marks_them(tmp_path):
    web, _ = build(L.web_context(tmp_path / "a", {"index.html": "a"}), tag="lesson-a:1")
    blog, _ = build(L.web_context(tmp_path / "b", {"index.html": "b"}), tag="lesson-b:1")
    numbers = L.sharing([web, blog])
    assert numbers["unique_layers"] == 4 and numbers["layers"] == 6
    assert numbers["bytes_stored"] < numbers["bytes_if_copied"]
    figure = L.layer_explorer([web, blog])
    labels = list(figure.data[0].labels)
    assert sum("(shared)" in label for label in labels) == 4  # 2 shared layers x 2 images
    assert "lesson-a:1" in labels and "bin/busybox" in labels
    rows = L.history(web)
    assert rows[0]["IMAGE"] == web.short_id and rows[-1]["CREATED BY"].startswith("/bin/sh -c #(nop) COPY")
