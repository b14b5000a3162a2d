"""``--data.chat_template model``: every prompt rendered through the tokenizer's chat template, split into the shared
prefix and the question segment without losing a token.

On the tiny real model, whose tokenizer has no chat template: the test gives it a small ChatML-like one (turns opened
by ``<s>``, closed by ``</s>``, its EOS). With ``model`` the prompt ids (prefix + question) are exactly
``apply_chat_template``'s for the same messages, for block 0 and for a group's extra few-shot block; one member fused
answers what origin answers; an answer stops at the end of turn and a demonstration's answer is scored as its
assistant turn shows it; a tokenizer without a template is refused in one line naming the flag (or the API's
argument) and the model; ``none`` keeps the reference code's text prompt byte for byte.
"""

from __future__ import annotations

import pytest
from test_demos import with_blocks

from selfens_pl.api import SelfEnsemble
from selfens_pl.data.datamodule import ParaphraseDataModule, demo_path
from selfens_pl.data.demos import members
from selfens_pl.data.prompts import PromptTemplate, PromptTokenizer
from selfens_pl.engine.batches import prompt_batch, rows_batch
from selfens_pl.engine.members import answer_continuation
from selfens_pl.errors import UserError
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, RerankHead
from selfens_pl.scoring.paraphrasing import checked_paraphrases

#: A ChatML-like template over the tiny tokenizer's own special tokens (it has no others): ``<s>`` opens a turn,
#: ``</s>`` (its EOS) closes it.
TINY_CHAT = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
             "{% if add_generation_prompt %}<s>assistant\n{% endif %}")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The tiny model runs many times faster on one thread of this busy machine."""


@pytest.fixture
def chat_lm(tiny_lm, monkeypatch):
    """The tiny model whose tokenizer has :data:`TINY_CHAT` (restored after the test)."""
    monkeypatch.setattr(tiny_lm.tokenizer, "chat_template", TINY_CHAT, raising=False)
    return tiny_lm


def chat(template: PromptTemplate) -> PromptTemplate:
    return PromptTemplate(template.instruction, template.few_shot, "model")


def applied(tokenizer, messages: list[dict]) -> list[int]:
    """What ``apply_chat_template`` tokenises the conversation to (its return type varies across versions)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_prompt_ids_are_apply_chat_template_for_block_0_and_extra_blocks(chat_lm, template, groups):
    tok = chat_lm.tokenizer
    prompts = PromptTokenizer(tok, chat(template))
    texts = [p for g in groups for p in g["paraphrases"]]
    for text in texts:
        whole = applied(tok, chat(template).messages(text))
        assert prompts.prompt_ids(text) == whole
        assert whole[:len(prompts.prefix_ids)] == prompts.prefix_ids
        assert prompts.render(text) == tok.apply_chat_template(chat(template).messages(text),
                                                               add_generation_prompt=True, tokenize=False)
    # the split falls on the turn boundary: the prefix is the instruction and every few-shot turn, shared by all
    assert tok.decode(prompts.prefix_ids).endswith(f"{template.few_shot[-1]['answer']}</s>\n")
    assert prompts.end_of_turn == tok.eos_token_id
    # a group's extra few-shot block: the same instruction, the block's demonstrations as turns
    group = with_blocks(groups)[0]
    for block in (1, 2):
        own = prompts.for_block(group, block)
        demos = PromptTemplate(template.instruction, group["blocks"][block - 1], "model")
        assert own.chat and own.prompt_ids(texts[0]) == applied(tok, demos.messages(texts[0]))
        assert own.prefix_ids != prompts.prefix_ids


