"""lm-evaluation-harness requests as the package's groups: where a request's prompt splits, its members, its prompts.

lm_eval hands a model each request's whole prompt (``context``), as the task built it: a description, few-shot
examples joined by a blank line, then the request's own question. The package asks every member of a group with a
shared *prefix* and a *question segment* of its own (:mod:`selfens_pl.data.prompts`). A request's context splits so:

* the question: ``doc[question_field]`` (default ``question``), found verbatim: its last occurrence in the context
  (the request's own question comes after any few-shot example);
* the question segment: from just after the last blank line (``"\\n\\n"``) before that occurrence to the end,
  ``before + question + after`` (the package's own prompt: ``"Q: " + question + "\\nA:"``);
* the prefix: everything before the segment (empty: the tokenizer's BOS alone).

A doc without ``question_field`` splits at the context's last blank line, the segment asked as it is: enough for the
task's own prompt (member 0) alone. A member asks ``before + paraphrase + after`` after the prefix, so member 0 is
the context exactly as lm_eval built it (tokenised as prefix, then segment: the package's rule). An extra few-shot
block ``b >= 1`` (:mod:`selfens_pl.data.demos`) is the prefix's *description* (the text before the first ``before``
in the prefix: the task's instruction) followed by its demonstrations in the request's own format, ``before + q +
after + target_delimiter + answer``, joined by blank lines: for the package's prompt, exactly the prompt
``--data.demo_blocks`` builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfens_pl.data.demos import demo_entry
from selfens_pl.data.prompts import PromptTemplate, PromptTokenizer
from selfens_pl.errors import InternalError, UserError
from selfens_pl.jsonl import read_jsonl
from selfens_pl.scoring.paraphrasing import checked_paraphrases

DELIMITER = "\n\n"  #: what separates lm_eval's description, few-shot examples and question (its fewshot_delimiter)


@dataclass
class SegmentTemplate(PromptTemplate):
    """A member's prompt for one request and few-shot block: ``text_prefix``, then ``before + paraphrase + after``
    (a text prompt: lm_eval already rendered it, chat template or not)."""

    instruction: str = ""
    text_prefix: str = ""
    before: str = ""
    after: str = ""

    @property
    def prefix(self) -> str:
        return self.text_prefix

    def question(self, paraphrase: str) -> str:
        return f"{self.before}{paraphrase}{self.after}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.text_prefix, self.before, self.after


@dataclass(frozen=True)
class Split:
    """A request's context as ``prefix + before + question + after`` (module docstring)."""

    prefix: str
    before: str
    question: str
    after: str
    at_question: bool  #: split at ``doc[question_field]`` (False: the last segment as asked)

    @property
    def template(self) -> SegmentTemplate:
        return SegmentTemplate(text_prefix=self.prefix, before=self.before, after=self.after)


def split_context(context: str, doc, question_field: str | None, where: str) -> Split:
    """``context`` split at ``doc[question_field]`` when the doc has that field, else at its last blank line;
    one UserError naming ``where`` (the request) when it cannot be."""
    if question_field and isinstance(doc, dict) and question_field in doc:
        question = doc[question_field]
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"{where}: doc[{question_field!r}] is not a non-empty string (question_field=...)")
        at = context.rfind(question)
        if at < 0:
            raise UserError(f"{where}: doc[{question_field!r}] = {question!r} is not in the prompt lm_eval built; "
                            "set question_field= to the doc field the prompt shows verbatim")
        start = context.rfind(DELIMITER, 0, at)
        start = 0 if start < 0 else start + len(DELIMITER)
        return Split(context[:start], context[start:at], question, context[at + len(question):], True)
    start = context.rfind(DELIMITER)
    start = 0 if start < 0 else start + len(DELIMITER)
    if not context[start:].strip():
        raise UserError(f"{where}: the prompt ends with a blank line (or is empty): no question to ask")
    return Split(context[:start], "", context[start:], "", False)


def block_prefix(split: Split, demos: list[dict], target_delimiter: str) -> str:
    """The prefix of an extra few-shot block: the description, then ``demos`` ``[{question, answer}]`` in the
    request's format (module docstring)."""
    description = split.prefix[:split.prefix.find(split.before)] if split.before in split.prefix else split.prefix
    shots = DELIMITER.join(f"{split.before}{d['question']}{split.after}{target_delimiter}{d['answer']}"
                           for d in demos)
    return description + shots + DELIMITER


def request_group(split: Split, group_id: str, paraphrases: list[str], paraphraser: str | None = None) -> dict:
    """The group a request's head answers: paraphrase 0 the question as asked, then ``paraphrases``; no answers
    (lm_eval scores). ``split`` rides along for :func:`attach_templates`."""
    group = {"id": group_id, "paraphrases": [split.question, *paraphrases], "answers": [], "confidences": None,
             "split": split}
    if paraphraser and paraphrases:
        group["paraphraser"] = paraphraser  # generated: origin_share="auto" gives the question most of the weight
    return group


def attach_templates(groups: list[dict], target_delimiter: str) -> None:
    """Every group's ``templates [M]``: its prompt per few-shot block (block 0: lm_eval's own; blocks 1..: its
    ``blocks``, :func:`selfens_pl.data.demos.attach_blocks`), read by :class:`RequestPrompts`."""
    for group in groups:
        split = group["split"]
        group["templates"] = [split.template] + [
            SegmentTemplate(text_prefix=block_prefix(split, block, target_delimiter), before=split.before,
                            after=split.after)
            for block in group.get("blocks") or []]


