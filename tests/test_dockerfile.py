"""Dockerfile parsing: forms, substitution, and malformed files refused with the line named.

These need no privileges and no images: a malformed Dockerfile must fail before any step runs.
"""
import pytest

from ctrkernel.errors import BuildError
from ctrkernel.image.dockerfile import copy_args, key_values, parse, substitute, words

GOOD = """\
# syntax is plain: comments, continuations, both forms
ARG BASE=busybox
FROM $BASE
ENV GREETING="hello world" \\
    NAME=${WHO:-learner}
# a comment between instructions
RUN echo one \\
  && echo two
CMD ["sh", "-c", "echo $GREETING"]
EXPOSE 80/tcp 53/udp
"""


def test_instructions_keep_their_first_line_and_join_continuations():
    found = [(i.line, i.keyword) for i in parse(GOOD)]
    assert found == [(2, "ARG"), (3, "FROM"), (4, "ENV"), (7, "RUN"), (9, "CMD"), (10, "EXPOSE")]
    run = parse(GOOD)[3]
    assert "echo one" in run.value and "echo two" in run.value and "\\" not in run.value
    assert run.exec_form() is None  # shell form
    assert parse(GOOD)[4].exec_form() == ["sh", "-c", "echo $GREETING"]


def test_env_values_substitute_variables_and_keep_quoted_spaces():
    env_line = parse(GOOD)[2]
    assert key_values(env_line, {}) == [("GREETING", "hello world"), ("NAME", "learner")]
    assert key_values(env_line, {"WHO": "ada"})[1] == ("NAME", "ada")


def test_substitution_follows_docker_rules():
    env = {"A": "x y", "EMPTY": ""}
    assert substitute("${A}-$A", env) == "x y-x y"
    assert substitute("${EMPTY:-d} ${A:+set} ${MISSING}", env) == "d set "
    assert substitute("'$A'", env) == "'$A'"  # single quotes keep it literal
    assert words('"$A" \\$A', env) == ["x y", "$A"]


def test_copy_flags_and_json_form():
    (copy,) = [i for i in parse("FROM scratch\nCOPY --chown=1000:100 a b /dst/\n")
               if i.keyword == "COPY"]
    assert copy_args(copy, {}) == (["a", "b"], "/dst/", (1000, 100))
    (add,) = [i for i in parse('FROM scratch\nADD ["my file", "/x"]\n') if i.keyword == "ADD"]
    assert copy_args(add, {}) == (["my file"], "/x", None)


@pytest.mark.parametrize("text, line, words_in_message", [
    ("FROM busybox\nRUN true\nBOGUS x\n", 3, "unknown instruction: BOGUS"),
    ("RUN true\nFROM busybox\n", 1, "no FROM"),
    ("# only a comment\nARG A=1\n", 2, "no FROM"),
    ('FROM busybox\n\nCMD ["sh", "-c"\n', 3, "invalid JSON"),
    ('FROM busybox\nENTRYPOINT ["sh", 1]\n', 2, "list of strings"),
    ("ARG 9lives\nFROM busybox\n", 1, "ARG: invalid name"),
    ("FROM busybox\nENV LONELY\n", 2, "needs a value"),
    ("FROM busybox\nLABEL a=b c\n", 2, "name=value"),
    ("FROM busybox\nEXPOSE eighty\n", 2, "invalid port"),
    ("FROM busybox\nCOPY onlyone\n", 2, "source and a destination"),
    ("FROM busybox\nCOPY --chown=ada a /b\n", 2, "numeric"),
    ("FROM busybox\nFROM busybox\n", 2, "multi-stage"),
    ("FROM busybox\nHEALTHCHECK CMD true\n", 2, "does not implement"),
    ("FROM busybox\nRUN true \\\n && true\nWORKDIR\n", 4, "at least one argument"),
])
def test_malformed_dockerfiles_name_the_line(text, line, words_in_message):
    with pytest.raises(BuildError) as caught:
        parse(text)
    assert caught.value.line == line
    assert words_in_message in str(caught.value)
    assert f"line {line}" in str(caught.value)


def test_an_arg_before_from_chooses_the_base_and_is_declared_again_to_be_used(tmp_path):
    from ctrkernel.image.build import build

    (tmp_path / "Dockerfile").write_text("ARG BASE=scratch\nARG WHO=nobody\nFROM ${BASE}\n"
                                         "ARG WHO\nENV GREETING=\"hi $WHO\" EMPTY=$BASE\n")
    image, log = build(tmp_path, buildargs={"WHO": "ada"})
    assert log[2] == "Step 3/5 : FROM ${BASE}"
    assert "GREETING=hi ada" in image.config["config"]["Env"]
    assert "EMPTY=" in image.config["config"]["Env"]  # BASE was not declared again
