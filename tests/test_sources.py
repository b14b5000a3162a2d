import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfens_pl.data.sources import (
    group_myriadlama,
    load_myriadlama_groups,
    load_myriadlama_rows,
    load_webqa,
    myriadlama_few_shot,
    myriadlama_groups,
    sample_few_shot,
    select_paraphrases,
    split_facts,
    webqa_groups,
)

FIX = Path(__file__).parent / "fixtures"
WEBQA = FIX / "webqa_tiny.jsonl"
ROWS = FIX / "myriadlama_rows_tiny.jsonl"
GROUPED = FIX / "myriadlama_grouped_tiny.jsonl"
REPO = Path(__file__).resolve().parents[1]
REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "myriadlama" / "dev.jsonl"


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _many_facts(n):
    return [
        {
            "uuid": f"u{i:03d}",
            "answers": [f"a{i}"],
            "manual_paraphrases": [f"m{i}-{j} [MASK]." for j in range(4)],
            "auto_paraphrases": [f"x{i}-{j} [MASK]." for j in range(6)],
        }
        for i in range(n)
    ]


# ---------------------------------------------------------------- WebQuestions


def test_load_webqa_jsonl_and_groups():
    recs = load_webqa(str(WEBQA))
    assert len(recs) == 6
    assert recs[0]["question"] == "what is the name of justin bieber brother?"
    assert recs[0]["answers"] == ["Jazmyn Bieber", "Jaxon Bieber"]
    groups = webqa_groups(recs)
    assert [g["id"] for g in groups] == [f"webqa-{i}" for i in range(6)]
    assert groups[1] == {
        "id": "webqa-1",
        "paraphrases": ["what character did natalie portman play in star wars?"],
        "answers": ["Padmé Amidala"],
        "confidences": None,
    }
    assert webqa_groups(recs, id_prefix="wq")[5]["id"] == "wq-5"


def test_load_webqa_json_parquet_and_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    raw = _jsonl(WEBQA)
    expected = load_webqa(str(WEBQA))
    (tmp_path / "w.json").write_text(json.dumps(raw), encoding="utf-8")
    assert load_webqa(str(tmp_path / "w.json")) == expected
    ds = datasets.Dataset.from_list(raw)
    ds.to_parquet(str(tmp_path / "w.parquet"))
    assert load_webqa(str(tmp_path / "w.parquet")) == expected
    ds.save_to_disk(str(tmp_path / "disk"))
    assert load_webqa(str(tmp_path / "disk")) == expected
    datasets.DatasetDict({"test": ds.select(range(2)), "train": ds}).save_to_disk(str(tmp_path / "dd"))
    assert load_webqa(str(tmp_path / "dd"), split="test") == expected[:2]
    assert load_webqa(str(tmp_path / "dd"), split="train") == expected
    with pytest.raises(ValueError, match="nope"):
        load_webqa(str(tmp_path / "dd"), split="nope")


def test_load_webqa_url_optional(tmp_path):
    p = _write_jsonl(tmp_path / "a.jsonl", [{"question": "q?", "answers": ["a"]}])
    assert load_webqa(str(p)) == [{"question": "q?", "answers": ["a"], "url": None}]


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"answers": ["a"]}, "question"),
        ({"question": "", "answers": ["a"]}, "question"),
        ({"question": 3, "answers": ["a"]}, "question"),
        ({"question": "q?"}, "answers"),
        ({"question": "q?", "answers": []}, "answers"),
        ({"question": "q?", "answers": "a"}, "answers"),
        ({"question": "q?", "answers": ["a", 1]}, "answers"),
        ({"question": "q?", "answers": ["a"], "url": 5}, "url"),
    ],
)
def test_load_webqa_bad_record_jsonl(tmp_path, bad, field):
    good = {"question": "q?", "answers": ["a"]}
    p = tmp_path / "bad.jsonl"
    # a blank line before the bad record: the reported number is the line number
    p.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as exc:
        load_webqa(str(p))
    msg = str(exc.value)
    assert "line 3" in msg and repr(field) in msg and "bad.jsonl" in msg


