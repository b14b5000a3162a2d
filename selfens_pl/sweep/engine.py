"""The sweep's one pass over the facts: every member encoded once, everything else decoded or scored from it.

For a grid of ``K`` (paraphrases) x ``M`` (few-shot blocks, :mod:`selfens_pl.data.demos`), a fact's members at the
largest ``(K_max, M_max)`` hold every smaller configuration: ``(K, M)`` is the members of paraphrases ``< K`` with
blocks ``< M`` (:meth:`Grid.subset`). So per batch of facts the pass

1. encodes the prompts of all ``K_max x M_max`` members once (:meth:`~selfens_pl.engine.decoding.GreedyDecoder.encode`;
   each few-shot block's prefix once per batch);
2. decodes every member's own greedy answer from that encoding (per_prompt; origin, vote, the oracle and the mean
   single paraphrase follow from these answers for every ``(K, M)``);
3. with wider candidates (a rescoring head's ``first_tokens = k > 1``): decodes every member's answers starting with
   its 2nd .. k-th most likely first token (:func:`~selfens_pl.engine.members.member_alternatives`, one batched decode),
   ``fact["alternatives"] [member][rank-1]``; a smaller ``k`` takes the first ``k - 1`` of them;
4. scores every distinct answer of a fact (a token sequence with a non-empty prediction: the members' and their
   alternatives', and with demonstration answers, ``RerankHead(demo_answers=True)``, the answers of the fact's
   demonstrations in every extra block, ``fact["demos"]``) under every member's prompt, from the same encoding
   (answer-level rescoring of every ``(K, M)`` and every rule follows, see :mod:`selfens_pl.sweep.derive`);
5. decodes each LogitFusion rule (uncalibrated, without sampled confidences; a rule may weigh the original
   question, ``avg@0.5`` or ``avg@auto``) for every ``(K, M)`` with ``K x M >= 2``: one batched decode per rule and
   configuration, all the batch's facts together, again from the same encoding.

What one fact yields is one JSON line of ``facts.jsonl`` (appended per batch, so an interrupted sweep resumes fact
by fact; ``facts.settings.json`` guards that the file belongs to the same settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from selfens_pl.data.group import Group
from selfens_pl.data.origin_share import is_generated
from selfens_pl.engine.decoding import Generation
from selfens_pl.errors import InternalError
from selfens_pl.engine.members import (answer_continuation, decode_members, demo_candidates, encode_members,
                                       fused_answers, member_alternatives, member_rows, score_tables)


@dataclass(frozen=True)
class Grid:
    """The swept configurations: every ``K`` in ``ks`` with every ``M`` in ``ms``."""

    ks: tuple[int, ...]
    ms: tuple[int, ...]

    @property
    def k_max(self) -> int:
        return max(self.ks)

    @property
    def m_max(self) -> int:
        return max(self.ms)

    def configs(self) -> list[tuple[int, int]]:
        return [(k, m) for m in self.ms for k in self.ks]

    def subset(self, k: int, m: int, n: int | None = None) -> list[int]:
        """Indices, among a fact's ``n x M_max`` members (block-major; ``n``: its paraphrases, ``K_max`` unless the
        sweep takes short groups), of the members of ``(k, m)``, in the order a group cut to ``k`` paraphrases and
        ``m`` blocks lists its own members. A fact with fewer than ``k`` paraphrases gives all it has."""
        n = self.k_max if n is None else n
        return [b * n + p for b in range(m) for p in range(min(k, n))]


def config_name(k: int, m: int) -> str:
    return f"k{k}_m{m}"


def fused_configs(grid: Grid) -> list[tuple[int, int]]:
    """Configurations a fused rule decodes: one member fuses to itself (it is origin)."""
    return [(k, m) for k, m in grid.configs() if k * m >= 2]


def generation_row(gen: Generation) -> dict:
    """A member's answer as its engine row keeps it (:func:`generation_of` reads it back)."""
    return {"generation": gen.text, "prediction": gen.prediction, "logprobs": gen.logprobs,
            "tokens": gen.continuation}


def generation_of(row: dict) -> Generation:
    """The :class:`Generation` of an engine row (a member's or a fused rule's answer), as the heads take it. The
    row's ``tokens`` are the answer's continuation: its tokens, plus the EOS token that ended it (one token more
    than it has log-probabilities). A fused rule's row keeps no tokens."""
    tokens, logprobs = row.get("tokens") or [], row["logprobs"]
    ended = len(tokens) == len(logprobs) + 1
    gen = Generation(token_ids=list(tokens[:len(logprobs)]), text=row["generation"], logprobs=list(logprobs),
                     end="eos" if ended else None, eos_token=tokens[-1] if ended else None)
    if gen.prediction != row["prediction"]:
        raise InternalError(f"an engine row's prediction {row['prediction']!r} is not its generation's "
                            f"{gen.prediction!r}")
    return gen


