"""``RerankHead``: answer-level rescoring of the members' own answers (:mod:`selfens_pl.scoring.rescoring`).

Per batch: the prompts of every member of every group (paraphrase x few-shot block, :mod:`selfens_pl.data.demos`) are
encoded ONCE (:meth:`~selfens_pl.engine.decoding.GreedyDecoder.encode`); from that encoding every member answers greedily
(per_prompt's decoding, batched across groups), optionally a LogitFusion rule decodes one fused answer per group
(``fused``), and then every candidate of a group is scored under every member's prompt in one teacher-forced pass
(:meth:`~selfens_pl.engine.decoding.GreedyDecoder.score_continuations`) that copies the prompts' KV caches rather than
encoding them again. Cost per group of ``N`` members and ``C`` candidates: ``N`` decoded rows (+1 with ``fused``),
and ``N x C`` scored rows of a few tokens each, against one prompt encoding.

With one member the only candidate is that member's answer: the head answers exactly as origin (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfens_pl.engine.batches import member_items, prompt_batch
from selfens_pl.engine.decoding import EncodedPrompts, Generation, no_fusion
from selfens_pl.engine.fusion import WEIGHTED, FusionMethod, check_method, fuse_logits
from selfens_pl.errors import UserError
from selfens_pl.heads.base import FusionHead
from selfens_pl.heads.logit import group_valid
from selfens_pl.scoring.agreement import Lemmas
from selfens_pl.scoring.rescoring import Candidate, RerankRule, best, candidates, check_rule, combine


class RerankHead(FusionHead):
    """The members' greedy answers as candidates, each scored under every member's prompt; the best by ``rule``."""

    def __init__(self, rule: RerankRule = "mixture", fused: FusionMethod | None = None):
        """
        Args:
            rule: How the members' sequence log-probabilities of a candidate combine: ``mixture`` (log of their mean
                probability), ``product`` (their sum), ``max``, ``mean_token`` (length-normalised product) or
                ``vote`` (most agreeing answers first, then mixture). See :mod:`selfens_pl.scoring.rescoring`.
            fused: Also decode the group's LogitFusion answer under this rule (``avg``, ``prob_avg``, ...) and add
                it as a candidate (one more decoded row per group). ``None``: the members' answers only.
        """
        super().__init__()
        self.rule = check_rule(rule)
        if fused is not None:
            check_method(fused, "--model.head.init_args.fused")
            if fused in WEIGHTED:
                raise UserError(f"--model.head.init_args.fused={fused!r}: the fused candidate takes an unweighted "
                                 "rule (avg, max, prob_avg, entropy_weighted)")
        self.fused = fused

    @property
    def method(self) -> str:  # type: ignore[override]
        return f"rerank_{self.rule}" + (f"_{self.fused}" if self.fused else "")

    def generate(self, decoder, prompts, groups, known: list[dict[int, Generation]] | None = None):
        """``known[g]``: members of group ``g`` already answered (by a cascade's first stage): not decoded again."""
        self.check_groups(groups)
        scored = rerank_pass(decoder, prompts, groups, self.fused, known)
        return [self.pick(group, scored.gens[g], scored.fused[g], scored.candidates[g], scored.tables[g])
                for g, group in enumerate(groups)]

    def pick(self, group: dict, gens: list[Generation], fused: Generation | None, cands: list[Candidate],
             table: list[list[float]]) -> dict:
        """The record of ``group``: the candidate ``rule`` ranks first (``table [N][C]``: sequence log-probability
        of candidate c under member m)."""
        if not cands:  # every member answered nothing: so does the ensemble
            rec = self.record(group, gens[0], None, list(group["paraphrases"]))
            chosen, scores = None, []
        else:
            scores = combine(table, [len(c.tokens) for c in cands], self.rule, [c.support for c in cands])
            chosen = cands[best(scores)]
            rec = self.record(group, gens[chosen.member] if chosen.member >= 0 else fused, None,
                              list(group["paraphrases"]))
        answers = [x.prediction for x in gens]
        rec["agreement"] = 0.0 if chosen is None else chosen.support / len(gens)
        rec["paraphrase_predictions"] = answers
        rec["candidates"] = [{"prediction": c.prediction, "member": c.member, "support": c.support,
                              "score": round(s, 4)} for c, s in zip(cands, scores)]
        return rec


@dataclass
class RerankPass:
    """What one rescoring pass computed for a batch of groups (the sweep derives every rule and every subset of
    members from it). Per group ``g``: ``gens[g][m]`` member m's own answer, ``fused[g]`` the fused answer (or
    None), ``candidates[g]``, ``tables[g] [N][C]`` sequence log-probability of candidate c under member m;
    ``encoded`` the members' prompts (row ``starts[g] + m``), reusable for more decodes."""

    gens: list[list[Generation]]
    fused: list[Generation | None]
    candidates: list[list[Candidate]]
    tables: list[list[list[float]]]
    encoded: EncodedPrompts
    starts: list[int]


def rerank_pass(decoder, prompts, groups: list[dict], fused: str | None = None,
                known: list[dict[int, Generation]] | None = None) -> RerankPass:
    """Encode every member's prompt once, decode the members' answers (except ``known`` ones) and the optional fused
    answer from it, and score every candidate under every member from the same encoding."""
    items = [member_items(g) for g in groups]
    encoded = decoder.encode(prompt_batch(decoder, prompts, [it for own in items for it in own]))
    starts = [sum(len(own) for own in items[:g]) for g in range(len(groups))]
    gens = decode_members(decoder, encoded, items, starts, known)
    extra = fused_answers(decoder, encoded, [len(own) for own in items], starts, fused) if fused else \
        [None] * len(groups)
    lemmas = Lemmas()
    cands = [candidates([x.prediction for x in own], [x.continuation for x in own], lemmas,
                        [] if fx is None or not fx.prediction else [(fx.prediction, fx.continuation)])
             for own, fx in zip(gens, extra)]
    rows = [(g, m) for g, own in enumerate(items) for m in range(len(own)) if cands[g]]
    scored = iter(decoder.score_continuations(encoded, [starts[g] + m for g, m in rows],
                                              [[c.tokens for c in cands[g]] for g, _ in rows]) if rows else [])
    tables = [[[sum(lp) for lp in next(scored)] if cands[g] else [] for _ in items[g]] for g in range(len(groups))]
    return RerankPass(gens, extra, cands, tables, encoded, starts)


def fused_answers(decoder, encoded: EncodedPrompts, sizes: list[int], starts: list[int],
                  rule: str) -> list[Generation]:
    """One LogitFusion answer per group (``rule``) decoded from ``encoded`` (group g: rows ``starts[g]`` ..
    ``starts[g] + sizes[g] - 1``); ragged groups are padded and masked."""
    n = max(sizes)
    rows = [starts[g] + min(m, size - 1) for g, size in enumerate(sizes) for m in range(n)]
    batch = encoded.batch(torch.tensor(rows, device=decoder.device), n)
    if any(size < n for size in sizes):
        batch.valid = batch.step_valid = group_valid(sizes, n, decoder.device)

    def fuse(logits, weights=None, valid=None):
        return fuse_logits(logits, rule, None, valid)

    return decoder.decode_n_tokens(batch, fuse, fuse)


def decode_members(decoder, encoded, items: list[list], starts: list[int],
                   known: list[dict[int, Generation]] | None = None) -> list[list[Generation]]:
    """Every member's greedy answer from ``encoded`` (row ``starts[g] + m`` is member ``m`` of group ``g``), except
    those in ``known[g]``; one batched decode. Returns ``[group][member]``."""
    todo = [(g, m) for g, own in enumerate(items) for m in range(len(own))
            if known is None or m not in known[g]]
    out: list[list[Generation | None]] = [[None] * len(own) for own in items]
    if known is not None:
        for g, got in enumerate(known):
            for m, gen in got.items():
                out[g][m] = gen
    if todo:
        rows = torch.tensor([starts[g] + m for g, m in todo], device=decoder.device)
        for (g, m), gen in zip(todo, decoder.decode_n_tokens(encoded.batch(rows), no_fusion, no_fusion)):
            out[g][m] = gen
    return out  # type: ignore[return-value]
