"""``RerankHead``: answer-level rescoring of the members' own answers (:mod:`selfens_pl.scoring.rescoring`).

Per batch: the prompts of every member of every group (paraphrase x few-shot block, :mod:`selfens_pl.data.demos`) are
encoded ONCE (:meth:`~selfens_pl.engine.decoding.GreedyDecoder.encode`); from that encoding every member answers greedily
(per_prompt's decoding, batched across groups), optionally a LogitFusion rule decodes one fused answer per group
(``fused``), and then every candidate of a group is scored under every member's prompt in one teacher-forced pass
(:meth:`~selfens_pl.engine.decoding.GreedyDecoder.score_continuations`) that copies the prompts' KV caches rather than
encoding them again. Cost per group of ``N`` members and ``C`` candidates: ``N`` decoded rows (+1 with ``fused``),
and ``N x C`` scored rows of a few tokens each, against one prompt encoding.

Wider candidates (``first_tokens = k > 1``): each member also answers starting with its 2nd .. k-th most likely first
token, each continued greedily (:func:`~selfens_pl.engine.alternatives.decode_alternatives`: one more batched decode
of ``N x (k-1)`` rows from the same encoding); the new distinct answers join the candidates (after the members'
greedy answers, before the fused one) and are scored and ranked like them. ``k = 1`` is the head without them.

Demonstration answers (``demo_answers=True``): the answers of the demonstrations of the group's extra few-shot
blocks (:func:`~selfens_pl.engine.members.demo_answers`; with ``demo_selection: similar`` the nearest train
questions') join the candidates last, each as the tokens a member would decode to give it
(:func:`~selfens_pl.engine.members.answer_continuation`), and are scored under every
member like the others: no more decoded rows, ``N x D`` more scored rows for ``D`` new answers. Without extra blocks
(``M = 1``) there are none and the head is the head without them.

With one member the only candidate is that member's answer: the head answers exactly as origin (tested).

The choice over answers already decoded and scored is :meth:`RerankHead.pick` (the candidates and their ``[N][C]``
score table -> the record); :meth:`RerankHead.decide` builds the candidates (:func:`~selfens_pl.scoring.rescoring.
candidates`) of given member answers and picks among them: ``generate`` picks over its own pass, ``sweep`` decides
over the answers and score table of its one engine pass (:mod:`selfens_pl.sweep.derive`). Both passes encode,
decode, score and fuse with the engine's member passes (:mod:`selfens_pl.engine.members`: ``encode_members``,
``decode_members``, ``score_tables``, ``fused_answers`` and, for ``first_tokens > 1``, ``member_alternatives``, whose
answers ``decide`` takes as ``alternatives``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Literal

from selfens_pl.data.group import Group
from selfens_pl.data.origin_share import group_shape, head_share, member_weights, share_suffix
from selfens_pl.engine.decoding import EncodedPrompts, Generation
from selfens_pl.engine.fusion import WEIGHTED, FusionMethod, check_method
from selfens_pl.engine.members import (answer_continuation, decode_members, demo_answers, demo_candidates,
                                       encode_members, fused_answers, member_alternatives, member_rows, score_tables)
from selfens_pl.errors import InternalError, UserError
from selfens_pl.heads.base import FusionHead
from selfens_pl.scoring.agreement import Lemmas, weighted_support
from selfens_pl.scoring.chooser import Chooser, candidate_features, feature_set, rich_features, set_name
from selfens_pl.scoring.rescoring import DEMO_MEMBER, Candidate, RerankRule, best, candidates, check_rule, combine


class RerankHead(FusionHead):
    """The members' greedy answers as candidates, each scored under every member's prompt; the best by ``rule``."""

    def __init__(self, rule: RerankRule | Literal["learned"] = "mixture", fused: FusionMethod | None = None,
                 chooser: str | None = None, first_tokens: int = 1, demo_answers: bool = False,
                 origin_share: float | str | None = "auto",
                 chooser_features: Literal["standard", "rich"] | None = None):
        """
        Args:
            rule: How the members' sequence log-probabilities of a candidate combine: ``mixture`` (log of their mean
                probability), ``product`` (their sum), ``max``, ``mean_token`` (length-normalised product) or
                ``vote`` (most agreeing answers first, then mixture), see :mod:`selfens_pl.scoring.rescoring`; or
                ``learned``: the chooser file ``chooser`` scores each candidate (:mod:`selfens_pl.scoring.chooser`).
            fused: Also decode the group's LogitFusion answer under this rule (``avg``, ``prob_avg``, ...) and add
                it as a candidate (one more decoded row per group). ``None``: the members' answers only.
            chooser: With ``rule: learned``: the file ``python -m selfens_pl chooser`` wrote. ``sweep`` also takes
                ``rule: learned`` without a file: it then fits the chooser on its own facts, cross-validated (folds
                by fact: no fact is scored by a chooser fit on it), as ``rerank_learned_cv``.
            first_tokens: ``k``: besides its greedy answer, each member also answers starting with its 2nd .. k-th
                most likely first token (continued greedily); those answers join the candidates (``k - 1`` more
                decoded rows per member). 1: the members' greedy answers only. The method gets ``_top{k}``.
            demo_answers: The answers of the demonstrations the group is asked with (its extra few-shot blocks: with
                ``--data.demo_selection similar`` the nearest train questions') join the candidates, scored under
                every member (no more decoded rows); a learned chooser also gets the demonstrations' vote and the
                nearest agreeing one as features. The method gets ``_demos``.
            origin_share: The original question's (paraphrase 0's) share of the members' weight in a fixed rule
                (:mod:`selfens_pl.data.origin_share`, :func:`~selfens_pl.scoring.rescoring.weighted_combine`): 0.5
                counts it as much as all its paraphrases together. ``auto`` (default): 0.9 for paraphrases
                ``paraphrase`` generated, every member equal for written ones (and with ``learned``, whose chooser
                weighs its own features, or ``fused``). ``None``: every member equal always (the method gets
                ``_equal``). A number (not with ``learned`` or ``fused``): the method gets ``_origin{share}``.
            chooser_features: With ``rule: learned`` and no file (a sweep's cross-validated chooser): ``standard``
                (default; a logistic regression) or ``rich`` (:mod:`selfens_pl.scoring.chooser_features`; boosted
                trees, the method gets ``_rich``). With a file: the set the file scores (given, it must be the
                file's). Either way the records get the chooser's calibrated ``confidence`` when it has one.
        """
        super().__init__()
        self.rule = rule if rule == "learned" else check_rule(rule)
        if chooser is not None and rule != "learned":
            raise UserError(f"--model.head.init_args.chooser={chooser!r} goes with rule: learned (rule is {rule!r})")
        if not isinstance(demo_answers, bool):
            raise UserError(f"--model.head.init_args.demo_answers must be true or false, got {demo_answers!r}")
        self.demo_answers = demo_answers
        self.chooser = chooser
        if chooser_features is not None and rule != "learned":
            raise UserError(f"--model.head.init_args.chooser_features={chooser_features!r} goes with rule: learned "
                            f"(rule is {rule!r})")
        wanted = None if chooser_features is None else feature_set(
            chooser_features, demo_answers, "--model.head.init_args.chooser_features")
        self.chooser_features = chooser_features
        self.model = Chooser.load(chooser, features=wanted, demo_answers=demo_answers) if chooser else None
        self._lemmas = Lemmas()  # the chooser's support features: each answer lemmatised once
        if fused is not None:
            check_method(fused, "--model.head.init_args.fused")
            if fused in WEIGHTED:
                raise UserError(f"--model.head.init_args.fused={fused!r}: the fused candidate takes an unweighted "
                                 "rule (avg, max, prob_avg, entropy_weighted)")
        self.fused = fused
        if isinstance(first_tokens, bool) or not isinstance(first_tokens, int) or first_tokens < 1:
            raise UserError(f"--model.head.init_args.first_tokens must be an integer >= 1 (1: the members' greedy "
                            f"answers only), got {first_tokens!r}")
        self.first_tokens = first_tokens
        self.origin_share = head_share(
            origin_share, self.weighs_members,
            f"--model.head.init_args.origin_share={origin_share!r} weighs the members of a fixed rule (mixture, "
            f"product, max, mean_token, vote) without a fused candidate; got rule={rule!r}, fused={fused!r}")

    @property
    def method(self) -> str:  # type: ignore[override]
        return (f"rerank_{self.rule}" + ("_rich" if self.rich else "") + (f"_{self.fused}" if self.fused else "")
                + (f"_top{self.first_tokens}" if self.first_tokens > 1 else "")
                + ("_demos" if self.demo_answers else "") + share_suffix(self.origin_share, self.weighs_members))

    @property
    def weighs_members(self) -> bool:
        """Whether the rule can weigh its members by the original's share (``origin_share``): a fixed rule without
        a fused candidate."""
        return self.rule != "learned" and self.fused is None

    @property
    def features(self) -> tuple[str, ...]:
        """The chooser's features for this head (:mod:`selfens_pl.scoring.chooser`): its file's, else those of
        ``chooser_features``."""
        if self.model is not None:
            return self.model.features
        return feature_set(self.chooser_features or "standard", self.demo_answers)

    @property
    def rich(self) -> bool:
        """Whether its chooser scores the rich features (:mod:`selfens_pl.scoring.chooser_features`)."""
        return self.rule == "learned" and set_name(self.features) == "rich"

    @property
    def learns_from_facts(self) -> bool:
        """``rule: learned`` without a chooser file: only a sweep can answer (cross-validated over its facts)."""
        return self.rule == "learned" and self.model is None

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.method + ("_cv" if self.learns_from_facts else "")

    def with_chooser(self, model: Chooser) -> RerankHead:
        """This head choosing with ``model`` (a chooser fit elsewhere, e.g. on the other folds of a sweep)."""
        head = copy.copy(self)
        head.model = model
        return head

    def candidate_features(self, group: Group, gens: list[Generation], cands: list[Candidate],
                           table: list[list[float]], lemmas: Lemmas | None = None) -> list[list[float]]:
        """``[C][F]`` the chooser's features of each candidate (:func:`~selfens_pl.scoring.chooser.
        candidate_features`, or :func:`~selfens_pl.scoring.chooser_features.rich_features`); the demonstrations are
        the answers of the group's extra few-shot blocks."""
        answers, texts, lengths = [x.prediction for x in gens], [c.prediction for c in cands], [len(c.tokens)
                                                                                              for c in cands]
        if self.rich:
            return rich_features(group["paraphrases"][0], answers, texts, [c.member != DEMO_MEMBER for c in cands],
                                 table, lengths, len(group["paraphrases"]), demo_answers(group),
                                 lemmas or self._lemmas, self.demo_answers,
                                 demo_questions=[d["question"] for block in group.get("blocks") or () for d in block])
        return candidate_features(answers, texts, table, lengths, len(group["paraphrases"]), demo_answers(group),
                                  lemmas or self._lemmas, self.demo_answers)

    def decoded_rows(self, members: int) -> int:
        # each member's greedy row and its first_tokens - 1 alternatives, and the fused candidate's own row
        return members * self.first_tokens + (1 if self.fused else 0)

    def generate(self, decoder, prompts, groups: list[Group], known: list[dict[int, Generation]] | None = None):
        """``known[g]``: members of group ``g`` already answered (by a cascade's first stage): not decoded again."""
        self.check_groups(groups)
        self._check_chooser()  # before the pass, not after it
        if self.rule == "learned":
            if self.model.fit_with is not None:  # a file fit with one model refuses another
                self.model.check_model(decoder.model)
            for group in groups:
                self.check_layout(group)
        scored = rerank_pass(decoder, prompts, groups, self.fused, known, self.first_tokens, self.demo_answers)
        return [self.pick(group, scored.gens[g], scored.fused[g], scored.candidates[g], scored.tables[g],
                          scored.alternatives[g])
                for g, group in enumerate(groups)]

    def decide(self, group: Group, gens, scores=None, lemmas=None, alternatives=None, demos=None) -> dict:
        """The record of ``group`` from its members' answers ``gens`` ``[N]`` (and, with ``first_tokens > 1``,
        ``alternatives [N][first_tokens-1]``: each member's answers from its 2nd.. most likely first token; with
        ``demo_answers``, ``demos [D] (prediction, tokens)``: its demonstrations' answers, :func:`demo_candidates`):
        their distinct answers as candidates, ``scores(candidates) -> [N][C]`` their sequence log-probabilities, then
        :meth:`pick`."""
        if self.fused is not None or scores is None:
            raise InternalError(f"{self.method}: decide() needs the candidates' scores and no fused candidate "
                                f"(fused={self.fused!r}, scores given: {scores is not None})")
        cands, table = self.scored_candidates(gens, scores, lemmas, alternatives, demos)
        return self.pick(group, gens, None, cands, table, alternatives)

    def scored_candidates(self, gens: list[Generation], scores, lemmas: Lemmas | None = None,
                          alternatives: list[list[Generation]] | None = None,
                          demos: list[tuple[str, list[int]]] | None = None):
        """``(candidates, table [N][C])``: the distinct answers of ``gens`` (then of ``alternatives [N][k-1]``, with
        ``first_tokens = k > 1``, then ``demos``, with ``demo_answers``) and ``scores(candidates)`` (an empty table
        when there is no candidate)."""
        alternatives = self._check_alternatives(gens, alternatives)
        if self.demo_answers != (demos is not None):
            raise InternalError(f"{self.method}: demo_answers={self.demo_answers} but demonstration answers were "
                                f"{'given' if demos is not None else 'not given'}")
        cands = candidates([x.prediction for x in gens], [x.continuation for x in gens], lemmas,
                           alternatives=[[(x.prediction, x.continuation) for x in own] for own in alternatives],
                           demos=demos or ())
        return cands, scores(cands) if cands else []

    def _check_alternatives(self, gens: list[Generation],
                            alternatives: list[list[Generation]] | None) -> list[list[Generation]]:
        """``alternatives`` (``[]`` per member with ``first_tokens = 1``) if it holds ``first_tokens - 1`` answers per
        member, else an InternalError: a caller that forgot them would silently rescore the greedy answers only."""
        if alternatives is None:
            if self.first_tokens > 1:
                raise InternalError(f"{self.method}: first_tokens={self.first_tokens} needs each member's "
                                    "alternative answers (alternatives=[N][first_tokens-1]); none were given")
            return [[] for _ in gens]
        if len(alternatives) != len(gens) or any(len(own) != self.first_tokens - 1 for own in alternatives):
            raise InternalError(f"{self.method}: alternatives hold {[len(own) for own in alternatives]} answers for "
                                f"{len(gens)} members; expected {self.first_tokens - 1} per member")
        return alternatives

    def _check_chooser(self) -> None:
        if self.learns_from_facts:
            raise UserError("--model.head.init_args.rule=learned needs --model.head.init_args.chooser (a file made "
                            "by `python -m selfens_pl chooser`); only `sweep` fits one on its own facts")

    def check_layout(self, group: Group) -> None:
        """One error naming the record and the file when ``group``'s members are not of the layout the chooser
        file was fit at (:meth:`~selfens_pl.scoring.chooser.Chooser.fits`): its features (support by paraphrase
        and by block, the demonstrations') mean something else there."""
        paraphrases, blocks = group_shape(group)
        if self.model is not None and not self.model.fits(paraphrases, blocks):
            k, m = self.model.layout
            raise UserError(f"record {group['id']!r}: --model.head.init_args.chooser={self.chooser!r} was fit on "
                            f"member sets of {k} paraphrase(s) x {m} few-shot block(s), this group has {paraphrases} "
                            f"x {blocks}: ask with --data.num_paraphrases {k} --data.demo_blocks {m}, or fit a "
                            f"chooser for this layout (python -m selfens_pl chooser --k K --m M)")

    def pick(self, group: Group, gens: list[Generation], fused: Generation | None, cands: list[Candidate],
             table: list[list[float]], alternatives: list[list[Generation]] | None = None) -> dict:
        """The record of ``group``: the candidate ``rule`` ranks first (``table [N][C]``: sequence log-probability
        of candidate c under member m); its own answer is ``gens[member]``, ``alternatives[member][rank-1]`` (a
        rank > 0 candidate), ``fused`` (member -1) or a demonstration's answer (member ``DEMO_MEMBER``: its
        ``generation`` is the answer's text, its ``mean_prob`` None: no member decoded it). With
        ``first_tokens > 1`` each ``candidates`` entry also gives its ``rank``."""
        if not cands:  # every member answered nothing: so does the ensemble
            rec = self.record(group, gens[0], None, list(group["paraphrases"]))
            chosen, scores = None, []
        elif self.rule == "learned":
            self._check_chooser()  # e.g. a cascade's ensemble in a sweep: only a plain RerankHead is cross-validated
            self.check_layout(group)
            scores = self.model.scores(self.candidate_features(group, gens, cands, table))
        else:
            scores = self.combined(group, gens, cands, table)
        if cands:
            chosen = cands[best(scores)]
            rec = self.record(group, self._answer_of(chosen, gens, fused, alternatives), None,
                              list(group["paraphrases"]))
        answers = [x.prediction for x in gens]
        rec["agreement"] = 0.0 if chosen is None else chosen.support / len(gens)
        if self.model is not None and self.model.calibration is not None:  # P(right) of the choice, calibrated
            rec["confidence"] = None if chosen is None else round(self.model.confidence(scores), 4)
        rec["paraphrase_predictions"] = answers
        rec["candidates"] = [{"prediction": c.prediction, "member": c.member, "support": c.support,
                              "score": round(s, 4)} for c, s in zip(cands, scores)]
        if self.first_tokens > 1:  # (first_tokens = 1 writes exactly the records it always wrote)
            for entry, c in zip(rec["candidates"], cands):
                entry["rank"] = c.rank
        return rec

    def combined(self, group: Group, gens: list[Generation], cands: list[Candidate],
                 table: list[list[float]]) -> list[float]:
        """Each candidate's score under the fixed rule, the members weighted by ``origin_share`` (``vote``: by
        their summed weight of agreeing answers)."""
        lengths = [len(c.tokens) for c in cands]
        weights = member_weights(group, self.origin_share)
        if weights is None:
            return combine(table, lengths, self.rule, [c.support for c in cands])
        support = None
        if self.rule == "vote":  # (the other rules read no support)
            support = weighted_support([c.prediction for c in cands], [x.prediction for x in gens], weights,
                                       self._lemmas)
        return combine(table, lengths, self.rule, support, weights)

    @staticmethod
    def _answer_of(chosen: Candidate, gens: list[Generation], fused: Generation | None,
                   alternatives: list[list[Generation]] | None) -> Generation:
        if chosen.member == DEMO_MEMBER:
            return Generation(token_ids=list(chosen.tokens), text=" " + chosen.prediction, end="stop")
        if chosen.member < 0:
            return fused
        if chosen.rank == 0:
            return gens[chosen.member]
        if alternatives is None:
            raise InternalError(f"candidate {chosen.prediction!r} is member {chosen.member}'s rank-{chosen.rank} "
                                "answer, but no alternatives were given")
        return alternatives[chosen.member][chosen.rank - 1]


def rescores_demo_answers(head: FusionHead) -> bool:
    """Whether ``head`` rescores the answers of the demonstrations its groups are asked with
    (``RerankHead(demo_answers=True)``): such a head needs extra few-shot blocks, and no cascade's first stage answers
    a demonstration's answer."""
    return isinstance(head, RerankHead) and head.demo_answers


@dataclass
class RerankPass:
    """What one rescoring pass computed for a batch of groups. Per group ``g``: ``gens[g][m]`` member m's own
    answer, ``fused[g]`` the fused answer (or None), ``candidates[g]``, ``tables[g] [N][C]`` sequence
    log-probability of candidate c under member m; ``encoded`` the members' prompts (row ``starts[g] + m``),
    reusable for more decodes; ``alternatives[g][m]`` member m's ``first_tokens - 1`` answers from its 2nd, 3rd, ...
    most likely first token (empty with ``first_tokens = 1``)."""

    gens: list[list[Generation]]
    fused: list[Generation | None]
    candidates: list[list[Candidate]]
    tables: list[list[list[float]]]
    encoded: EncodedPrompts
    starts: list[int]
    alternatives: list[list[list[Generation]]]


def rerank_pass(decoder, prompts, groups: list[Group], fused: str | None = None,
                known: list[dict[int, Generation]] | None = None, first_tokens: int = 1,
                demo_answers: bool = False) -> RerankPass:
    """Encode every member's prompt once, decode the members' answers (except ``known`` ones), with
    ``first_tokens > 1`` every member's alternative answers (one more batched decode) and the optional fused answer
    from it, and score every candidate (with ``demo_answers`` also the group's demonstrations' answers) under every
    member from the same encoding."""
    items, encoded, starts = encode_members(decoder, prompts, groups)
    gens = decode_members(decoder, encoded, items, starts, known)
    rows = member_rows(items, starts)
    alts = member_alternatives(decoder, encoded, rows, first_tokens)
    extra = [own[0] for own in fused_answers(decoder, encoded, rows, [fused])] if fused else [None] * len(groups)
    lemmas = Lemmas()
    tokens_of = partial(answer_continuation, decoder, prompts=prompts)  # as the members' prompts show an answer
    demos = [demo_candidates(g, tokens_of) if demo_answers else () for g in groups]
    cands = [candidates([x.prediction for x in own], [x.continuation for x in own], lemmas,
                        [] if fx is None or not fx.prediction else [(fx.prediction, fx.continuation)],
                        [[(x.prediction, x.continuation) for x in mine] for mine in alt], shown)
             for own, fx, alt, shown in zip(gens, extra, alts, demos)]
    tables = score_tables(decoder, encoded, rows, [[c.tokens for c in own] for own in cands])
    return RerankPass(gens, extra, cands, tables, encoded, starts, alts)

