"""``CascadeHead``: a cheap answer first, the ensemble only where that answer is unsure.

Stage 1 answers every group with ``first`` cheap members (:func:`cheap_members`: paraphrase ``j`` with few-shot
block ``j mod M``, so with blocks the cheap answers also differ in their demonstrations; with fewer paraphrases
than ``first``, the same paraphrase with other blocks) and takes their vote
(:func:`selfens_pl.scoring.agreement.vote`; with ``first=1``: that member's answer). Its confidence is

* ``agreement``: the share of the cheap answers that agree with the voted one (needs ``first >= 2``): when two or
  three differently asked members give the same answer it is right far more often;
* ``mean_prob``: the voted answer's mean token probability (0 for an empty answer).

A group whose confidence is ``>= threshold`` keeps the stage-1 answer; the others are answered by ``ensemble`` (any
head answering one record per group, :func:`one_record_per_group`; one whose ``generate`` takes ``known``,
:func:`reuses_known`, such as ``VoteHead`` and ``RerankHead``, reuses the cheap members' answers instead of decoding
them again). So ``threshold = 0`` is the stage-1 head alone (``first=1``: origin) and any ``threshold > 1`` is the
ensemble alone, token for token (tested). Each record says which path answered (``path``: ``first`` or
``ensemble``), its ``cascade_confidence`` and ``decoded_rows``: the rows decoded for its group (the cheap ones,
plus what the ensemble decoded: its members not already answered, or its own
:meth:`~selfens_pl.heads.base.FusionHead.decoded_rows`, e.g. one row per FlexFusion group).

The decisions over answers already decoded are :meth:`CascadeHead.first_stage` (the cheap answers' vote and
confidence), :meth:`CascadeHead.keeps` (keep or escalate at a threshold) and the ensemble's own ``decide``:
``generate`` calls the first two on the cheap answers it decodes; ``sweep`` calls all three on the answers of its
engine pass (:meth:`CascadeHead.outcomes`), and :meth:`CascadeHead.keeps` again at every threshold of its curve.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

from selfens_pl.data.demos import members, num_blocks
from selfens_pl.data.group import Group
from selfens_pl.engine.batches import member_items, prompt_batch
from selfens_pl.engine.decoding import Generation
from selfens_pl.engine.fusion import no_fusion
from selfens_pl.errors import InternalError, UserError
from selfens_pl.heads.base import FusionHead
from selfens_pl.heads.per_prompt import PerPromptHead
from selfens_pl.heads.rerank import RerankHead, rescores_demo_answers
from selfens_pl.scoring.agreement import Lemmas, vote


def reuses_known(head: FusionHead) -> bool:
    """Whether ``head.generate`` takes ``known`` (``[group]{member index: Generation}``: members already answered,
    here by the first stage) and decodes only the other members: read off its ``generate``, so a head says it by
    what its ``generate`` takes."""
    return "known" in inspect.signature(head.generate).parameters


def one_record_per_group(head: FusionHead) -> bool:
    """Whether ``head`` answers one record per group, as an ensemble must (its records are handed to the escalated
    groups in turn): every head but per_prompt, which answers one per member."""
    return not isinstance(head, PerPromptHead)


def cheap_members(group: Group, first: int) -> list[int]:
    """Member indices (block-major, :func:`selfens_pl.data.demos.members`) of the first stage: the first ``first``
    (paraphrase ``p``, block ``b``) pairs down the diagonals of the K x M grid, ordered by ``(b - p) mod M``, then
    ``p``. With ``K >= first`` that is paraphrase ``j`` with block ``j mod M``; with fewer paraphrases than ``first``
    (K = 1, M = 3) the other members are the same paraphrase with the other blocks, never one member twice."""
    k, m = len(group["paraphrases"]), num_blocks(group)
    pairs = sorted(((p, b) for p in range(k) for b in range(m)), key=lambda pb: ((pb[1] - pb[0]) % m, pb[0]))
    return [b * k + p for p, b in pairs[:first]]


@dataclass(frozen=True)
class FirstStage:
    """The cheap members' vote of one group: the winner's ``index`` among the ``size`` cheap answers, its
    ``support`` (answers agreeing with it) and the ``confidence`` the threshold is compared with."""

    index: int
    support: int
    size: int
    confidence: float

    @property
    def agreement(self) -> float:
        return self.support / self.size


class CascadeHead(FusionHead):
    """Answer with ``first`` cheap members; run ``ensemble`` only where their confidence is below ``threshold``."""

    method = "cascade"

    def __init__(self, ensemble: FusionHead | None = None, first: int = 3,
                 confidence: Literal["agreement", "mean_prob"] = "agreement", threshold: float = 1.0):
        """
        Args:
            ensemble: The head answering the unsure groups (default: ``RerankHead()``); it must answer one record
                per group.
            first: Cheap members answered first (paraphrase j with block j mod M, j < first).
            confidence: ``agreement`` (share of the cheap answers agreeing with their vote; needs ``first >= 2``)
                or ``mean_prob`` (the voted answer's mean token probability).
            threshold: Keep the cheap answer when its confidence is ``>= threshold``: 0 never runs the ensemble,
                anything above 1 always does.
        """
        super().__init__()
        if first < 1:
            raise UserError(f"--model.head.init_args.first must be >= 1, got {first}")
        if confidence not in ("agreement", "mean_prob"):
            raise UserError(f"--model.head.init_args.confidence={confidence!r}: choose agreement or mean_prob")
        if confidence == "agreement" and first < 2:
            raise UserError("--model.head.init_args.confidence=agreement needs first >= 2 (one answer always agrees "
                             "with itself); use mean_prob with first=1")
        if threshold < 0:
            raise UserError(f"--model.head.init_args.threshold must be >= 0, got {threshold}")
        self.ensemble = ensemble if ensemble is not None else RerankHead()
        if isinstance(self.ensemble, CascadeHead):
            raise UserError("--model.head.init_args.ensemble: a cascade cannot escalate to another cascade")
        if rescores_demo_answers(self.ensemble):
            raise UserError("--model.head.init_args.ensemble: a cascade escalates to a RerankHead without "
                            "demo_answers (its first stage answers no demonstration's answer)")
        if not one_record_per_group(self.ensemble):
            # its records would be handed to the escalated groups in turn: the wrong group's answers
            raise UserError(f"--model.head.init_args.ensemble: {type(self.ensemble).__name__} answers one record "
                             "per member; the ensemble must answer one record per group (e.g. RerankHead, VoteHead, "
                             "LogitFusion)")
        self.first, self.confidence, self.threshold = first, confidence, float(threshold)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"cascade_{self.ensemble.method}_first{self.first}_{self.confidence}_t{self.threshold:g}"

    def decoded_rows(self, members: int) -> int:
        """Rows of an escalated group (the most it decodes; each record gives its own)."""
        return self.escalated_rows(members, min(self.first, members))

    def escalated_rows(self, members: int, cheap: int) -> int:
        """Rows decoded for an escalated group of ``members`` members with ``cheap`` of them answered first (an
        ensemble that reuses them decodes its own rows but those: e.g. a RerankHead's ``members x first_tokens``)."""
        return self.ensemble.decoded_rows(members) if reuses_known(self.ensemble) \
            else cheap + self.ensemble.decoded_rows(members)

    # -- the decisions over decoded answers --------------------------------------------------------------------
    def first_stage(self, cheap: list[Generation], lemmas: Lemmas | None = None) -> FirstStage:
        """The vote of the cheap members' answers ``cheap`` and its confidence."""
        index, support = vote([x.prediction for x in cheap], [x.logprobs for x in cheap], lemmas)
        conf = support / len(cheap) if self.confidence == "agreement" else (cheap[index].mean_prob or 0.0)
        return FirstStage(index, support, len(cheap), conf)

    def keeps(self, stage: FirstStage, threshold: float | None = None) -> bool:
        """Keep the first stage's answer (True) or escalate to the ensemble, at the head's threshold or at
        ``threshold`` (the sweep's curve)."""
        return stage.confidence >= (self.threshold if threshold is None else threshold)

    def first_record(self, group: Group, cheap: list[Generation], stage: FirstStage) -> dict:
        rec = self.record(group, cheap[stage.index], None, list(group["paraphrases"]))
        rec.update(path="first", cascade_confidence=stage.confidence, decoded_rows=stage.size,
                   agreement=stage.agreement, paraphrase_predictions=[x.prediction for x in cheap])
        return rec

    def escalated(self, rec: dict, group: Group, stage: FirstStage) -> dict:
        """The ensemble's record ``rec`` of an escalated ``group``, as the cascade's."""
        rec.update(method=self.method, ensemble=rec["method"], path="ensemble", cascade_confidence=stage.confidence,
                   decoded_rows=self.escalated_rows(len(members(group)), stage.size))
        return rec

    def outcomes(self, group: Group, gens: list[Generation], scores=None, lemmas: Lemmas | None = None,
                 alternatives: list[list[Generation]] | None = None,
                 demos: list[tuple[str, list[int]]] | None = None) -> tuple[FirstStage, dict, dict]:
        """Both answers ``group`` can get from all its members' answers ``gens`` ``[N]`` (member order): the first
        stage over its cheap members, the record it keeps and the record of the ensemble's ``decide`` over all
        members (``alternatives``: the members' answers from other first tokens, for a RerankHead ensemble with
        ``first_tokens > 1``). The sweep reads both (its curve over thresholds); :meth:`decide` keeps one."""
        cheap = [gens[i] for i in cheap_members(group, self.first)]
        stage = self.first_stage(cheap, lemmas)
        decided = self.ensemble.decide(group, gens, scores, lemmas, alternatives, demos)
        escalated = self.escalated(decided, group, stage)
        return stage, self.first_record(group, cheap, stage), escalated

    def decide(self, group: Group, gens, scores=None, lemmas=None, alternatives=None, demos=None) -> dict:
        stage, first, escalated = self.outcomes(group, gens, scores, lemmas, alternatives, demos)
        return first if self.keeps(stage) else escalated

    # -- decoding ------------------------------------------------------------------------------------------------
    def generate(self, decoder, prompts, groups: list[Group]):
        self.check_groups(groups)
        cheap = [cheap_members(g, self.first) for g in groups]
        gens = self._first_stage(decoder, prompts, groups, cheap)
        lemmas = Lemmas()
        stages = [self.first_stage(own, lemmas) for own in gens]
        records = [self.first_record(group, own, stage) if self.keeps(stage) else None
                   for group, own, stage in zip(groups, gens, stages)]
        escalate = [gi for gi, rec in enumerate(records) if rec is None]
        if escalate:
            todo = [groups[gi] for gi in escalate]
            if reuses_known(self.ensemble):
                out = self.ensemble.generate(decoder, prompts, todo,
                                             known=[dict(zip(cheap[gi], gens[gi])) for gi in escalate])
            else:
                out = self.ensemble.generate(decoder, prompts, todo)
            if len(out) != len(todo):  # one_record_per_group() is checked in __init__: a head it does not know of
                raise InternalError(f"{type(self.ensemble).__name__} answered {len(out)} records for {len(todo)} "
                                    "groups (a cascade's ensemble answers one record per group)")
            for gi, rec in zip(escalate, out):
                records[gi] = self.escalated(rec, groups[gi], stages[gi])
        return records

    def _first_stage(self, decoder, prompts, groups, cheap) -> list[list[Generation]]:
        """The cheap members' answers, one batched per_prompt decode (each with its own few-shot block)."""
        items = [(gi, member_items(g)[i]) for gi, g in enumerate(groups) for i in cheap[gi]]
        decoded = decoder.decode_n_tokens(prompt_batch(decoder, prompts, [it for _, it in items]), no_fusion, no_fusion)
        out: list[list[Generation]] = [[] for _ in groups]
        for (gi, _), gen in zip(items, decoded):
            out[gi].append(gen)
        return out