class RequestPrompts(PromptTokenizer):
    """The prompts of a batch of request groups: each group's own prompt per few-shot block (``group["templates"]``),
    each distinct one tokenised once per call and shared by every group that has it (``shared``), so groups with
    the same prefix share its KV cache in a batch (:func:`selfens_pl.engine.batches.prompt_batch`)."""

    def __init__(self, tokenizer, template: SegmentTemplate, shared: dict[tuple, RequestPrompts]):
        super().__init__(tokenizer, template)
        self.shared = shared
        shared.setdefault(template.key, self)

    def for_block(self, group: dict, block: int) -> RequestPrompts:
        templates = group.get("templates") or []
        if not 0 <= block < len(templates):
            raise InternalError(f"record {group.get('id')!r} has no prompt for few-shot block {block} "
                                f"({len(templates)} blocks)")
        return prompts_for(self.tokenizer, templates[block], self.shared)


def prompts_for(tokenizer, template: SegmentTemplate, shared: dict[tuple, RequestPrompts]) -> RequestPrompts:
    """The (shared) :class:`RequestPrompts` of ``template``: a batch's root is its first group's block 0."""
    return shared.get(template.key) or RequestPrompts(tokenizer, template, shared)


# -- demonstrations from the task itself (pool=task) ---------------------------------------------------------------
def task_pool(task_name: str, question_field: str, shipped: str) -> list[dict]:
    """The demonstration pool ``{id, question, answer}`` of lm_eval task ``task_name``: its training docs (else its
    validation docs), each doc's ``question_field`` and its target as lm_eval's own few-shot examples show it (for a
    multiple-choice task, the gold choice's text); deduplicated by question and sorted by id, as
    :func:`~selfens_pl.data.demos.load_pool` builds a file's. The task is looked up among the shipped tasks (the
    folder ``shipped``), then lm_eval's own. Refused in one line: a task it cannot find, one without such docs, a
    doc without the field."""
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=shipped, include_defaults=False)  # quick: lm_eval's own take seconds to index
    if task_name not in manager.all_tasks:
        manager = TaskManager(include_path=shipped)
    if task_name not in manager.all_tasks:
        raise UserError(f"--model_args pool=task: task {task_name!r} is neither a shipped task nor one of lm_eval's "
                        "(a task from --include_path: give pool= a file of its demonstrations)")
    task = get_task_dict([task_name], manager)[task_name]
    if task.has_training_docs():
        docs = task.training_docs()
    elif task.has_validation_docs():
        docs = task.validation_docs()
    else:
        raise UserError(f"--model_args pool=task: task {task_name!r} has no training or validation docs to draw "
                        "demonstrations from (give pool= a file)")
    pool: dict[str, dict] = {}
    for number, doc in enumerate(docs):
        question = doc.get(question_field)
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"--model_args pool=task: doc {number} of task {task_name!r} has no text field "
                            f"{question_field!r} (set question_field=)")
        target = task.doc_to_target(doc)
        if task.OUTPUT_TYPE == "multiple_choice" and isinstance(target, int):
            target = task.doc_to_choice(doc)[target]
        entry = demo_entry(question, str(target[0] if isinstance(target, list) else target))
        pool.setdefault(entry["id"], entry)
    return [pool[key] for key in sorted(pool)]


# -- paraphrases ---------------------------------------------------------------------------------------------------
def read_paraphrase_file(path: str) -> dict[str, list[str]]:
    """``{question: [paraphrases]}`` from a JSON Lines file: ``{"question": q, "paraphrases": [...]}`` (any entry
    equal to ``q`` dropped) or the package's group records ``{"paraphrases": [q, p1, ...]}`` (``q`` first)."""
    if not Path(path).is_file():
        raise UserError(f"paraphrases={path!r}: no such file (give a number of paraphrases to generate, or a "
                        "JSON Lines file of {question, paraphrases})")
    out: dict[str, list[str]] = {}
    for number, rec in enumerate(read_jsonl(path), 1):
        texts = rec.get("paraphrases")
        question = rec.get("question", texts[0] if isinstance(texts, list) and texts else None)
        if not isinstance(question, str) or not isinstance(texts, list) or \
                not all(isinstance(t, str) and t.strip() for t in texts):
            raise UserError(f"paraphrases={path!r} line {number}: needs a question and a list of non-empty "
                            "paraphrase strings")
        if question in out:
            raise UserError(f"paraphrases={path!r} line {number}: question {question!r} repeats")
        out[question] = [t for t in texts if t != question]
    return out


def file_paraphrases(table: dict[str, list[str]], questions: list[str], path: str) -> dict[str, list[str]]:
    """Each question's paraphrases from ``table`` (:func:`read_paraphrase_file`); a question the file lacks is an
    error naming it (a missing entry never silently shrinks a group)."""
    for question in questions:
        if question not in table:
            raise UserError(f"paraphrases={path!r} has no entry for the question {question!r}")
    return {q: table[q] for q in questions}


def generated_paraphrases(decoder, questions: list[str], k: int, seed: int) -> dict[str, list[str]]:
    """Up to ``k`` checked paraphrases of each distinct question by ``decoder``'s model (the ``paraphrase`` verb's
    method and defaults, :func:`~selfens_pl.scoring.paraphrasing.checked_paraphrases`)."""
    groups = [{"id": str(i), "paraphrases": [q], "answers": []} for i, q in enumerate(questions)]
    records = checked_paraphrases(decoder, groups, k, seed)
    return {rec["question"]: rec["paraphrases"][1:] for rec in records}
