"""Generating checked paraphrases with a language model: the library part of the ``paraphrase`` and ``ask`` verbs.

A paraphrasing instruction plus five worked examples in the package's ``Q:``/``A:`` few-shot format
(:data:`PARAPHRASE_INSTRUCTION`, :data:`PARAPHRASE_FEW_SHOT`); :func:`paraphrase_sampler` samples them with a
decoder (all slots of a question share one prefill), :func:`paraphrase_groups` keeps the first line of each sample
(:func:`first_line`) when it passes the checks of :mod:`selfens_pl.scoring.paraphrase_checks`, and samples a
rejected slot again with a new seed. With ``chat_template="model"`` the same instruction and examples are
rendered through the model's chat template (:mod:`selfens_pl.data.prompts`: the instruction as the system message,
each example a user/assistant turn pair), and a sample also ends at the template's end of turn.
"""

from __future__ import annotations

from typing import Callable

from selfens_pl.data.prompts import CHAT_FLAG, ChatTemplate, PromptTemplate, PromptTokenizer, check_chat_template
from selfens_pl.engine.batches import prompt_batch
from selfens_pl.engine.sampling import Sampler
from selfens_pl.scoring.paraphrase_checks import CheckSettings, ParaphraseChecker, copy_key

PARAPHRASE_INSTRUCTION = (
    "Paraphrase the question: ask for exactly the same information using different words and a different "
    "sentence structure, so that it has the same answer. Write only the rewritten question, on one line."
)

#: Worked examples ``{question, answer}``: the answer is a paraphrase of the question.
PARAPHRASE_FEW_SHOT: list[dict[str, str]] = [
    {"question": "who wrote the novel pride and prejudice?",
     "answer": "which author is responsible for writing pride and prejudice?"},
    {"question": "what currency is used in japan?",
     "answer": "what is the name of the money people pay with in japan?"},
    {"question": "where was albert einstein born?",
     "answer": "in which city did albert einstein come into the world?"},
    {"question": "what language do they speak in brazil?",
     "answer": "which language is spoken by the people of brazil?"},
    {"question": "when did the titanic sink?",
     "answer": "in what year did the titanic go down?"},
]

#: ``sample(items, seeds) -> texts``: ``items`` are ``(group, question)`` prompts, ``seeds[i]`` the seeds of the
#: samples of prompt ``i`` (every list the same length); ``texts[i][j]`` is sample ``j`` of prompt ``i``.
#: The checked paraphraser's defaults (``paraphrase``, ``ask`` and the Python API share them): sampling temperature and
#: nucleus mass chosen on WebQuestions train questions 200-299 with the embedded model, the most tokens per
#: paraphrase, the first seed and the retries of a rejected slot.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.9
DEFAULT_MAX_NEW_TOKENS = 30
DEFAULT_SEED = 42
DEFAULT_MAX_RETRIES = 3

SampleFn = Callable[[list[tuple[dict, str]], list[list[int]]], list[list[str]]]
#: ``check(pairs) -> failures``: for each ``(original, candidate)`` the names of the checks it fails.
CheckFn = Callable[[list[tuple[str, str]]], list[list[str]]]


def first_line(text: str) -> str:
    """The kept part of a generation: its first non-empty line, stripped."""
    return text.strip().split("\n")[0].strip()


