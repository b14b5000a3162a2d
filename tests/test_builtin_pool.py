"""The built-in demonstration pool ``webquestions-train``: the WebQuestions train split shipped in the package (with
its licence and citation), the same pool, and so the same similar blocks, as the development copy of that split
(which holds the hub's train split record for record), without the hub; the wheel ships it."""

from __future__ import annotations

import copy
import fnmatch
import hashlib
from importlib import resources
from pathlib import Path

import pytest

from selfens_pl.data.demos import BUILT_IN_POOLS, attach_blocks, built_in_pool, load_pool
from selfens_pl.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "webquestions" / "train.jsonl"


def test_the_pool_is_shipped_with_its_notice():
    path = Path(built_in_pool("webquestions-train", "webqa"))
    assert path.parent == Path(str(resources.files("selfens_pl.resources")))
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3778
    notice = (path.parent / "NOTICE.txt").read_text(encoding="utf-8")
    for needed in ("webquestions_train.jsonl", "CC BY 4.0", "Berant", "2013", "stanfordnlp/web_questions",
                   "webquestions-train"):
        assert needed in notice, needed
    # every shipped resource is named by the wheel's package-data patterns
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["selfens_pl"]
    for name in ("webquestions_train.jsonl", "NOTICE.txt"):
        assert any(fnmatch.fnmatch(f"resources/{name}", p) for p in patterns), name


@pytest.mark.skipif(not SHARED_TRAIN.is_file(), reason="../shared/data is not beside this checkout")
def test_the_built_in_pool_is_the_train_split_and_gives_the_same_blocks():
    shipped = Path(built_in_pool("webquestions-train", "webqa")).read_bytes()
    assert hashlib.sha256(shipped).hexdigest() == hashlib.sha256(SHARED_TRAIN.read_bytes()).hexdigest()
    built_in, local = load_pool("webquestions-train", "webqa"), load_pool(str(SHARED_TRAIN), "webqa")
    assert len(built_in) == 3778 and built_in == local
    questions = ["who is the president of france?", "what language do they speak in brazil?",
                 "what is the name of justin bieber brother?", "where was barack obama born?"]
    groups = [{"id": f"q{i}", "paraphrases": [q], "answers": ["x"]} for i, q in enumerate(questions)]
    for selection in ("similar", "random"):
        a = attach_blocks(copy.deepcopy(groups), built_in, 3, 5, selection)
        b = attach_blocks(copy.deepcopy(groups), local, 3, 5, selection)
        assert a == b and all(len(g["blocks"]) == 2 and len(g["blocks"][0]) == 5 for g in a)
    # the pool holds the question itself (train 0): its blocks never show it, whatever the pool is called
    own = attach_blocks([{"id": "u", "paraphrases": [built_in[0]["question"]], "answers": ["x"]}], built_in, 3, 5,
                        "similar")[0]
    assert built_in[0]["question"] not in [d["question"] for block in own["blocks"] for d in block]


def test_the_name_is_one_task_s_pool():
    assert set(BUILT_IN_POOLS) == {"webquestions-train"}
    with pytest.raises(UserError, match=r"^--data.few_shot_pool='webquestions-train' is a built-in webqa pool; "
                                        r"--data.task is 'myriadlama'"):
        load_pool("webquestions-train", "myriadlama")
    with pytest.raises(UserError, match=r"^--data.few_shot_pool='webquestions-train' is a built-in webqa pool"):
        load_pool(["webquestions-train"], "myriadlama")
