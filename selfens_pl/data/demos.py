"""Demonstration blocks as an ensemble dimension: a group's *members* are its paraphrases x few-shot blocks.

Every paraphrase asked with the same few-shot block shares that block's errors (the standard MyriadLAMA block
answers "saxophone" for "... became known as a [MASK] player." because its second example does). With
``--data.demo_blocks M`` every paraphrase is also asked with ``M - 1`` other five-shot blocks:

* block 0 is the configured few-shot block (the template's: today's prompt, so ``M = 1`` changes nothing);
* block ``b >= 1`` of a group is drawn from a *pool* of demonstrations (``--data.few_shot_pool``) by a generator
  seeded with ``(group id, b)`` alone: the same group gets the same blocks in every run, process and batch order;
* a block never holds the group's own fact (a pool entry with the group's id, or whose question is one of the
  group's paraphrases, up to case and spacing), and a group's blocks share no demonstration.

A pool is a list of demonstrations ``{id, question, answer}``:

* MyriadLAMA: grouped facts (``../shared/data/myriadlama/*.jsonl``) or hub rows; a demonstration is one of the
  fact's manual paraphrases (picked by its uuid) and its first answer, id the uuid (= the group id of that fact);
* WebQuestions: questions in the WebQuestions schema (a local file or the hub id ``stanfordnlp/web_questions``,
  split ``train``); a demonstration is the question and its first answer.

The extra blocks ride in each group as ``group["blocks"]`` (``M - 1`` lists of ``{question, answer}``);
:func:`members` lists a group's members block-major, so the first ``K`` members are block 0's paraphrases, exactly
the rows a run without blocks has.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Literal

from selfens_pl.errors import UserError


@dataclass(frozen=True)
class Member:
    """One row of a group's ensemble: paraphrase ``paraphrase_index`` asked with few-shot block ``block_index``."""

    paraphrase_index: int
    block_index: int
    text: str


def num_blocks(group: dict) -> int:
    """``M``: few-shot blocks a group is asked with (1 + its extra blocks)."""
    return 1 + len(group.get("blocks") or ())


def members(group: dict) -> list[Member]:
    """The group's members, block-major: ``K`` paraphrases with block 0, then with block 1, ... (``K * M``)."""
    return [Member(i, b, text) for b in range(num_blocks(group)) for i, text in enumerate(group["paraphrases"])]


def cut_blocks(group: dict, m: int) -> dict:
    """``group`` asked with its first ``m`` blocks only (a copy; ``m = 1``: no extra blocks)."""
    if not 1 <= m <= num_blocks(group):
        raise UserError(f"record {group['id']!r} has {num_blocks(group)} few-shot blocks, fewer than M={m}")
    out = dict(group)
    if m == 1:
        out.pop("blocks", None)
    else:
        out["blocks"] = list(group["blocks"][: m - 1])
    return out


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def load_pool(source: str | list[str], task: Literal["webqa", "myriadlama"], split: str = "train") -> list[dict]:
    """Demonstrations ``{id, question, answer}`` from one source or several (see the module docstring), sorted by id
    so the pool does not depend on the order of files or rows. One error naming the source when it yields none."""
    sources = [source] if isinstance(source, str) else list(source)
    if not sources:
        raise UserError("--data.few_shot_pool: no source given")
    pool: dict[str, dict] = {}
    for src in sources:
        entries = _myriadlama_pool(src, split) if task == "myriadlama" else _webqa_pool(src, split)
        if not entries:
            raise UserError(f"--data.few_shot_pool={src!r}: no demonstrations in it")
        for entry in entries:
            pool.setdefault(entry["id"], entry)
    return [pool[k] for k in sorted(pool)]


def _myriadlama_pool(source: str, split: str) -> list[dict]:
    from selfens_pl.data.sources import group_myriadlama, load_myriadlama_groups, load_myriadlama_rows
    from selfens_pl.data.sources.myriadlama import is_grouped_myriadlama

    facts = load_myriadlama_groups(source) if is_grouped_myriadlama(source) else \
        group_myriadlama(load_myriadlama_rows(source, split))
    out = []
    for fact in facts:
        if not fact["manual_paraphrases"]:
            continue
        rng = random.Random(_seed(str(fact["uuid"]), "demonstration"))
        out.append({"id": str(fact["uuid"]), "question": rng.choice(fact["manual_paraphrases"]),
                    "answer": fact["answers"][0]})
    return out


def _webqa_pool(source: str, split: str) -> list[dict]:
    from selfens_pl.data.sources import load_webqa

    return [{"id": _key(rec["question"]), "question": rec["question"], "answer": rec["answers"][0]}
            for rec in load_webqa(source, split)]


def _seed(*parts: str) -> int:
    return int(hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest(), 16)


def draw_blocks(group: dict, pool: list[dict], m: int, shots: int) -> list[list[dict]]:
    """The ``m - 1`` extra blocks of ``group`` (blocks 1..m-1), ``shots`` demonstrations each, drawn from ``pool``
    by a generator seeded with ``(group id, block index)``; never the group's own fact, no demonstration twice."""
    if m < 1:
        raise UserError(f"--data.demo_blocks must be >= 1, got {m}")
    own = {_key(p) for p in group["paraphrases"]}
    eligible = [i for i, d in enumerate(pool) if d["id"] != str(group["id"]) and _key(d["question"]) not in own]
    if len(eligible) < shots * (m - 1):
        raise UserError(f"record {group['id']!r}: --data.few_shot_pool holds {len(eligible)} demonstrations other "
                         f"than its own fact; --data.demo_blocks={m} needs {shots * (m - 1)}")
    used: set[int] = set()
    blocks = []
    for b in range(1, m):
        rng = random.Random(_seed(str(group["id"]), str(b)))
        block: list[dict] = []
        while len(block) < shots:
            i = eligible[rng.randrange(len(eligible))]
            if i not in used:
                used.add(i)
                block.append({"question": pool[i]["question"], "answer": pool[i]["answer"]})
        blocks.append(block)
    return blocks


def attach_blocks(groups: list[dict], pool: list[dict], m: int, shots: int) -> list[dict]:
    """Give every group its ``m - 1`` extra blocks (``group["blocks"]``); ``m = 1`` leaves the groups as they are."""
    if m > 1:
        for group in groups:
            group["blocks"] = draw_blocks(group, pool, m, shots)
    return groups
