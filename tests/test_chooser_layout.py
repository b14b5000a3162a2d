"""A chooser file records the layout it was fit at (``chooser --k K --m M``: K paraphrases x M few-shot blocks), a
head with the file refuses member sets of another layout (one error naming the record and the file), and ``sweep``
reports such a head at that layout only. A file without a layout (written before it was recorded) is used as
before."""

from __future__ import annotations

import json

import pytest
from test_demos import with_blocks
from test_sweep import assert_run_is_the_head
from test_sweep_short_groups import direct, uneven_file  # noqa: F401  (fixtures)
from test_sweep_wider import sweep_uneven

from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.errors import UserError
from selfens_pl.heads import RerankHead
from selfens_pl.scoring.chooser import FEATURES, Chooser


def mixture_file(path, layout=None) -> str:
    weights = [1.0 if name == "mixture" else 0.0 for name in FEATURES]
    return str(Chooser(weights, 0.0, [0.0] * len(FEATURES), [1.0] * len(FEATURES), layout=layout).save(path))


def test_the_layout_round_trips_and_a_bad_one_is_one_error(tmp_path):
    path = mixture_file(tmp_path / "c.json", (1, 3))
    assert json.loads(open(path).read())["layout"] == {"paraphrases": 1, "blocks": 3}
    loaded = Chooser.load(path)
    assert loaded.layout == (1, 3) and loaded.fits(1, 3) and not loaded.fits(1, 1) and not loaded.fits(3, 3)
    assert Chooser.load(mixture_file(tmp_path / "old.json")).layout is None  # written before: no check
    assert Chooser.load(mixture_file(tmp_path / "k3.json", (3, 2))).fits(2, 2)  # a short group of that layout
    data = json.loads(open(path).read())
    data["layout"] = {"paraphrases": 0, "blocks": 3}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"chooser='.*bad.json': its 'layout' .* whole numbers >= 1"):
        Chooser.load(tmp_path / "bad.json")


def test_the_shipped_webqa_chooser_says_its_layout():
    assert Chooser.load("configs/chooser_webqa_demos.json",
                        features=RerankHead("learned", demo_answers=True).features).layout == (1, 3)


def test_a_head_refuses_another_layout_before_decoding_and_answers_its_own(tiny_lm, template, groups, tmp_path):
    prompts = PromptTokenizer(tiny_lm.tokenizer, template)
    head = RerankHead("learned", chooser=mixture_file(tmp_path / "c.json", (2, 2)))
    one_block = [dict(g, paraphrases=g["paraphrases"][:2]) for g in groups]
    with pytest.raises(UserError, match=rf"record {groups[0]['id']!r}: .*chooser=.*c.json' was fit on member sets "
                                        r"of 2 paraphrase\(s\) x 2 few-shot block\(s\), this group has 2 x 1: ask "
                                        r"with --data.num_paraphrases 2 --data.demo_blocks 2"):
        head.generate(None, prompts, one_block)  # refused before any decoding (no decoder is given)
    fitting = with_blocks(one_block, m=2)
    got = [r["generation"] for r in head.generate(tiny_lm.decoder, prompts, fitting)]
    assert got == [r["generation"] for r in RerankHead("mixture", origin_share=None).generate(
        tiny_lm.decoder, prompts, fitting)]


def test_the_sweep_reports_a_chooser_file_at_its_layout_only(tiny_model_dir, uneven_file, direct, tmp_path,  # noqa: F811
                                                             capsys):
    path = mixture_file(tmp_path / "c.json", (2, 2))
    heads = [{"class_path": "selfens_pl.heads.RerankHead", "init_args": {"rule": "learned", "chooser": path}}]
    out = sweep_uneven(tiny_model_dir, uneven_file, tmp_path / "out", heads, "1,2")
    # M = 1 is another layout; K = 1 with M = 2 is one of its short groups (fewer paraphrases, the same blocks)
    assert "[sweep] rerank_learned: its chooser file was fit at K=2 M=2; not reported at K=1 M=1, K=2 M=1\n" \
        in capsys.readouterr().out
    assert sorted(p.name for p in (out / "runs").iterdir() if p.name.startswith("rerank_learned")) == \
        ["rerank_learned_k1_m2", "rerank_learned_k2_m2"]
    for k in (1, 2):
        assert_run_is_the_head(out / "runs" / f"rerank_learned_k{k}_m2", RerankHead("learned", chooser=path), direct,
                               k, 2)
