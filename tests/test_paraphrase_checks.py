"""Each paraphrase check on hand-made paraphrases (kept and rejected), the model's yes/no judge on a tiny real model
(batched == alone == the plain forward of the whole prompt), and the statistics of a paraphrase file."""

from __future__ import annotations

import pytest
import torch

from selfens_pl.data.prompts import PromptTemplate
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.scoring.paraphrase_checks import (
    JUDGE_FEW_SHOT,
    JUDGE_INSTRUCTION,
    CheckSettings,
    EquivalenceJudge,
    ParaphraseChecker,
    answer_type,
    content_kept,
    content_lemmas,
    content_new,
    format_statistics,
    is_name,
    is_question,
    judge_question,
    names_lost,
    numbers,
    paraphrase_statistics,
    same_form,
    same_type,
    text_failures,
)

ORIGINAL = "what does jamaican people speak?"
ALL = CheckSettings()


# -- each check, kept and rejected --------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "which language do people in jamaica speak?",
    "what language is spoken by the jamaican people?",
    "in jamaica, what do the people speak?",
    "in what language do jamaicans speak?",  # the example: a reordering and an inflection
    "what language do people in jamaica speak?",
])
def test_good_paraphrases_pass_every_check(text):
    assert text_failures(ORIGINAL, text, ALL) == []


@pytest.mark.parametrize("text, failed", [
    ("French language", ["question", "type", "content", "new"]),  # an answer, not a question
    ("jamaican people speak patois.", ["question", "type"]),
    ("jamaican people speak what", ["question"]),  # no question mark
    ("in 1885?????", ["question", "type", "content", "numbers"]),  # no question word, a number from nowhere
    ("who do jamaican people speak to?", ["type"]),  # asks for a person, not a language
    ("in what year did jamaican people speak?", ["type"]),  # asks for a time
    ("what?", ["length", "content"]),
    ("what language is spoken by the people who live on the caribbean island nation of jamaica in the west indies?",
     ["length", "new"]),
    ("what language do people in france speak?", ["content", "new"]),  # the subject changed: a name lost
    ("what do jamaican people eat in 2010?", ["numbers"]),  # keeps half the content; the year is new
    ("What does Jamaican people speak ?", ["copy"]),  # case, spacing and punctuation do not make it new
    ("  ", ["empty"]),
])
def test_bad_paraphrases_fail_the_right_checks(text, failed):
    assert text_failures(ORIGINAL, text, ALL) == failed


@pytest.mark.parametrize("text, kind", [
    ("who was the first president?", "who"), ("whose car is it?", "who"), ("where did x die?", "where"),
    ("in which country did x die?", "where"), ("what state is harvard in?", "where"), ("when did x die?", "when"),
    ("in what year did x die?", "when"), ("which actress played x?", "who"),
    ("how many people live in x?", "quantity"), ("how old is x?", "quantity"), ("how did x die?", "how"),
    ("why did x die?", "why"), ("what movies did x play in?", "what"), ("which language is spoken?", "what"),
    ("what is the capital of x?", "what"), ("is x alive?", "yes/no"), ("x died where?", "where"),
])
def test_answer_type(text, kind):
    assert answer_type(text) == kind


@pytest.mark.parametrize("original, candidate, same", [
    ("what is the capital of alaska state?", "which city is the capital of the state of alaska?", True),  # the issue
    ("where was anne frank born?", "what is anne frank's birthplace?", True),  # a plain what naming a place
    ("who played dorothy in the wizard of oz movie?", "which actress played dorothy in the wizard of oz movie?", True),
    ("when did x admit women?", "in what year did x admit women?", True),
    ("what country did x come from?", "what was x's home country?", True),
    ("where was obama born?", "when was obama born?", False),
    ("who invented morse code?", "when was morse code invented?", False),
    ("what currency does x have?", "how many currencies does x have?", False),  # no quantity noun in the what
    ("what language do they speak in x?", "in what year did they speak in x?", False),
    ("what killed x?", "who killed x?", False),
    ("what is x?", "is x a volcano?", False),
    ("[MASK] is the capital of x.", "Which city is the capital of x? [MASK].", True),  # a cloze is not typed
])
def test_same_type(original, candidate, same):
    assert same_type(original, candidate) is same


def test_same_form():
    assert same_form(ORIGINAL, "which language is spoken in jamaica?")
    assert not same_form(ORIGINAL, "jamaicans speak english.")
    cloze = "Huo Guang is a [MASK] by profession."
    assert same_form(cloze, "What is Huo Guang's profession? [MASK].")  # a question keeping the mask is fine
    assert not same_form(cloze, "What is Huo Guang's profession?")  # the answer's place is gone
    assert not same_form(cloze, "[MASK] is a [MASK] by profession.")
    assert same_form("a statement", "anything")


