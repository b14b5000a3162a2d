"""Multiple choice (:mod:`selfens_pl.heads.choice`, :mod:`selfens_pl.scoring.choice`,
:mod:`selfens_pl.data.sources.choice`): the fused option scores are the rule over each member's scores computed one
prompt at a time by a plain forward pass; one member is one prompt; a batch of groups answers as each group alone;
a bad record is one line naming it; predict writes the accuracy by index into summary.json."""

from __future__ import annotations

import json
import math
import sys
from importlib import resources

import pytest
import torch

from selfens_pl.cli import main
from selfens_pl.data.datamodule import ParaphraseDataModule, auto_source
from selfens_pl.data.prompts import PromptTemplate
from selfens_pl.data.sources.choice import load_choice_groups
from selfens_pl.engine.members import answer_continuation
from selfens_pl.errors import UserError
from selfens_pl.heads.choice import ChoiceHead
from selfens_pl.scoring.choice import CHOICE_RULES, check_choice_rule, fuse_option_scores

TEMPLATE = PromptTemplate("Answer the question.", [{"question": "who wrote hamlet?", "answer": "Shakespeare"}])
GROUPS = [
    {"id": "a", "paraphrases": ["what is the capital of france?", "which city is france's capital?",
                                "france has which capital?"],
     "answers": ["Paris"], "confidences": None, "options": ["Lyon", "Paris", "Nice", "Marseille"], "gold": 1},
    {"id": "b", "paraphrases": ["who painted the mona lisa?", "the mona lisa was painted by whom?"],
     "answers": ["Leonardo da Vinci"], "confidences": None, "options": ["Leonardo da Vinci", "Picasso"], "gold": 0},
    {"id": "c", "paraphrases": ["what currency does japan use?"],
     "answers": ["Yen"], "confidences": None, "options": ["Euro", "Dollar", "Yen"], "gold": 2},
]


def plain_scores(lm, paraphrase: str, options: list[str]) -> list[float]:
    """``[O]`` each option's log-likelihood after one prompt, by a plain forward pass over prompt + option (no
    cache, no batching): the reference the engine's packed, cached scoring must reproduce."""
    prompts = lm.prompts(TEMPLATE)
    out = []
    for option in options:
        tokens = answer_continuation(lm.decoder, option)
        ids = torch.tensor([prompts.prompt_ids(paraphrase) + tokens])
        with torch.no_grad():
            logp = lm.lm(ids).logits[0].double().log_softmax(-1)
        start = ids.shape[1] - len(tokens)
        out.append(sum(logp[start - 1 + i, t].item() for i, t in enumerate(tokens)))
    return out


def answer(lm, head: ChoiceHead, groups: list[dict]) -> list[dict]:
    return head.generate(lm.decoder, lm.prompts(TEMPLATE), [dict(g) for g in groups])


def test_the_rules_on_a_table():
    scores, lengths = [[-1.0, -2.0, -6.0], [-3.0, -0.5, -4.0]], [1, 2, 4]
    assert fuse_option_scores(scores, lengths, "mixture") == pytest.approx(
        [math.log((math.exp(-1) + math.exp(-3)) / 2), math.log((math.exp(-2) + math.exp(-0.5)) / 2),
         math.log((math.exp(-6) + math.exp(-4)) / 2)])
    assert fuse_option_scores(scores, lengths, "product") == pytest.approx([-2.0, -1.25, -5.0])
    assert fuse_option_scores(scores, lengths, "max") == pytest.approx([-1.0, -0.5, -4.0])
    assert fuse_option_scores(scores, lengths, "mean_token") == pytest.approx([-2.0, -0.625, -1.25])
    # vote: one member each for options 0 and 1, so the mixture breaks the tie (option 1)
    vote = fuse_option_scores(scores, lengths, "vote")
    assert max(range(3), key=vote.__getitem__) == 1 and vote[2] < vote[0] < vote[1]
    with pytest.raises(UserError, match=r"^--model.head.init_args.rule='sum': choose one of mixture, product"):
        check_choice_rule("sum")