def test_load_webqa_bad_record_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"question": "q1?", "answers": ["a"]}, {"question": "q2?", "answers": []}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(ValueError, match=r"record 2: field 'answers'"):
        load_webqa(str(tmp_path / "bad.parquet"))


def test_load_webqa_invalid_json_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"question": "q?", "answers": ["a"]}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_webqa(str(p))


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.json", "missing.parquet", "sub/dir/data"])
def test_missing_local_path(tmp_path, name):
    target = str(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing|data"):
        load_webqa(target)
    with pytest.raises(FileNotFoundError):
        load_myriadlama_rows(target)
    with pytest.raises(FileNotFoundError):
        load_myriadlama_groups(target)


def test_missing_relative_file():
    with pytest.raises(FileNotFoundError, match="no_such_webqa.jsonl"):
        load_webqa("no_such_webqa.jsonl")


def test_sample_few_shot_deterministic_and_excludes():
    recs = load_webqa(str(WEBQA))
    a = sample_few_shot(recs, k=3, seed=7)
    assert a == sample_few_shot(recs, k=3, seed=7)
    assert len(a) == 3 and all(set(d) == {"question", "answer"} for d in a)
    by_q = {r["question"]: r["answers"][0] for r in recs}
    assert all(by_q[d["question"]] == d["answer"] for d in a)
    assert len({d["question"] for d in a}) == 3
    excluded = [r["question"] for r in recs[:4]]
    b = sample_few_shot(recs, k=2, seed=7, exclude_questions=excluded)
    assert {d["question"] for d in b} == {recs[4]["question"], recs[5]["question"]}
    seeds = {tuple(d["question"] for d in sample_few_shot(recs, k=6, seed=s)) for s in range(10)}
    assert len(seeds) > 1  # the seed matters
    with pytest.raises(ValueError, match="k=3"):
        sample_few_shot(recs, k=3, exclude_questions=excluded)


# ------------------------------------------------------------------ MyriadLAMA


def test_load_and_group_rows():
    rows = load_myriadlama_rows(str(ROWS))
    assert len(rows) == 12
    facts = group_myriadlama(rows)
    assert [f["uuid"] for f in facts] == ["f1", "f2", "f3"]
    f1, f2, f3 = facts
    assert f1["answers"] == ["Paris", "City of Light"]  # deduped, order kept
    assert f1["manual_paraphrases"] == ["The capital of France is [MASK].", "France's capital city is [MASK]."]
    assert f1["auto_paraphrases"] == [
        "[MASK] is the seat of government of France.",
        "Which city is the capital of France? [MASK].",
    ]
    assert f2["manual_paraphrases"] == ["Ada Lovelace was born in [MASK]."]  # duplicate row dropped
    assert f2["auto_paraphrases"] == ["The birthplace of Ada Lovelace is [MASK]."]
    assert f3["auto_paraphrases"] == ["You can find Kyoto in [MASK].", "[MASK] contains Kyoto."]
    for f in facts:
        for p in f["manual_paraphrases"] + f["auto_paraphrases"]:
            assert "[X]" not in p and "[Y]" not in p and p.count("[MASK]") == 1


def test_load_rows_parquet_and_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    raw = _jsonl(ROWS)
    expected = load_myriadlama_rows(str(ROWS))
    ds = datasets.Dataset.from_list(raw)
    ds.to_parquet(str(tmp_path / "r.parquet"))
    assert load_myriadlama_rows(str(tmp_path / "r.parquet")) == expected
    ds.save_to_disk(str(tmp_path / "disk"))
    assert load_myriadlama_rows(str(tmp_path / "disk")) == expected


@pytest.mark.parametrize(
    "field, value",
    [("uuid", None), ("sub_ent", ""), ("template", 1), ("obj_aliases", []), ("obj_aliases", "Paris"),
     ("is_manual", "yes"), ("is_manual", None), ("rel_uri", 3)],
)
def test_load_rows_bad_field(tmp_path, field, value):
    raw = _jsonl(ROWS)[:3]
    if value is None:
        del raw[1][field]
    else:
        raw[1][field] = value
    p = _write_jsonl(tmp_path / "rows.jsonl", raw)
    with pytest.raises(ValueError) as exc:
        load_myriadlama_rows(str(p))
    assert "line 2" in str(exc.value) and repr(field) in str(exc.value)


def test_group_template_without_y():
    rows = load_myriadlama_rows(str(ROWS))
    rows[4] = dict(rows[4], template="[X] was born somewhere.")
    with pytest.raises(ValueError, match="f2"):
        group_myriadlama(rows)


def test_load_grouped_fixture_and_bad_fields(tmp_path):
    facts = load_myriadlama_groups(GROUPED)
    assert len(facts) == 3
    assert facts[0]["uuid"] == "17455b48df8b5f0-410dd1a3f8e8229"
    assert facts[0]["answers"][0] == "battery"
    assert len(facts[0]["manual_paraphrases"]) == 3 and len(facts[0]["auto_paraphrases"]) >= 1
    for field, value in [("uuid", None), ("answers", []), ("manual_paraphrases", "x"), ("auto_paraphrases", None)]:
        raw = _jsonl(GROUPED)
        if value is None:
            del raw[2][field]
        else:
            raw[2][field] = value
        p = _write_jsonl(tmp_path / "g.jsonl", raw)
        with pytest.raises(ValueError) as exc:
            load_myriadlama_groups(p)
        assert "line 3" in str(exc.value) and repr(field) in str(exc.value)


@pytest.mark.skipif(not REAL_DEV.exists(), reason="shared MyriadLAMA dev split not available")
def test_load_real_dev():
    facts = load_myriadlama_groups(REAL_DEV)
    assert len(facts) == 200
    assert len({f["uuid"] for f in facts}) == 200
    groups = myriadlama_groups(facts, num_manual=1, num_auto=1)
    assert all(len(g["paraphrases"]) == 2 for g in groups)


def test_split_facts_deterministic_and_order_free():
    facts = _many_facts(50)
    train, test = split_facts(facts, test_size=10, seed=3)
    assert len(test) == 10 and len(train) == 40
    assert {f["uuid"] for f in train} | {f["uuid"] for f in test} == {f["uuid"] for f in facts}
    assert not {f["uuid"] for f in train} & {f["uuid"] for f in test}
    assert split_facts(list(reversed(facts)), test_size=10, seed=3) == (train, test)
    assert split_facts(facts, test_size=10, seed=4) != (train, test)
    assert split_facts(facts, test_size=50)[0] == []
    with pytest.raises(ValueError, match="test_size=51"):
        split_facts(facts, test_size=51)


def test_select_paraphrases():
    fact = _many_facts(1)[0]
    sel = select_paraphrases(fact, 2, 3)
    assert sel == select_paraphrases(dict(fact), 2, 3)
    manual, auto = sel[:2], sel[2:]
    assert all(p.startswith("m") for p in manual) and all(p.startswith("x") for p in auto)
    # original relative order kept
    assert manual == [p for p in fact["manual_paraphrases"] if p in manual]
    assert auto == [p for p in fact["auto_paraphrases"] if p in auto]
    assert select_paraphrases(fact, 4, 0) == fact["manual_paraphrases"]
    assert select_paraphrases(fact, 0, 0) == []
    # the uuid drives the choice: some uuids pick different subsets
    picks = {tuple(select_paraphrases(dict(fact, uuid=f"id{i}"), 1, 2)) for i in range(20)}
    assert len(picks) > 1
    with pytest.raises(ValueError, match=r"u000.*5"):
        select_paraphrases(fact, 5, 0)
    with pytest.raises(ValueError, match=r"u000.*7"):
        select_paraphrases(fact, 1, 7)


_SUBPROCESS = """
import json, sys
from selfens_pl.data.sources import select_paraphrases, split_facts
facts = json.load(sys.stdin)
train, test = split_facts(facts, test_size=7, seed=11)
print(json.dumps({"test": [f["uuid"] for f in test],
                  "sel": [select_paraphrases(f, 2, 2) for f in facts]}))
"""


def test_reproducible_across_processes():
    facts = _many_facts(30)
    train, test = split_facts(facts, test_size=7, seed=11)
    here = {"test": [f["uuid"] for f in test], "sel": [select_paraphrases(f, 2, 2) for f in facts]}
    for hashseed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(REPO))
        out = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS], input=json.dumps(facts), capture_output=True,
            text=True, env=env, cwd=str(REPO), check=True,
        )
        assert json.loads(out.stdout) == here