def test_is_question():
    assert is_question("alaska's state capital is which city?")  # question word not first
    assert is_question("does jamaica have a language of its own?")
    assert not is_question("what?! no")
    assert not is_question("jamaica?")
    assert not is_question("")


def test_content_lemmas_and_stem_rule():
    assert content_lemmas("What languages are spoken by the Israeli people?") == ["language", "speak", "israeli",
                                                                                "people"]
    assert content_lemmas("who was the first russian president?") == ["russian", "president"]  # stop words out
    # kind and slot nouns are type's business; numbers are numbers'; the mask is no word
    assert content_lemmas("what is the name of the city where x was born in 1990?") == ["x", "bear"]
    assert content_lemmas("[MASK] is the capital of Alaska.") == ["capital", "alaska"]
    assert content_kept("who was the first russian president?", "who was russia's first president?") == 1.0
    assert content_kept("what is the capital of alaska?", "what city is alaska's seat of government?") == 0.5
    assert content_kept("who is he?", "who is she?") == 1.0  # nothing to keep
    # a shared stem of >= 4 letters leaving <= 2 letters of the shorter word: demonyms and derivations
    assert content_kept("what language do italians speak?", "what language is spoken in italy?") == 1.0
    assert content_kept("who invented x?", "who was the inventor of x?") == 1.0
    # a stated limit: two names that share such a stem count as one
    assert content_kept("what is the capital of austria?", "what is the capital of australia?") == 1.0
    # a lemma of < 4 letters is kept by a derivational ending only: "win" -> "winner", not "art" -> "arthur"
    assert content_kept("who won golden boot?", "who was the winner of the golden boot?") == 1.0
    assert content_kept("who is the art teacher?", "who is arthur the teacher?") == 0.5
    assert content_new("what is the capital of x?", "what is the population of the capital of x?") == 1
    assert content_new("what is the capital of x?", "which city is the capital of x?") == 0
    assert numbers("the 1990s, in 2010, the 4th") == {"1990s", "2010", "4th"}


def test_names_must_all_be_kept():
    assert is_name("ethiopia") and is_name("bieber") and is_name("xqzzyville")  # rare, or not in the table
    assert not is_name("currency") and not is_name("minister") and not is_name("invent")
    original = "who is the prime minister of ethiopia?"
    assert names_lost(original, "who is the prime minister of brazil?") == ["ethiopia"]
    assert text_failures(original, "who is the prime minister of brazil?", ALL) == ["content"]  # 2 of 3 kept
    assert names_lost(original, "who is ethiopia's prime minister?") == []
    assert names_lost("where is jamaica?", "where is the jamaican island?") == []  # a shared stem keeps it


def test_thresholds_and_switches():
    text = "what language do jamaican people speak in france?"  # keeps everything, adds "language", "france"
    assert content_new(ORIGINAL, text) == 2
    assert text_failures(ORIGINAL, text, CheckSettings(max_new=1)) == ["new"]
    assert text_failures(ORIGINAL, text, CheckSettings(max_new=2)) == []
    assert text_failures(ORIGINAL, "what language do jamaicans speak?", CheckSettings(max_new=0)) == ["new"]
    plain = "what currency do people accept there?"  # no name: only the share counts
    assert content_kept(plain, "what currency do people take there?") == pytest.approx(2 / 3)
    assert text_failures(plain, "what currency do people take there?", CheckSettings(min_content=0.5)) == []
    assert text_failures(plain, "what currency do people take there?", CheckSettings(min_content=0.7)) == ["content"]
    assert text_failures(ORIGINAL, "what do the people speak?", ALL) == ["content"]  # "jamaican", a name, lost
    assert text_failures(ORIGINAL, "French language", CheckSettings(checks=())) == []  # all text checks off
    assert text_failures(ORIGINAL, ORIGINAL.upper(), CheckSettings(checks=())) == ["copy"]  # always on
    assert text_failures(ORIGINAL, "French language", CheckSettings(checks=("question",))) == ["question"]
    long = "which is the language that the jamaican people speak most of the time?"  # 13 words vs 5
    assert text_failures(ORIGINAL, long, CheckSettings(max_length_ratio=2.0)) == ["length"]
    assert text_failures(ORIGINAL, long, CheckSettings(max_length_ratio=3.0)) == []
    with pytest.raises(ValueError, match="--checks=.*unknown check"):
        CheckSettings(checks=("question", "grammar"))
    with pytest.raises(ValueError, match="--min_content"):
        CheckSettings(min_content=1.5)
    with pytest.raises(ValueError, match="--max_new"):
        CheckSettings(max_new=-1)
    with pytest.raises(ValueError, match="--min_length_ratio"):
        CheckSettings(min_length_ratio=0)


# -- the model's judgement ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def decoder(tiny_lm):
    return GreedyDecoder(tiny_lm.lm, tiny_lm.tokenizer, max_new_tokens=4, stop="\n")