def paraphrase_groups(sample: SampleFn, groups: list[dict], k: int, seed: int, max_retries: int,
                      check: CheckFn | None = None) -> list[dict]:
    """Up to ``k`` checked paraphrases per group (``{id, paraphrases[0] = question, answers}``).

    ``check`` defaults to :class:`ParaphraseChecker` with no text check enabled (only ``empty``, ``copy`` and
    ``duplicate`` reject); the ``paraphrase`` tool passes its configured checker.

    Slot ``r`` of attempt ``a`` (``a = 0`` first) is sampled with seed ``seed + a * k + r``: every (slot, attempt)
    pair has its own seed, the same for every question and independent of the batch. Each attempt's candidates
    are checked together (``check``); then, slot by slot, a candidate that passed is kept unless it repeats one
    already kept for its question (``duplicate``). Slots still empty after ``max_retries`` further attempts are
    dropped: the group is written with fewer paraphrases and ``short: true``. Kept paraphrases are in slot order.
    Returns records ``{id, question, answers, paraphrases: [original, kept...], short, rejected}``, where
    ``rejected`` lists every failed candidate ``{text, seed, attempt, failed}`` in sampling order.
    """
    check = check or ParaphraseChecker(CheckSettings(checks=()))
    questions = [g["paraphrases"][0] for g in groups]
    kept: list[list[str | None]] = [[None] * k for _ in groups]
    rejected: list[list[dict]] = [[] for _ in groups]
    todo = [(q, r) for q in range(len(groups)) for r in range(k)]
    for attempt in range(max_retries + 1):
        if not todo:
            break
        if attempt == 0:  # one prompt per question, its k slots sampled from one prefill
            out = sample([(g, q) for g, q in zip(groups, questions)], [[seed + r for r in range(k)] for _ in groups])
            texts = {(q, r): first_line(out[q][r]) for q, r in todo}
        else:  # one prompt per pending slot, all in one call
            out = sample([(groups[q], questions[q]) for q, _ in todo], [[seed + attempt * k + r] for _, r in todo])
            texts = {(q, r): first_line(row[0]) for (q, r), row in zip(todo, out)}
        failures = check([(questions[q], texts[(q, r)]) for q, r in todo])
        still = []
        for (q, r), failed in zip(todo, failures):
            text, failed = texts[(q, r)], list(failed)
            if not failed and copy_key(text) in {copy_key(p) for p in kept[q] if p is not None}:
                failed = ["duplicate"]
            if failed:
                rejected[q].append({"text": text, "seed": seed + attempt * k + r, "attempt": attempt,
                                    "failed": failed})
                still.append((q, r))
            else:
                kept[q][r] = text
        todo = still

    records = []
    for q, group in enumerate(groups):
        good = [p for p in kept[q] if p is not None]
        records.append({"id": group["id"], "question": questions[q], "answers": list(group.get("answers") or []),
                        "paraphrases": [questions[q]] + good, "short": len(good) < k, "rejected": rejected[q]})
    return records


def paraphrase_sampler(decoder, temperature: float, top_p: float, max_new_tokens: int,
                       chat_template: ChatTemplate = "none", flag: str = CHAT_FLAG) -> SampleFn:
    """A :data:`SampleFn` over ``decoder``'s model: the paraphrase prompt of each item (the Q:/A: text, or the
    model's chat template: ``chat_template``; ``flag`` is what its errors name), its samples from one prefill (its KV
    cache copied once per seed), each stopped at the end of its first line."""
    sampler = Sampler(decoder, temperature, top_p, max_new_tokens, stop="\n")
    chat = check_chat_template(chat_template, flag=flag)
    template = PromptTemplate(PARAPHRASE_INSTRUCTION, PARAPHRASE_FEW_SHOT, chat)
    prompts = PromptTokenizer(decoder.tokenizer, template, flag)

    def sample(items: list[tuple[dict, str]], seeds: list[list[int]]) -> list[list[str]]:
        repeat = len(seeds[0])
        gens = sampler.sample(prompt_batch(decoder, prompts, items), [s for row in seeds for s in row], repeat)
        return [[g.text for g in gens[i * repeat:(i + 1) * repeat]] for i in range(len(items))]

    return sample


def checked_paraphrases(decoder, groups: list[dict], k: int, seed: int = DEFAULT_SEED,
                        temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P,
                        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_retries: int = DEFAULT_MAX_RETRIES,
                        check: CheckFn | None = None, chat_template: ChatTemplate = "none",
                        flag: str = CHAT_FLAG) -> list[dict]:
    """Up to ``k`` paraphrases of each group's question sampled with ``decoder``'s model and kept only when they pass
    the paraphrase checks (``check``; default :class:`ParaphraseChecker` with every text check at its default
    threshold): :func:`paraphrase_groups`' records, the method of the ``paraphrase`` verb with its defaults.
    ``chat_template``: the prompt as text (``none``) or through the model's chat template (``model``)."""
    sample = paraphrase_sampler(decoder, temperature, top_p, max_new_tokens, chat_template, flag)
    return paraphrase_groups(sample, groups, k, seed, max_retries, check or ParaphraseChecker(CheckSettings()))