def test_the_messages_layout():
    template = PromptTemplate("Answer.", [{"question": "q1?", "answer": "a1"}], "model")
    assert template.messages("q?") == [{"role": "system", "content": "Answer."}, {"role": "user", "content": "q1?"},
                                       {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q?"}]
    assert PromptTemplate("", [], "model").messages("q?") == [{"role": "user", "content": "q?"}]


def test_a_member_in_a_batch_is_its_prompt_asked_alone(chat_lm, template, groups):
    """Several shared prefixes (blocks) in one batch: each row's final logits are those of its whole chat prompt
    asked alone without sharing."""
    dec, prompts = chat_lm.decoder, PromptTokenizer(chat_lm.tokenizer, chat(template))
    data = with_blocks([dict(groups[0], paraphrases=groups[0]["paraphrases"][:2])])
    items = [(g, m.text, m.block_index) for g in data for m in members(g)]
    batched = dec.prefill(prompt_batch(dec, prompts, items))[:, -1]
    for row, (g, text, block) in enumerate(items):
        ids = applied(chat_lm.tokenizer, PromptTemplate(template.instruction, g["blocks"][block - 1] if block else
                                                        template.few_shot, "model").messages(text))
        alone = dec.prefill(rows_batch(dec, [ids]))[0, -1]
        assert (batched[row] - alone).abs().max() < 1e-4


@pytest.mark.parametrize("head", [LogitFusion("avg"), FlexFusion(layout="concat", backend="dense"),
                                  FlexFusion(layout="shared_prefix", backend="dense"), RerankHead(rule="mixture")],
                         ids=lambda h: h.method)
def test_one_member_fused_is_origin_with_the_template(chat_lm, template, groups, head):
    prompts = PromptTokenizer(chat_lm.tokenizer, chat(template))
    single = [dict(g, paraphrases=g["paraphrases"][:1]) for g in groups[:2]]
    origin = OriginHead().generate(chat_lm.decoder, prompts, single)
    assert [r["generation"] for r in head.generate(chat_lm.decoder, prompts, single)] == \
        [r["generation"] for r in origin]
    none = OriginHead().generate(chat_lm.decoder, PromptTokenizer(chat_lm.tokenizer, template), single)
    assert [r["generation"] for r in none] != [r["generation"] for r in origin]  # the template reached the model


def test_answers_end_at_the_end_of_turn_and_demo_answers_are_scored_as_the_turn_shows_them(chat_lm, template):
    tok, dec = chat_lm.tokenizer, chat_lm.decoder
    prompts = PromptTokenizer(tok, chat(template))
    prompt_batch(dec, prompts, [({"id": "a"}, "where is lima?")])
    assert prompts.end_of_turn in dec.eos_ids
    # the assistant turn of a demonstration, as the prefix holds it: the answer, then the end of turn
    shown = tok(tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "Bonn"}],
                                        tokenize=False).split("assistant\n")[1], add_special_tokens=False)["input_ids"]
    assert answer_continuation(dec, " Bonn ", prompts) == shown[:shown.index(prompts.end_of_turn) + 1]
    assert answer_continuation(dec, "Bonn", PromptTokenizer(tok, template)) == answer_continuation(dec, "Bonn")


def test_a_tokenizer_without_a_template_is_refused_in_one_line(tiny_lm, tiny_model_dir, template):
    assert not getattr(tiny_lm.tokenizer, "chat_template", None)
    with pytest.raises(UserError, match=rf"^--data\.chat_template='model': {tiny_model_dir}\S* has no chat "
                                        r"template \(its tokenizer defines none\); use none$"):
        PromptTokenizer(tiny_lm.tokenizer, chat(template))
    with pytest.raises(UserError, match=r"^--data\.chat_template='chatml': choose none .* or model"):
        ParaphraseDataModule(path=demo_path(), chat_template="chatml").setup()
    with pytest.raises(UserError, match=r"^chat_template='model': .* has no chat template"):
        checked_paraphrases(tiny_lm.decoder, [{"id": "0", "paraphrases": ["q?"]}], 1, chat_template="model",
                            flag="chat_template")
    se = SelfEnsemble(tiny_lm, tiny_lm.decoder.device)
    for call in (lambda: se.answer(["q?"], chat_template="model"), lambda: se.paraphrase(["q?"], chat_template="model"),
                 lambda: se.answer(["q?"], chat_template="jinja")):
        with pytest.raises(UserError, match=r"^chat_template='(model|jinja)': ") as err:
            call()
        assert "\n" not in str(err.value) and "--data" not in str(err.value)


def test_the_api_and_the_data_module_carry_the_setting(chat_lm, template):
    data = ParaphraseDataModule(path=demo_path(), limit=2, chat_template="model")
    data.setup()
    assert data.template.chat_template == "model"
    se = SelfEnsemble(chat_lm, chat_lm.decoder.device)
    out = se.answer(["where is lima?"], few_shot=template.few_shot, chat_template="model")
    prompts = PromptTokenizer(chat_lm.tokenizer, chat(template))
    want = OriginHead().generate(chat_lm.decoder, prompts, [{"id": "0", "paraphrases": ["where is lima?"],
                                                               "answers": [], "confidences": None}])
    assert out[0].generation == want[0]["generation"]


def test_none_is_the_reference_text_prompt(tiny_lm):
    """``none`` (the default everywhere) keeps the reference code's prompt: prefix and question as before."""
    tok = tiny_lm.tokenizer
    template = PromptTemplate("Answer.", [{"question": "q1?", "answer": "a1"}, {"question": "q2?", "answer": "a2"}])
    assert template.chat_template == "none" and ParaphraseDataModule().hparams.chat_template == "none"
    prompts = PromptTokenizer(tok, template)
    assert prompts.prefix_ids == tok("Answer.\n\nQ: q1?\nA: a1\n\nQ: q2?\nA: a2\n\n")["input_ids"]
    assert prompts.question_ids("where?") == tok("Q: where?\nA:", add_special_tokens=False)["input_ids"]
    assert prompts.render("where?") == "Answer.\n\nQ: q1?\nA: a1\n\nQ: q2?\nA: a2\n\nQ: where?\nA:"
    assert not prompts.chat and prompts.end_of_turn is None
    assert PromptTokenizer(tok, PromptTemplate("", [])).prefix_ids == tok("")["input_ids"]
