"""`python -m selfens_pl ask`: every method answers one question side by side (tiny model, given paraphrases)."""

from __future__ import annotations

import pytest

from selfens_pl.cli import main as cli_main
from selfens_pl.commands.ask import main

QUESTION = "what language do people speak in costa rica?"
PARAPHRASES = ["what language is spoken in costa rica?", "which language do people in costa rica speak?"]
FUSED = ["avg", "max", "flex_concat", "flex_shared_prefix", "vote", "rerank_mixture"]
METHODS = ["origin", "per_prompt [0]", "per_prompt [1]", "per_prompt [2]", *FUSED]


def ask(tiny_model_dir, *args):
    return main([QUESTION, "--model.model", str(tiny_model_dir), "--model.max_new_tokens", "6",
                 "--trainer.accelerator", "cpu", *args])


def test_every_method_in_output(tiny_model_dir, capsys):
    rows = ask(tiny_model_dir, "--paraphrases", *PARAPHRASES)
    out = capsys.readouterr().out
    assert [r["method"] for r in rows] == METHODS
    table = out[out.index("method"):]
    for method in METHODS:
        assert any(line.split("  ")[0].strip() == method for line in table.splitlines()), method
    for text in (QUESTION, *PARAPHRASES):
        assert text in out
    # per_prompt [0] is the question alone, exactly what origin answers
    by_method = {r["method"]: r for r in rows}
    assert by_method["per_prompt [0]"]["generation"] == by_method["origin"]["generation"]


def test_one_paraphrase_every_method_equals_origin(tiny_model_dir, capsys):
    rows = ask(tiny_model_dir, "--paraphrases", "--zero_shot")  # no other phrasing: N = 1
    assert [r["method"] for r in rows] == ["origin", "per_prompt [0]", *FUSED]
    origin = rows[0]
    assert origin["generation"]  # the tiny model generated something
    for row in rows[1:]:
        assert row["generation"] == origin["generation"], row["method"]
        assert row["answer"] == origin["answer"], row["method"]


def test_cli_dispatch(tiny_model_dir, capsys):
    cli_main(["ask", QUESTION, "--model", str(tiny_model_dir), "--max_new_tokens", "3", "--device", "cpu",
              "--paraphrases", PARAPHRASES[0]])
    out = capsys.readouterr().out
    assert "flex_shared_prefix" in out and "per_prompt [1]" in out


def test_old_flag_names_still_work(tiny_model_dir, capsys):
    rows = main([QUESTION, "--model", str(tiny_model_dir), "--max_new_tokens", "3", "--device", "cpu",
                 "--paraphrases", "--zero_shot"])
    assert rows[0]["method"] == "origin"


def test_generated_paraphrases_are_checked(capsys):
    """Without --paraphrases the embedded model writes them with the paraphrase verb's checked method: every kept
    one is listed, passes the checks, and is a member (per_prompt answers it). The sampling's reproducibility is
    the paraphrase verb's (tests/test_paraphrase.py)."""
    from selfens_pl.scoring.paraphrase_checks import CheckSettings, text_failures

    rows = main([QUESTION, "--num_paraphrases", "2", "--model.max_new_tokens", "4", "--trainer.accelerator", "cpu"])
    out = capsys.readouterr().out
    assert "paraphrases written by the model and checked" in out
    listed = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("  [") and "(question)" not in line]
    assert 1 <= len(listed) <= 2 and all(not text_failures(QUESTION, p, CheckSettings()) for p in listed)
    assert len([r for r in rows if r["method"].startswith("per_prompt")]) == 1 + len(listed)
    assert "the second of two runs" in out


def test_demo_blocks_add_the_demo_answers_row(tiny_model_dir, tmp_path):
    import json

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"question": f"what is thing number {i}?", "answers": [f"thing {i}"]}) + "\n"
                            for i in range(12)))
    rows = ask(tiny_model_dir, "--paraphrases", PARAPHRASES[0], "--data.demo_blocks", "2",
               "--data.few_shot_pool", str(pool))
    assert [r["method"] for r in rows][-3:] == ["vote", "rerank_mixture", "rerank_mixture_demos"]
    assert [r["method"] for r in rows if r["method"].startswith("per_prompt")] == \
        [f"per_prompt [{j}]" for j in range(4)]  # 2 paraphrases x 2 blocks


def test_bad_num_paraphrases(tiny_model_dir):
    with pytest.raises(ValueError, match="--num_paraphrases=0 must be >= 1") as e:
        ask(tiny_model_dir, "--num_paraphrases", "0")
    assert "\n" not in str(e.value)


def test_empty_paraphrase_rejected(tiny_model_dir):
    with pytest.raises(ValueError, match="empty paraphrase"):
        ask(tiny_model_dir, "--paraphrases", "  ")