def test_myriadlama_groups():
    facts = group_myriadlama(load_myriadlama_rows(str(ROWS)))
    groups = myriadlama_groups(facts)
    assert [g["id"] for g in groups] == ["f1", "f2", "f3"]
    assert groups[0]["answers"] == ["Paris", "City of Light"] and groups[0]["confidences"] is None
    assert all(len(g["paraphrases"]) == 1 for g in groups)
    assert groups[1]["paraphrases"] == ["Ada Lovelace was born in [MASK]."]
    g = myriadlama_groups(facts, num_manual=1, num_auto=1)
    assert g[1]["paraphrases"] == ["Ada Lovelace was born in [MASK].", "The birthplace of Ada Lovelace is [MASK]."]
    with pytest.raises(ValueError, match="f2"):
        myriadlama_groups(facts, num_manual=2)
    with pytest.raises(ValueError):
        myriadlama_groups(facts, num_manual=0, num_auto=0)


def test_myriadlama_few_shot():
    facts = _many_facts(20)
    a = myriadlama_few_shot(facts, k=5, seed=1)
    assert a == myriadlama_few_shot(list(reversed(facts)), k=5, seed=1)
    assert len(a) == 5 and len({d["answer"] for d in a}) == 5
    by_answer = {f["answers"][0]: f for f in facts}
    assert all(d["question"] in by_answer[d["answer"]]["manual_paraphrases"] for d in a)
    with pytest.raises(ValueError, match="k=21"):
        myriadlama_few_shot(facts, k=21)


