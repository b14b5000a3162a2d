"""``CascadeHead``: a cheap answer first, the ensemble only where that answer is unsure.

Stage 1 answers every group with ``first`` cheap members (:func:`cheap_members`: paraphrase ``j`` with few-shot
block ``j mod M``, so with blocks the cheap answers also differ in their demonstrations; with fewer paraphrases
than ``first``, the same paraphrase with other blocks) and takes their vote
(:func:`selfens_pl.scoring.agreement.vote`; with ``first=1``: that member's answer). Its confidence is

* ``agreement``: the share of the cheap answers that agree with the voted one (needs ``first >= 2``): when two or
  three differently asked members give the same answer it is right far more often;
* ``mean_prob``: the voted answer's mean token probability (0 for an empty answer).

A group whose confidence is ``>= threshold`` keeps the stage-1 answer; the others are answered by ``ensemble`` (any
head; ``VoteHead`` and ``RerankHead`` reuse the cheap members' answers instead of decoding them again). So
``threshold = 0`` is the stage-1 head alone (``first=1``: origin) and any ``threshold > 1`` is the ensemble alone,
token for token (tested). Each record says which path answered (``path``: ``first`` or ``ensemble``), its
``cascade_confidence`` and ``decoded_rows``: the rows decoded for its group (the cheap ones, plus what the ensemble
decoded: its members not already answered, one row per FlexFusion group).
"""

from __future__ import annotations

from typing import Literal

from selfens_pl.data.demos import members, num_blocks
from selfens_pl.engine.batches import member_items, prompt_batch
from selfens_pl.engine.decoding import Generation
from selfens_pl.errors import UserError
from selfens_pl.heads.base import FusionHead
from selfens_pl.scoring.agreement import Lemmas, vote


def cheap_members(group: dict, first: int) -> list[int]:
    """Member indices (block-major, :func:`selfens_pl.data.demos.members`) of the first stage: the first ``first``
    (paraphrase ``p``, block ``b``) pairs down the diagonals of the K x M grid, ordered by ``(b - p) mod M``, then
    ``p``. With ``K >= first`` that is paraphrase ``j`` with block ``j mod M``; with fewer paraphrases than ``first``
    (K = 1, M = 3) the other members are the same paraphrase with the other blocks, never one member twice."""
    k, m = len(group["paraphrases"]), num_blocks(group)
    pairs = sorted(((p, b) for p in range(k) for b in range(m)), key=lambda pb: ((pb[1] - pb[0]) % m, pb[0]))
    return [b * k + p for p, b in pairs[:first]]


class CascadeHead(FusionHead):
    """Answer with ``first`` cheap members; run ``ensemble`` only where their confidence is below ``threshold``."""

    method = "cascade"

    def __init__(self, ensemble: FusionHead | None = None, first: int = 3,
                 confidence: Literal["agreement", "mean_prob"] = "agreement", threshold: float = 1.0):
        """
        Args:
            ensemble: The head answering the unsure groups (default: ``RerankHead()``).
            first: Cheap members answered first (paraphrase j with block j mod M, j < first).
            confidence: ``agreement`` (share of the cheap answers agreeing with their vote; needs ``first >= 2``)
                or ``mean_prob`` (the voted answer's mean token probability).
            threshold: Keep the cheap answer when its confidence is ``>= threshold``: 0 never runs the ensemble,
                anything above 1 always does.
        """
        super().__init__()
        from selfens_pl.heads.rerank import RerankHead

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
        self.first, self.confidence, self.threshold = first, confidence, float(threshold)

    def generate(self, decoder, prompts, groups):
        self.check_groups(groups)
        cheap = [cheap_members(g, self.first) for g in groups]
        gens = self._first_stage(decoder, prompts, groups, cheap)
        lemmas, records, escalate = Lemmas(), [None] * len(groups), []
        for gi, (group, own) in enumerate(zip(groups, gens)):
            best, support = vote([x.prediction for x in own], [x.logprobs for x in own], lemmas)
            conf = support / len(own) if self.confidence == "agreement" else (own[best].mean_prob or 0.0)
            if conf >= self.threshold:
                rec = self.record(group, own[best], None, list(group["paraphrases"]))
                rec.update(path="first", cascade_confidence=conf, decoded_rows=len(own),
                           agreement=support / len(own), paraphrase_predictions=[x.prediction for x in own])
                records[gi] = rec
            else:
                escalate.append((gi, conf))
        if escalate:
            todo = [groups[gi] for gi, _ in escalate]
            reuse = self._reuses()
            known = [dict(zip(cheap[gi], gens[gi])) for gi, _ in escalate] if reuse else None
            out = self.ensemble.generate(decoder, prompts, todo, known=known) if reuse else \
                self.ensemble.generate(decoder, prompts, todo)
            for (gi, conf), rec in zip(escalate, out):
                extra = len(members(groups[gi])) - len(cheap[gi]) if reuse else self._rows(groups[gi])
                rec.update(method=self.method, ensemble=rec["method"], path="ensemble", cascade_confidence=conf,
                           decoded_rows=len(cheap[gi]) + extra)
                records[gi] = rec
        return records

    def _first_stage(self, decoder, prompts, groups, cheap) -> list[list[Generation]]:
        """The cheap members' answers, one batched per_prompt decode (each with its own few-shot block)."""
        from selfens_pl.engine.fusion import no_fusion

        items = [(gi, member_items(g)[i]) for gi, g in enumerate(groups) for i in cheap[gi]]
        decoded = decoder.decode_n_tokens(prompt_batch(decoder, prompts, [it for _, it in items]), no_fusion, no_fusion)
        out: list[list[Generation]] = [[] for _ in groups]
        for (gi, _), gen in zip(items, decoded):
            out[gi].append(gen)
        return out

    def _reuses(self) -> bool:
        from selfens_pl.heads import RerankHead, VoteHead

        return isinstance(self.ensemble, (VoteHead, RerankHead))

    def _rows(self, group: dict) -> int:
        """Rows the ensemble decodes for ``group`` when it reuses nothing."""
        from selfens_pl.heads import FlexFusion, OriginHead

        if isinstance(self.ensemble, OriginHead):
            return 1
        if isinstance(self.ensemble, FlexFusion):
            return 1
        return len(members(group)) + (self.ensemble.content_free_rows(len(members(group)))
                                      if hasattr(self.ensemble, "content_free_rows") else 0)