def engine_pass(decoder, prompts, groups: list[Group], grid: Grid, rules: list[str], rescore: bool,
                first_tokens: int = 1, demo_answers: bool = False) -> list[dict]:
    """One batch of facts (each cut to ``K_max`` paraphrases, or fewer, and ``M_max`` blocks) -> one row per fact
    (module docstring; ``first_tokens > 1``: with every member's alternatives, ``demo_answers``: with the
    demonstrations' answers scored too; both need ``rescore``). Encoding, the
    members' answers and alternatives, the rescoring and the fused rules are the engine's member passes, as
    RerankHead's (:mod:`selfens_pl.engine.members`), over every member of a fact and over each ``(K, M)``'s members."""
    items, encoded, starts = encode_members(decoder, prompts, groups)
    sizes = [len(g["paraphrases"]) for g in groups]
    if any(len(own) != n * grid.m_max for own, n in zip(items, sizes)):
        raise InternalError(f"the sweep needs every fact cut to M_max = {grid.m_max} blocks of its paraphrases")
    gens = decode_members(decoder, encoded, items, starts)
    out = []
    for f, group in enumerate(groups):
        out.append({"id": group["id"], "answers": group["answers"], "members": [generation_row(x) for x in gens[f]],
                    "q_tokens": [len(prompts.for_block(group, b).question_ids(text)) for _, text, b in items[f]],
                    "block_tokens": [len(prompts.for_block(group, b).prefix_ids)
                                     for b in range(1, grid.m_max)],
                    "fused": {}})
    rows = member_rows(items, starts)
    if first_tokens > 1:
        if not rescore:
            raise InternalError("the engine decodes alternatives only for rescoring (first_tokens > 1, rescore off)")
        for fact, own in zip(out, member_alternatives(decoder, encoded, rows, first_tokens)):
            fact["alternatives"] = [[generation_row(x) for x in mine] for mine in own]
    if demo_answers:
        if not rescore:
            raise InternalError("the engine scores demonstration answers only for rescoring (rescore off)")
        tokens_of = partial(answer_continuation, decoder, prompts=prompts)  # as the members' prompts show an answer
        for fact, group in zip(out, groups):
            fact["demos"] = [[p, tokens] for p, tokens in demo_candidates(group, tokens_of)]
    if rescore:
        score_candidates(decoder, encoded, out, rows)
    for k, m in fused_configs(grid):
        if rules:
            fused = fused_answers(decoder, encoded, [[start + j for j in grid.subset(k, m, n)]
                                                     for start, n in zip(starts, sizes)], rules,
                                  [(min(k, n), m) for n in sizes], [is_generated(g) for g in groups])
            for fact, own in zip(out, fused):
                for rule, gen in zip(rules, own):
                    fact["fused"].setdefault(rule, {})[config_name(k, m)] = {
                        "generation": gen.text, "prediction": gen.prediction, "logprobs": gen.logprobs}
    return out


def score_candidates(decoder, encoded, facts: list[dict], rows: list[list[int]]) -> None:
    """Every fact's distinct answers (token sequences with a non-empty prediction: the members' in member order,
    then their alternatives', member-major, then its demonstrations' ``fact["demos"]``) scored under every member
    (its encoded rows ``rows[f]``): ``fact["candidates"]`` and ``fact["table"] [N][C]`` (sequence
    log-probabilities). Distinct by tokens, not by prediction: a subset of the members may take another member's
    tokens for the same answer as its candidate."""
    for fact in facts:
        seen, cands = set(), []
        shown = [{"prediction": p, "tokens": tokens} for p, tokens in fact.get("demos", ())]
        for member in fact["members"] + [x for own in fact.get("alternatives", ()) for x in own] + shown:
            key = tuple(member["tokens"])
            if member["prediction"] and key and key not in seen:
                seen.add(key)
                cands.append({"prediction": member["prediction"], "tokens": member["tokens"]})
        fact["candidates"] = cands
    tables = score_tables(decoder, encoded, rows, [[c["tokens"] for c in fact["candidates"]] for fact in facts])
    for fact, table in zip(facts, tables):
        fact["table"] = table