def test_hub_ids_go_to_load_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        if name == "iszhaoxin/MyriadLAMA":
            return _jsonl(ROWS)
        return _jsonl(WEBQA)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_webqa()) == 6
    assert len(load_myriadlama_rows()) == 12
    assert calls == [("stanfordnlp/web_questions", "test"), ("iszhaoxin/MyriadLAMA", "train")]
    with pytest.raises(FileNotFoundError):  # grouped files are local only
        load_myriadlama_groups("someone/grouped")


def test_start_and_limit_take_a_slice_of_the_groups():
    """``--data.start S --data.limit L``: groups S .. S+L-1 of the file, in order; a bad start is one error naming
    the flag."""
    from selfens_pl.data.datamodule import ParaphraseDataModule, demo_path
    from selfens_pl.errors import UserError

    every = ParaphraseDataModule(path=demo_path(), few_shot=[])
    every.setup()
    ids = [g["id"] for g in every.groups]
    sliced = ParaphraseDataModule(path=demo_path(), start=3, limit=4, few_shot=[])
    sliced.setup()
    assert [g["id"] for g in sliced.groups] == ids[3:7]
    tail = ParaphraseDataModule(path=demo_path(), start=len(ids) - 2, few_shot=[])
    tail.setup()
    assert [g["id"] for g in tail.groups] == ids[-2:]
    for bad, message in ((len(ids), "skips every group"), (-1, "whole number >= 0"), (1.5, "whole number >= 0")):
        with pytest.raises(UserError, match=rf"--data\.start.*{message}"):
            ParaphraseDataModule(path=demo_path(), start=bad, few_shot=[]).setup()