def test_fused_scores_are_the_rule_over_members_scored_one_prompt_at_a_time(tiny_lm, one_thread):
    """Every member's option scores equal a plain forward pass of its prompt alone, and the fused scores are the
    rule applied to those; one member (members: origin, or a one-paraphrase group) is that prompt's own choice."""
    group = GROUPS[0]
    alone = [plain_scores(tiny_lm, p, group["options"]) for p in group["paraphrases"]]
    lengths = [len(answer_continuation(tiny_lm.decoder, o)) for o in group["options"]]
    for rule in CHOICE_RULES:
        rec = answer(tiny_lm, ChoiceHead(rule), [group])[0]
        assert rec["option_lengths"] == lengths
        for got, want in zip(rec["member_scores"], alone):
            assert got == pytest.approx(want, abs=1e-4)
        assert rec["option_scores"] == pytest.approx(fuse_option_scores(alone, lengths, rule), abs=1e-4)
        assert rec["choice"] == max(range(4), key=fuse_option_scores(alone, lengths, rule).__getitem__)
        assert rec["prediction"] == group["options"][rec["choice"]]
        assert rec["correct"] == (rec["choice"] == 1)
        # one prompt: members: origin asks paraphrase 0 alone; a one-paraphrase group fused is exactly that
        origin = answer(tiny_lm, ChoiceHead(rule, members="origin"), [group])[0]
        single = answer(tiny_lm, ChoiceHead(rule), [{**group, "paraphrases": group["paraphrases"][:1]}])[0]
        assert origin["member_scores"] == single["member_scores"]
        assert (origin["choice"], origin["option_scores"]) == (single["choice"], single["option_scores"])
        assert origin["member_scores"][0] == pytest.approx(alone[0], abs=1e-4)
        own = alone[0] if rule != "mean_token" else [s / n for s, n in zip(alone[0], lengths)]
        assert origin["choice"] == max(range(4), key=own.__getitem__), rule
        assert origin["paraphrase_index"] == 0 and origin["paraphrases"] == group["paraphrases"][:1]


def test_a_batch_of_groups_answers_as_each_group_alone(tiny_lm, one_thread):
    head = ChoiceHead("mixture")
    together = answer(tiny_lm, head, GROUPS)
    for rec, group in zip(together, GROUPS):
        alone = answer(tiny_lm, head, [group])[0]
        assert (rec["id"], rec["choice"], rec["member_choices"]) == (alone["id"], alone["choice"],
                                                                    alone["member_choices"])
        assert rec["option_scores"] == pytest.approx(alone["option_scores"], abs=1e-5)
    assert [len(r["member_scores"]) for r in together] == [3, 2, 1]
    assert [r["method"] for r in together] == ["choice_mixture"] * 3


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("bad, message", [
    ({"id": "x", "question": "q?"}, "record 'x': field 'options' must be a list of non-empty strings, got None"),
    ({"id": "x", "question": "q?", "options": ["a"], "gold": 0}, "record 'x': field 'options' needs at least 2 "
                                                                   "options, got 1"),
    ({"id": "x", "question": "q?", "options": ["a", "b"], "gold": 2}, "record 'x': field 'gold' must be an option "
                                                                        "index in 0..1, got 2"),
    ({"question": "q?", "options": ["a", "b"], "answer": "c"}, "record '2': field 'answer' 'c' is not one of the "
                                                                "options ['a', 'b']"),
    ({"id": "x", "options": ["a", "b"], "gold": 0}, "record 'x': a multiple-choice record needs 'question' or "
                                                     "'paraphrases' (or both)"),
])
def test_a_bad_record_is_one_line_naming_it(tmp_path, bad, message):
    path = write(tmp_path / "c.jsonl", [{"id": "ok", "question": "q?", "options": ["a", "b"], "answer_index": 1}, bad])
    with pytest.raises(UserError) as info:
        load_choice_groups(path)
    record, problem = message.split(": ", 1)
    assert str(info.value) == f"{path}: line 2 ({record}): {problem}"