PAIRS = [(ORIGINAL, "which language do people in jamaica speak?"), (ORIGINAL, "French language"),
         ("who wrote hamlet?", "who is the writer of hamlet?")]


def test_judge_score_is_yes_minus_no_of_the_whole_prompt(decoder):
    judge = EquivalenceJudge(decoder, batch_size=2)  # 2 batches for 3 pairs, prefix shared
    scores = judge.scores(PAIRS)
    template = PromptTemplate(JUDGE_INSTRUCTION, JUDGE_FEW_SHOT)
    for (original, candidate), score in zip(PAIRS, scores):
        ids = decoder.tokenizer(template.render(judge_question(original, candidate)))["input_ids"]
        with torch.no_grad():
            logits = decoder.model(torch.tensor([ids])).logits[0, -1].float()
        logp = torch.log_softmax(logits, -1)
        expected = torch.logsumexp(logp[judge.yes], 0) - torch.logsumexp(logp[judge.no], 0)
        assert score == pytest.approx(float(expected), abs=1e-4)
    alone = [judge.scores([pair])[0] for pair in PAIRS]
    assert scores == pytest.approx(alone, abs=1e-4)
    assert len(set(round(s, 4) for s in scores)) > 1  # the pairs are told apart


def test_checker_runs_the_judge_on_survivors_only(decoder):
    judge = EquivalenceJudge(decoder)
    scores = judge.scores(PAIRS)
    calls = []
    original_scores = judge.scores

    def counting(pairs):
        calls.append(list(pairs))
        return original_scores(pairs)

    judge.scores = counting
    for margin in (min(scores) - 1, max(scores) + 1):
        judge.margin = margin
        failures = ParaphraseChecker(ALL, judge)(PAIRS)
        assert failures[1] == ["question", "type", "content", "new"]  # failed the text checks: never judged
        expected = [] if margin < min(scores) else ["judge"]
        assert failures[0] == expected and failures[2] == expected
    assert calls == [[PAIRS[0], PAIRS[2]]] * 2


# -- statistics ---------------------------------------------------------------------------------------------------
def test_statistics():
    records = [
        {"id": "a", "paraphrases": ["q", "p1", "p2"], "short": True, "paraphraser": "m",
         "rejected": [{"text": "x", "failed": ["question", "content"]}, {"text": "y", "failed": ["duplicate"]}]},
        {"id": "b", "paraphrases": ["q"], "short": True, "paraphraser": "m",
         "rejected": [{"text": "z", "failed": ["content"]}] * 3},
        {"id": "c", "paraphrases": ["q", "p1", "p2", "p3"], "short": False, "paraphraser": "m", "rejected": []},
    ]
    stats = paraphrase_statistics(records)
    assert stats == {"questions": 3, "kept": 5, "mean_kept": 5 / 3, "sizes": {0: 1, 2: 1, 3: 1}, "short": 2,
                     "candidates": 10, "rejected": 5, "acceptance": 0.5,
                     "failed": {"question": 1, "content": 4, "duplicate": 1}, "paraphrasers": ["m"]}
    line = format_statistics(stats)
    assert "5 paraphrases kept (1.67 per question" in line and "acceptance 50.0%" in line
    assert "content 4" in line and "2 short" in line


def test_report_states_the_statistics_of_an_answered_paraphrase_file(tmp_path, monkeypatch):
    import json

    from selfens_pl.commands.report import load_run, paraphrase_section, render_markdown

    monkeypatch.chdir(tmp_path)
    groups = tmp_path / "groups.jsonl"
    groups.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "paraphrases": ["q", "p"], "short": True, "paraphraser": "big-model",
         "rejected": [{"text": "x", "failed": ["question"]}]},
        {"id": "b", "paraphrases": ["q", "p", "r"], "short": False, "paraphraser": "big-model", "rejected": []},
        {"id": "c", "paraphrases": ["q"], "short": True, "paraphraser": "big-model",  # not answered by the run
         "rejected": [{"text": "y", "failed": ["content"]}] * 2},
    ]))
    run_dir = tmp_path / "avg_run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"method": "avg", "n": 2, "accuracy": 0.5}))
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps({"id": i, "method": "avg", "correct": True}) + "\n"
                                                       for i in "ab"))
    (run_dir / "config.yaml").write_text("data:\n  path: groups.jsonl\n")
    text = render_markdown([load_run(run_dir)])
    assert "## Paraphrases" in text and "paraphraser: big-model" in text
    assert "2 questions, 3 paraphrases kept (1.50 per question" in text
    assert "acceptance 75.0%" in text and "question 1" in text and "content" not in text.split("## Paraphrases")[1]
    (run_dir / "config.yaml").write_text("data:\n  path: demo\n")  # other data: no section
    assert paraphrase_section([load_run(run_dir)]) == []
    (run_dir / "config.yaml").write_text("data:\n  path: moved.jsonl\n")
    assert "file not found" in "\n".join(paraphrase_section([load_run(run_dir)]))
