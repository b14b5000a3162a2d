"""Demonstration blocks as an ensemble dimension: a group's *members* are its paraphrases x few-shot blocks.

Every paraphrase asked with the same few-shot block shares that block's errors (the standard MyriadLAMA block
answers "saxophone" for "... became known as a [MASK] player." because its second example does). With
``--data.demo_blocks M`` every paraphrase is also asked with ``M - 1`` other five-shot blocks:

* block 0 is the configured few-shot block (the template's: today's prompt, so ``M = 1`` changes nothing);
* blocks ``1..M-1`` come from a *pool* of demonstrations (``--data.few_shot_pool``), chosen by
  ``--data.demo_selection``:

  - ``random`` (the default): block ``b`` is drawn by a generator seeded with ``(group id, b)`` alone;
  - ``similar``: block ``j`` holds the pool's ``(5(j-1)+1)``-th to ``5j``-th most similar demonstrations to the
    group's *first* paraphrase (block 1 the five nearest, block 2 the next five, ...);

  either way the same group gets the same blocks in every run, process and batch order;
* a block never holds the group's own fact (a pool entry with the group's id, or whose question is one of the
  group's paraphrases, up to case and spacing), and a group's blocks share no demonstration.

Similarity is BM25 (Okapi, the ``bm25s`` package's Lucene variant, ``k1 = 1.5, b = 0.75``) over the pool's
questions: lower-cased word tokens, ``[MASK]`` stripped (every MyriadLAMA question has one), no stop list (the
inverse document frequency already discounts "is", "the"; "in", "of" carry relations such as "located in").
Why BM25: a prompt's nearest demonstrations should be the same relation's templates ("... is a [MASK] by
profession.") and the same kind of subject, which is exactly what lexical overlap finds; it is cheap (one sparse
index per pool, built once; 800 groups retrieve in well under a second), deterministic (ties go to pool order,
i.e. by id) and needs no model pass, so the blocks do not depend on the model being evaluated.

A pool is a list of demonstrations ``{id, question, answer}``:

* MyriadLAMA: grouped facts (``../shared/data/myriadlama/*.jsonl``) or hub rows; a demonstration is one of the
  fact's manual paraphrases (picked by its uuid) and its first answer, id the uuid (= the group id of that fact);
* WebQuestions: questions in the WebQuestions schema (a local file or the hub id ``stanfordnlp/web_questions``,
  split ``train``); a demonstration is the question and its first answer;
* a built-in pool, by name (:data:`BUILT_IN_POOLS`; no hub, no file of the user's): ``webquestions-train``, the
  WebQuestions train split shipped in the package (``selfens_pl/resources/webquestions_train.jsonl``, 3,778
  questions, the hub's ``stanfordnlp/web_questions`` train split record for record; CC BY 4.0, Berant et al. 2013,
  ``selfens_pl/resources/NOTICE.txt``), for ``--data.task webqa``. The name wins over a hub id or a file of the
  same name in the working directory (write ``./webquestions-train`` for such a file).

The extra blocks ride in each group as ``group["blocks"]`` (``M - 1`` lists of ``{question, answer}``);
:func:`members` lists a group's members block-major, so the first ``K`` members are block 0's paraphrases, exactly
the rows a run without blocks has.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np

from selfens_pl.data.content_free import MASK
from selfens_pl.data.sources import (
    group_myriadlama,
    is_grouped_myriadlama,
    load_myriadlama_groups,
    load_myriadlama_rows,
    load_webqa,
)
from selfens_pl.errors import InternalError, UserError

DemoSelection = Literal["random", "similar"]
DEMO_SELECTIONS: tuple[str, ...] = ("random", "similar")
#: Pools shipped in the package, by ``--data.few_shot_pool`` name: ``(task, file in selfens_pl/resources)``.
BUILT_IN_POOLS: dict[str, tuple[str, str]] = {"webquestions-train": ("webqa", "webquestions_train.jsonl")}


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
        raise InternalError(f"record {group['id']!r} has {num_blocks(group)} few-shot blocks, fewer than M={m}")
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
        if src in BUILT_IN_POOLS:
            src = built_in_pool(src, task)
        entries = _myriadlama_pool(src, split) if task == "myriadlama" else _webqa_pool(src, split)
        if not entries:
            raise UserError(f"--data.few_shot_pool={src!r}: no demonstrations in it")
        for entry in entries:
            pool.setdefault(entry["id"], entry)
    return [pool[k] for k in sorted(pool)]


def built_in_pool(name: str, task: str) -> str:
    """The file of the built-in pool ``name`` (:data:`BUILT_IN_POOLS`), shipped in the package; one error naming
    the flag when it is another task's pool."""
    own_task, file = BUILT_IN_POOLS[name]
    if task != own_task:
        raise UserError(f"--data.few_shot_pool={name!r} is a built-in {own_task} pool; --data.task is {task!r}: "
                         f"give a {task} pool (a file or hub id)")
    return str(resources.files("selfens_pl.resources") / file)