def test_the_shipped_file_and_an_open_question_group(tiny_lm, one_thread):
    path = str(resources.files("selfens_pl.resources") / "choice_myriadlama.jsonl")
    groups = load_choice_groups(path)
    assert auto_source(path) == "choice" and len(groups) == 300
    assert all(len(g["options"]) == 4 and g["answers"] == [g["options"][g["gold"]]] and len(g["paraphrases"]) == 3
               for g in groups)
    golds = [g["gold"] for g in groups]
    assert min(golds.count(i) for i in range(4)) > 50  # the gold position is drawn, not always first
    # the presets name it `choice-myriadlama`: the package's copy, from any working directory
    assert ParaphraseDataModule(path="choice-myriadlama", task="myriadlama")._load("choice-myriadlama", "test") == groups
    with pytest.raises(UserError, match=r"^record 'q': ChoiceHead needs at least 2 'options'"):
        ChoiceHead().generate(tiny_lm.decoder, tiny_lm.prompts(TEMPLATE),
                              [{"id": "q", "paraphrases": ["a?"], "answers": ["b"], "confidences": None}])


def test_predict_writes_the_accuracy_by_index(tiny_model_dir, tmp_path, monkeypatch, one_thread):
    rows = [{"id": g["id"], "question": g["paraphrases"][0], "paraphrases": g["paraphrases"][1:],
             "options": g["options"], "gold": g["gold"]} for g in GROUPS]
    path = write(tmp_path / "choice.jsonl", rows)
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    out = tmp_path / "out"
    main(["predict", "--data.path", path, "--data.few_shot", "[]", "--model.model", str(tiny_model_dir),
          "--model.head", "selfens_pl.heads.choice.ChoiceHead", "--model.head.init_args.rule", "product",
          "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--output_dir", str(out)])
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]
    assert all(r["correct"] == (r["choice"] == r["gold"]) for r in records)
    assert summary["method"] == "choice_product"
    assert summary["accuracy"] == sum(r["choice"] == r["gold"] for r in records) / 3
    assert summary["member_oracle"] == sum(r["gold"] in r["member_choices"] for r in records) / 3


def test_attention_fusion_scores_as_the_fused_sequence_decodes(tiny_lm, one_thread):
    """``fuse: attention``: scoring the fused sequence's own greedy answer gives the log-probabilities its decode
    gave each token (first token fused over the members, later ones from the one sequence); one member is the plain
    prompt's scores; a batch answers as each group alone; a rule that needs member scores is refused."""
    from selfens_pl.engine.decoding import no_fusion
    from selfens_pl.heads.flex import FlexFusion

    prompts, flex = tiny_lm.prompts(TEMPLATE), FlexFusion()
    batch, fuse_first = flex.fused_batch(tiny_lm.decoder, prompts, [dict(GROUPS[0])])
    gen = tiny_lm.decoder.decode_n_tokens(batch, fuse_first, no_fusion)[0]
    scored = flex.score_options(tiny_lm.decoder, prompts, [dict(GROUPS[0])], [[gen.token_ids]])[0][0]
    assert len(gen.token_ids) > 1 and scored == pytest.approx(gen.logprobs[:len(gen.token_ids)], abs=1e-4)
    # decoding from the one encoding (as lm_eval's is_greedy does) is the fused decode itself
    encoded = flex.encode_fused(tiny_lm.decoder, prompts, [dict(GROUPS[0])])
    again = tiny_lm.decoder.decode_n_tokens(encoded.batch(torch.tensor([0])), no_fusion, no_fusion)[0]
    assert again.token_ids == gen.token_ids and again.logprobs == pytest.approx(gen.logprobs, abs=1e-5)

    one = GROUPS[2]  # one paraphrase: the fused sequence is the prompt alone
    attention = answer(tiny_lm, ChoiceHead(fuse="attention"), [one])[0]
    assert attention["option_scores"] == pytest.approx(plain_scores(tiny_lm, one["paraphrases"][0], one["options"]),
                                                       abs=1e-4)
    assert attention["method"] == "choice_attention" and attention["member_scores"] is None
    together = answer(tiny_lm, ChoiceHead("mean_token", fuse="attention"), GROUPS)
    for group, rec in zip(GROUPS, together):
        alone = answer(tiny_lm, ChoiceHead("mean_token", fuse="attention"), [group])[0]
        assert rec["option_scores"] == pytest.approx(alone["option_scores"], abs=1e-4)
        assert rec["choice"] == alone["choice"] and rec["correct"] == (rec["choice"] == group["gold"])
    with pytest.raises(UserError, match=r"^--model.head.init_args.rule='max': with fuse=attention"):
        ChoiceHead("max", fuse="attention")
