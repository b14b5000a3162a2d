"""Prompt text in the reference code's format (the research code of the Self-Ensemble paper, Xu et al. 2025, which
this package reimplements), split into a shared prefix and a question segment.

The reference code's prompt is ``"{instruction}\\n\\n{few_shot}\\n\\nQ: {question}\\nA:"`` with few-shot examples
``"Q: {q}\\nA: {answer}"`` joined by blank lines. We keep it as two pieces, ``prefix`` (instruction + few-shot
+ the blank line) and ``question`` (``"Q: ...\\nA:"``), and tokenise them separately. Every head uses the same
two token lists, so a paraphrase inside a fused sequence is token-for-token the paraphrase asked alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfens_pl.errors import InternalError

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


def format_example(question: str, answer: str | None = None) -> str:
    """``"Q: {question}\\nA: {answer}"``, or the open ``"Q: {question}\\nA:"`` when ``answer`` is None."""
    return f"Q: {question}\nA:" if answer is None else f"Q: {question}\nA: {answer}"


def format_few_shot(examples: list[dict[str, str]]) -> str:
    """Few-shot block: examples joined by blank lines (the reference code's format, byte for byte)."""
    return "\n\n".join(format_example(e["question"], e["answer"]) for e in examples)


@dataclass
class PromptTemplate:
    """Instruction and few-shot examples shared by every question of a run."""

    instruction: str = WEBQA_INSTRUCTION
    few_shot: list[dict[str, str]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """Text before the question: ``"{instruction}\\n\\n{few_shot}\\n\\n"`` (empty parts skipped)."""
        parts = [p for p in (self.instruction, format_few_shot(self.few_shot)) if p]
        return "".join(p + "\n\n" for p in parts)

    def question(self, paraphrase: str) -> str:
        return format_example(paraphrase)

    def render(self, paraphrase: str) -> str:
        """The whole prompt as one string (for display; the model sees the two tokenised pieces)."""
        return self.prefix + self.question(paraphrase)


class PromptTokenizer:
    """Tokenises ``prefix`` once (with the tokenizer's special tokens, e.g. BOS) and questions without them."""

    def __init__(self, tokenizer, template: PromptTemplate):
        self.tokenizer = tokenizer
        self.template = template
        self.prefix_ids: list[int] = tokenizer(template.prefix, add_special_tokens=True)["input_ids"]
        if not template.prefix:  # still let the tokenizer add its BOS, if it has one
            self.prefix_ids = tokenizer("", add_special_tokens=True)["input_ids"]
        self._blocks: dict[tuple, PromptTokenizer] = {}

    def for_block(self, group: dict, block: int) -> "PromptTokenizer":
        """The prompts of ``group``'s few-shot block ``block`` (:mod:`selfens_pl.data.demos`): ``self`` for block 0, else
        the same instruction with the group's block ``block`` as few-shot examples (tokenised once per distinct
        block)."""
        if block == 0:
            return self
        blocks = group.get("blocks") or []
        if not 1 <= block <= len(blocks):
            raise InternalError(f"record {group.get('id')!r} has no few-shot block {block} ({1 + len(blocks)} blocks)")
        examples = blocks[block - 1]
        key = tuple((e["question"], e["answer"]) for e in examples)
        if key not in self._blocks:
            template = PromptTemplate(instruction=self.template.instruction, few_shot=[dict(e) for e in examples])
            self._blocks[key] = PromptTokenizer(self.tokenizer, template)
        return self._blocks[key]

    def question_ids(self, paraphrase: str) -> list[int]:
        return self.tokenizer(self.template.question(paraphrase), add_special_tokens=False)["input_ids"]

    def prompt_ids(self, paraphrase: str) -> list[int]:
        """Token ids of the whole prompt for one paraphrase: ``prefix_ids + question_ids``."""
        return self.prefix_ids + self.question_ids(paraphrase)
