"""Prompt text in the reference code's format (the research code of the Self-Ensemble paper, Xu et al. 2025, which
this package reimplements), or through the model's chat template, split into a shared prefix and a question segment.

The reference code's prompt (``chat_template="none"``, the default) is ``"{instruction}\\n\\n{few_shot}\\n\\nQ:
{question}\\nA:"`` with few-shot examples ``"Q: {q}\\nA: {answer}"`` joined by blank lines. We keep it as two pieces,
``prefix`` (instruction + few-shot + the blank line) and ``question`` (``"Q: ...\\nA:"``), and tokenise them
separately. Every head uses the same two token lists, so a paraphrase inside a fused sequence is token-for-token the
paraphrase asked alone.

``chat_template="model"`` (``--data.chat_template model``) renders the same content as a conversation through the
tokenizer's chat template (``apply_chat_template(messages, add_generation_prompt=True)``), in this layout
(:meth:`PromptTemplate.messages`): the instruction as the system message, each few-shot example as a user turn (its
question, bare) and an assistant turn (its answer), then the question as the last user turn and the template's
generation prompt. The prefix is the rendered conversation up to the end of the last few-shot turn, the question
segment the rest (its user turn and the generation prompt), so the split falls on a turn boundary (a special token
in every common template) and ``prefix_ids + question_ids`` is exactly ``apply_chat_template(messages,
add_generation_prompt=True, tokenize=True)`` (checked when the prompts are built: a template whose shared turns do
not tokenise apart gets an empty prefix instead, nothing shared but still exact). The template brings its own BOS,
so no special tokens are added. An answer then ends with the template's end-of-turn token
(:attr:`PromptTokenizer.end_of_turn`, e.g. ``<|im_end|>``), which the decoder stops at
(:func:`selfens_pl.engine.batches.stop_at_end_of_turn`), and a demonstration's answer is scored as the assistant turn
shows it: the answer, then the end of turn (:func:`selfens_pl.engine.members.answer_continuation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from selfens_pl.errors import InternalError, UserError

WEBQA_INSTRUCTION = "Answer the question based on general world knowledge. Provide a short and direct answer."
MYRIADLAMA_INSTRUCTION = "Based on the context, predict the [MASK] in the sentence in one word."
MYRIADLAMA_FEW_SHOT: list[dict[str, str]] = [
    {"question": "[MASK] is the higher-level concept of adit.", "answer": "tunnel"},
    {"question": "Marty Ehrlich became known as a [MASK] player.", "answer": "saxophone"},
    {"question": "Officially, the people living in Basel use the language [MASK] for communication.",
     "answer": "German"},
    {"question": "[MASK] consists of Mount Makiling.", "answer": "Luzon"},
    {"question": "Iowa and [MASK] are neighboring countries.", "answer": "Wisconsin"},
]

ChatTemplate = Literal["none", "model"]
CHAT_TEMPLATES: tuple[str, ...] = ("none", "model")
#: The flag ``chat_template`` errors name unless the caller names its own argument (the Python API's).
CHAT_FLAG = "--data.chat_template"
#: Stands for the content of a turn while the template is rendered to find where turns begin and end.
_SLOT = "SELFENSPLSLOT"


def format_example(question: str, answer: str | None = None) -> str:
    """``"Q: {question}\\nA: {answer}"``, or the open ``"Q: {question}\\nA:"`` when ``answer`` is None."""
    return f"Q: {question}\nA:" if answer is None else f"Q: {question}\nA: {answer}"


def format_few_shot(examples: list[dict[str, str]]) -> str:
    """Few-shot block: examples joined by blank lines (the reference code's format, byte for byte)."""
    return "\n\n".join(format_example(e["question"], e["answer"]) for e in examples)


def model_name(tokenizer) -> str:
    """The model a tokenizer belongs to, as errors name it (its ``name_or_path``)."""
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def check_chat_template(value, tokenizer=None, flag: str = CHAT_FLAG) -> str:
    """``value`` if it is ``none`` or ``model`` (and, with ``tokenizer``, ``model`` only for a tokenizer that has a
    chat template); else one error naming ``flag`` (and the model)."""
    if value not in CHAT_TEMPLATES:
        raise UserError(f"{flag}={value!r}: choose none (the Q:/A: text prompt) or model (the tokenizer's chat "
                         "template)")
    if value == "model" and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{flag}='model': {model_name(tokenizer)} has no chat template (its tokenizer defines "
                         "none); use none")
    return value


@dataclass
class PromptTemplate:
    """Instruction and few-shot examples shared by every question of a run, and how they are rendered:
    ``chat_template`` ``none`` (the Q:/A: text) or ``model`` (the tokenizer's chat template, :meth:`messages`)."""

    instruction: str = WEBQA_INSTRUCTION
    few_shot: list[dict[str, str]] = field(default_factory=list)
    chat_template: ChatTemplate = "none"

    @property
    def prefix(self) -> str:
        """Text before the question: ``"{instruction}\\n\\n{few_shot}\\n\\n"`` (empty parts skipped)."""
        parts = [p for p in (self.instruction, format_few_shot(self.few_shot)) if p]
        return "".join(p + "\n\n" for p in parts)

    def question(self, paraphrase: str) -> str:
        return format_example(paraphrase)

    def render(self, paraphrase: str) -> str:
        """The whole text prompt as one string (``none``; :meth:`PromptTokenizer.render` renders either)."""
        return self.prefix + self.question(paraphrase)

    def messages(self, paraphrase: str | None = None) -> list[dict[str, str]]:
        """The conversation ``chat_template="model"`` renders: ``system`` the instruction (left out when empty), a
        ``user`` (the example's question) and an ``assistant`` (its answer) turn per few-shot example, then, with
        ``paraphrase``, a ``user`` turn holding it."""
        out = [{"role": "system", "content": self.instruction}] if self.instruction else []
        for e in self.few_shot:
            out += [{"role": "user", "content": e["question"]}, {"role": "assistant", "content": e["answer"]}]
        if paraphrase is not None:
            out.append({"role": "user", "content": paraphrase})
        return out

    def with_few_shot(self, examples: list[dict[str, str]]) -> "PromptTemplate":
        """The same instruction and rendering with ``examples`` as the few-shot block."""
        return PromptTemplate(self.instruction, [dict(e) for e in examples], self.chat_template)


class PromptTokenizer:
    """Tokenises ``prefix`` once (with the tokenizer's special tokens, e.g. BOS) and questions without them; with
    ``template.chat_template == "model"``, the chat-rendered prefix and question segment (the module docstring).
    ``flag``: what a chat-template error names (``--data.chat_template``, or an API argument)."""

    def __init__(self, tokenizer, template: PromptTemplate, flag: str = CHAT_FLAG):
        self.tokenizer = tokenizer
        self.template = template
        self.flag = flag
        self.chat = check_chat_template(template.chat_template, tokenizer, flag) == "model"
        #: The token ending an assistant turn under the chat template (e.g. ``<|im_end|>``); ``None`` without one.
        self.end_of_turn: int | None = None
        self._head = ""  # chat: the rendered text of prefix_ids
        if self.chat:
            self._head, self.prefix_ids = self._chat_prefix()
            self.end_of_turn = self._end_of_turn()
        else:
            # a prefix that already opens with the BOS text (a conversation rendered elsewhere, e.g. by lm_eval's
            # --apply_chat_template) is not given a second one; lm_eval's hf model has the same rule
            bos = getattr(tokenizer, "bos_token", None)
            special = not (bos and template.prefix.startswith(bos))
            self.prefix_ids: list[int] = tokenizer(template.prefix, add_special_tokens=special)["input_ids"]
            if not template.prefix:  # still let the tokenizer add its BOS, if it has one
                self.prefix_ids = tokenizer("", add_special_tokens=True)["input_ids"]
        self._blocks: dict[tuple, PromptTokenizer] = {}

    # -- the chat template -----------------------------------------------------------------------------------------
    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt,
                                                      tokenize=False)
        except TemplateError as exc:
            raise UserError(f"{self.flag}='model': {model_name(self.tokenizer)}'s chat template refuses the prompt "
                             f"(system instruction, few-shot turns, question): {exc}") from None

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _chat_prefix(self) -> tuple[str, list[int]]:
        """The rendered shared turns (instruction, few-shot) and their ids, when the whole prompt starts with them
        and tokenises apart at their end; else ``("", [])`` (nothing shared, every prompt still exact)."""
        shared = self.template.messages()
        probe = self._render(self.template.messages(_SLOT), True)
        head = self._render(shared, False) if shared else ""
        if not head or not probe.startswith(head):
            return "", []
        ids = self._encode(head)
        if ids + self._encode(probe[len(head):]) != self._encode(probe):
            return "", []
        return head, ids

    def _end_of_turn(self) -> int | None:
        """The special token the template writes right after an assistant turn's content, or ``None``."""
        text = self._render([{"role": "user", "content": "q"}, {"role": "assistant", "content": _SLOT}], False)
        after = self._encode(text[text.rindex(_SLOT) + len(_SLOT):]) if _SLOT in text else []
        if not after:
            return None
        special = set(self.tokenizer.all_special_ids) | {
            i for i, t in getattr(self.tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
        return after[0] if after[0] in special else None

    def _chat_question(self, paraphrase: str) -> str:
        whole = self._render(self.template.messages(paraphrase), True)
        if not whole.startswith(self._head):
            raise UserError(f"{self.flag}='model': {model_name(self.tokenizer)}'s chat template renders the "
                             f"instruction and few-shot turns differently for the question {paraphrase!r}")
        return whole[len(self._head):]

    # -- the prompts -------------------------------------------------------------------------------------------------
    def for_block(self, group: dict, block: int) -> "PromptTokenizer":
        """The prompts of ``group``'s few-shot block ``block`` (:mod:`selfens_pl.data.demos`): ``self`` for block 0,
        else the same instruction (and chat template) with the group's block ``block`` as few-shot examples
        (tokenised once per distinct block)."""
        if block == 0:
            return self
        blocks = group.get("blocks") or []
        if not 1 <= block <= len(blocks):
            raise InternalError(f"record {group.get('id')!r} has no few-shot block {block} ({1 + len(blocks)} blocks)")
        examples = blocks[block - 1]
        key = tuple((e["question"], e["answer"]) for e in examples)
        if key not in self._blocks:
            self._blocks[key] = PromptTokenizer(self.tokenizer, self.template.with_few_shot(examples), self.flag)
        return self._blocks[key]

    def question_text(self, paraphrase: str) -> str:
        """The text of the question segment: ``"Q: ...\\nA:"``, or under the chat template the question's user turn
        and the generation prompt."""
        return self._chat_question(paraphrase) if self.chat else self.template.question(paraphrase)

    def question_ids(self, paraphrase: str) -> list[int]:
        return self.tokenizer(self.question_text(paraphrase), add_special_tokens=False)["input_ids"]

    def prompt_ids(self, paraphrase: str) -> list[int]:
        """Token ids of the whole prompt for one paraphrase: ``prefix_ids + question_ids``."""
        return self.prefix_ids + self.question_ids(paraphrase)

    def render(self, paraphrase: str) -> str:
        """The whole prompt as one string (for display; the model sees the two tokenised pieces)."""
        return self._head + self.question_text(paraphrase) if self.chat else self.template.render(paraphrase)