def _myriadlama_pool(source: str, split: str) -> list[dict]:
    facts = load_myriadlama_groups(source) if is_grouped_myriadlama(source) else \
        group_myriadlama(load_myriadlama_rows(source, split))
    out = []
    for fact in facts:
        if not fact["manual_paraphrases"]:
            continue
        rng = random.Random(stable_seed(str(fact["uuid"]), "demonstration"))
        out.append({"id": str(fact["uuid"]), "question": rng.choice(fact["manual_paraphrases"]),
                    "answer": fact["answers"][0]})
    return out


def demo_entry(question: str, answer: str) -> dict:
    """One demonstration of a pool, ``{id, question, answer}``: its id is the question up to case and spacing."""
    return {"id": _key(question), "question": question, "answer": answer}


def _webqa_pool(source: str, split: str) -> list[dict]:
    return [demo_entry(rec["question"], rec["answers"][0]) for rec in load_webqa(source, split)]


def stable_seed(*parts: str) -> int:
    """A seed that depends on ``parts`` alone (SHA-256 of them joined by NUL): not on the process, the batch or the
    order of the groups."""
    return int(hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest(), 16)


def pool_keys(pool: list[dict]) -> list[str]:
    """Every pool question up to case and spacing: what a group's paraphrases are compared with (once per pool)."""
    return [_key(d["question"]) for d in pool]


def _eligible(group: dict, pool: list[dict], m: int, shots: int, keys: list[str] | None = None) -> list[int]:
    """Indices of ``pool`` a block of ``group`` may show (not its own fact: same id, or a question that is one of its
    paraphrases up to case and spacing), in pool order; one error naming the record when fewer than the
    ``shots * (m - 1)`` demonstrations its extra blocks need are left. ``keys``: :func:`pool_keys` of ``pool``."""
    if m < 1:
        raise UserError(f"--data.demo_blocks must be >= 1, got {m}")
    keys = pool_keys(pool) if keys is None else keys
    own, gid = {_key(p) for p in group["paraphrases"]}, str(group["id"])
    eligible = [i for i, (d, k) in enumerate(zip(pool, keys)) if d["id"] != gid and k not in own]
    if len(eligible) < shots * (m - 1):
        raise UserError(f"record {group['id']!r}: --data.few_shot_pool holds {len(eligible)} demonstrations other "
                         f"than its own fact; --data.demo_blocks={m} needs {shots * (m - 1)}")
    return eligible


def _shown(entry: dict) -> dict:
    return {"question": entry["question"], "answer": entry["answer"]}


def draw_blocks(group: dict, pool: list[dict], m: int, shots: int, keys: list[str] | None = None) -> list[list[dict]]:
    """The ``m - 1`` extra blocks of ``group`` (blocks 1..m-1), ``shots`` demonstrations each, drawn from ``pool``
    by a generator seeded with ``(group id, block index)``; never the group's own fact, no demonstration twice.
    ``keys``: :func:`pool_keys` of ``pool``, when the caller draws for many groups."""
    eligible = _eligible(group, pool, m, shots, keys)
    used: set[int] = set()
    blocks = []
    for b in range(1, m):
        rng = random.Random(stable_seed(str(group["id"]), str(b)))
        block: list[dict] = []
        while len(block) < shots:
            i = eligible[rng.randrange(len(eligible))]
            if i not in used:
                used.add(i)
                block.append(_shown(pool[i]))
        blocks.append(block)
    return blocks


def words(text: str) -> list[str]:
    """BM25's tokens of a question: its lower-cased word tokens, ``[MASK]`` removed (``"[MASK] is X." -> [is, x]``)."""
    return re.findall(r"\w+", text.replace(MASK, " ").lower())


class SimilarDemos:
    """``--data.demo_selection similar``: a BM25 index over a pool's questions, built once, that fills a group's
    extra blocks with the pool's demonstrations nearest to the group's first paraphrase.

    Ranking is by BM25 score, highest first; equal scores go by id (the order :func:`load_pool` sorts the pool in),
    so the blocks depend neither on the order of the given pool nor on anything but the group and the pool."""

    def __init__(self, pool: list[dict]):
        if not pool:
            raise UserError("--data.few_shot_pool: no demonstrations to choose similar ones from")
        self.pool = pool
        self.keys = pool_keys(pool)
        #: Pool indices in id order: the index's documents, so a tie in score keeps id order (a stable sort).
        self.order = np.array(sorted(range(len(pool)), key=lambda i: (str(pool[i]["id"]), i)), dtype=np.int64)
        # imported here: only `similar` needs it, and the engine (which imports this module for members()) runs on
        # machines without it (the GPU check installs only torch, transformers and lightning)
        import bm25s

        self.index = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
        self.index.index([words(pool[i]["question"]) for i in self.order], show_progress=False)

    def ranking(self, query: str) -> np.ndarray:
        """Every pool index, most similar to ``query`` first (``[len(pool)]``, ties by id)."""
        tokens = words(query)
        # bm25s cannot score an empty query: a query without words is equally far from everything (id order)
        scores = self.index.get_scores(tokens) if tokens else np.zeros(len(self.order), dtype=np.float32)
        return self.order[np.argsort(-scores, kind="stable")]

    def blocks(self, group: dict, m: int, shots: int) -> list[list[dict]]:
        """The ``m - 1`` extra blocks of ``group``: block ``j`` holds the ``(shots (j-1) + 1)``-th to
        ``shots j``-th most similar demonstrations to its first paraphrase, never its own fact."""
        eligible = np.zeros(len(self.pool), dtype=bool)
        eligible[_eligible(group, self.pool, m, shots, self.keys)] = True
        ranked = self.ranking(group["paraphrases"][0])
        ranked = ranked[eligible[ranked]][: shots * (m - 1)]
        return [[_shown(self.pool[i]) for i in ranked[shots * j: shots * (j + 1)]] for j in range(m - 1)]


def check_demo_selection(value: str) -> str:
    """``value`` if it is a ``--data.demo_selection`` (the parser checks the flag; a Python caller may not)."""
    if value not in DEMO_SELECTIONS:
        raise UserError(f"--data.demo_selection={value!r}: choose one of {', '.join(DEMO_SELECTIONS)}")
    return value


def attach_blocks(groups: list[dict], pool: list[dict], m: int, shots: int,
                  demo_selection: DemoSelection = "random") -> list[dict]:
    """Give every group its ``m - 1`` extra blocks (``group["blocks"]``), chosen by ``demo_selection`` (see the
    module docstring); ``m = 1`` leaves the groups as they are (whatever the selection: nothing to fill)."""
    check_demo_selection(demo_selection)
    if m > 1:
        if demo_selection == "similar":
            similar = SimilarDemos(pool)  # one index for all the groups
            for group in groups:
                group["blocks"] = similar.blocks(group, m, shots)
        else:
            keys = pool_keys(pool)
            for group in groups:
                group["blocks"] = draw_blocks(group, pool, m, shots, keys)
    return groups
