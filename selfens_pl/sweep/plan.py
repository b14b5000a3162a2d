"""What the sweep needs to know of a head: how it is swept, and what the engine pass must compute for it.

A head is its decision (``decide``, where it has one), its ``generate`` and its training loss; how a sweep can reuse
one engine pass for it is the sweep's knowledge, kept here and asked through one function, :func:`plan_for`, which
returns a :class:`HeadPlan`. The sweep computes a head one of three ways (:attr:`HeadPlan.how`):

* ``rule``: a LogitFusion rule the engine pass decodes itself at every ``(K, M)`` with ``K x M >= 2``
  (:attr:`HeadPlan.engine_rule`; the head's record is built around the engine's fused answer);
* ``derived``: the head's own ``decide`` over the engine pass's member answers (and, for a rescoring head, its
  candidates' scores, the members' alternative answers, the demonstrations' answers), without decoding: the same
  decision its ``generate`` takes over the answers it decodes (:mod:`selfens_pl.sweep.derive`);
* ``generic``: the head's own ``generate`` on every group at every ``(K, M)`` (:meth:`selfens_pl.sweep.runner.Sweep.
  generic`): right for any head by definition, only slower.

The plans live in :data:`PLANS`, a table from head class to a function of the head (its settings decide, e.g. a
RerankHead with a fused candidate is generic). :func:`plan_for` looks a head's classes up in method resolution order,
so a subclass is swept as its nearest listed base (a ``RerankHead`` subclass is derived through its own ``decide``);
a subclass that answers otherwise than its base's way of sweeping (say a ``VoteHead`` that decodes its own way)
says so with :func:`register`. ``FusionHead`` itself is listed as ``generic``, so a head of a class nobody listed
runs through its own ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from selfens_pl.engine.fusion import WEIGHTED, rule_key
from selfens_pl.errors import InternalError
from selfens_pl.heads import (CascadeHead, FlexFusion, FusionHead, LogitFusion, NearestAnswerHead, OriginHead,
                              PerPromptHead, RerankHead, SelfConsistencyHead, SimilarPromptHead, VoteHead)

How = Literal["rule", "derived", "generic"]


@dataclass(frozen=True)
class HeadPlan:
    """How the sweep computes one head and what its engine pass must hold for it.

    Attributes:
        how: ``rule``, ``derived`` or ``generic`` (module docstring).
        engine_rule: The LogitFusion rule key the engine decodes for a ``rule`` head (``avg``, ``avg@0.5``,
            ``avg@auto``: :func:`~selfens_pl.engine.fusion.rule_key`), else None.
        rescores: ``decide`` reads the candidates' scores under every member (``scores``): the run states the
            continuation tokens scored and its candidate oracle.
        cascade: ``decide`` keeps a cheap answer or escalates by a confidence threshold: the sweep derives it
            through :meth:`~selfens_pl.heads.cascade.CascadeHead.outcomes` and also draws its curve over thresholds.
        first_tokens: Answers per member ``decide`` rescores: 1 the greedy one; above 1 also those starting with the
            member's 2nd .. ``first_tokens``-th most likely first token, which the engine decodes and ``decide``
            takes as ``alternatives`` (a RerankHead's ``first_tokens``, a cascade's ensemble's).
        demo_answers: ``decide`` also rescores the answers of the demonstrations the group was asked with, which
            the engine tokenises and scores and ``decide`` takes as ``demos`` (``RerankHead(demo_answers=True)``).
        cross_validated: The head needs facts with known answers to fit on before it can answer (``RerankHead(
            rule="learned")`` without a chooser file): the sweep fits it on its own facts, cross-validated by fold.
        one_member_is_origin: With one member the head answers exactly as origin: a ``generic`` head is not run at
            ``K x M = 1`` (an uncalibrated LogitFusion or FlexFusion fuses one member to itself).
        control: A built-in control (:mod:`selfens_pl.heads.controls`): every method's gain over the strongest
            control is reported (:func:`selfens_pl.sweep.report.gains`).
        engine_free: ``decide`` reads at most the members' greedy answers: a derived head that adds nothing to the
            engine pass (no rescoring tables), so adding it leaves the pass and its ``facts.jsonl`` as they were.
        min_blocks: The head needs at least this many few-shot blocks: it is not run at a smaller ``M``.
        ignores_k: The head's answers do not depend on ``K`` (it asks paraphrase 0 only, a fixed number of
            times): run once per ``M``, at the smallest ``K``.
        asks: The members ``(paraphrase, block)`` whose prompts a derived head encodes (its prompt tokens); ``None``:
            every member of the configuration.
    """

    how: How
    engine_rule: str | None = None
    rescores: bool = False
    cascade: bool = False
    first_tokens: int = 1
    demo_answers: bool = False
    cross_validated: bool = False
    one_member_is_origin: bool = False
    control: bool = False
    engine_free: bool = False
    min_blocks: int = 1
    ignores_k: bool = False
    asks: tuple[tuple[int, int], ...] | None = None

    def runs_at(self, k: int, m: int, smallest_k: int) -> bool:
        """Whether the sweep runs the head at ``(k, m)`` (``smallest_k``: the grid's smallest K)."""
        return m >= self.min_blocks and (not self.ignores_k or k == smallest_k)


def _generic(head: FusionHead) -> HeadPlan:
    return HeadPlan("generic")


def _origin(head: OriginHead) -> HeadPlan:
    # agreement needs every member's answer: generate's extra per_prompt pass
    return HeadPlan("generic" if head.agreement else "derived")


def _vote(head: VoteHead) -> HeadPlan:
    return HeadPlan("derived")


def _logit(head: LogitFusion) -> HeadPlan:
    # the engine decodes an uncalibrated rule without sampled confidences itself: it needs nothing per group but the
    # original's share (avg@0.5 with origin_share 0.5, avg@auto with the default: each group's share resolved there)
    uncalibrated = head.calibration == "none"  # one member then fuses to itself (tests/test_ragged.py)
    if head.fusion in WEIGHTED or not uncalibrated:
        return HeadPlan("generic", one_member_is_origin=uncalibrated)
    return HeadPlan("rule", engine_rule=rule_key(head.fusion, head.origin_share), one_member_is_origin=True)


def _flex(head: FlexFusion) -> HeadPlan:
    return HeadPlan("generic", one_member_is_origin=head.calibration == "none")


def _rerank(head: RerankHead) -> HeadPlan:
    # a fused candidate is decoded by its own rule over the group's members: the engine's rows do not hold it
    return HeadPlan("derived" if head.fused is None else "generic", rescores=True, first_tokens=head.first_tokens,
                    demo_answers=head.demo_answers, cross_validated=head.learns_from_facts)


def _cascade(head: CascadeHead) -> HeadPlan:
    # derived exactly when its ensemble is: decide() passes the ensemble's scores and alternatives on
    ensemble = plan_for(head.ensemble)
    return HeadPlan("derived" if ensemble.how == "derived" else "generic", rescores=ensemble.rescores, cascade=True,
                    first_tokens=ensemble.first_tokens)


def _similar_prompt(head: SimilarPromptHead) -> HeadPlan:
    # nearest is the engine's member (paraphrase 0, block 1); all asks a prompt no member asks: its own generate
    if head.prompt == "nearest":
        return HeadPlan("derived", control=True, engine_free=True, min_blocks=2, ignores_k=True, asks=((0, 1),))
    return HeadPlan("generic", control=True, min_blocks=2, ignores_k=True)


def _nearest_answer(head: NearestAnswerHead) -> HeadPlan:
    # no model: the answers of the demonstrations of blocks < M, whatever K
    return HeadPlan("derived", control=True, engine_free=True, min_blocks=2, ignores_k=True, asks=())


def _self_consistency(head: SelfConsistencyHead) -> HeadPlan:
    # samples: its own generate (sampling is no member's greedy answer); a fixed N asks the same prompt at every K
    return HeadPlan("generic", control=True, ignores_k=head.samples != "members")


#: Head class -> its plan, as a function of the head. Looked up in method resolution order (:func:`plan_for`).
PLANS: dict[type, Callable[[FusionHead], HeadPlan]] = {
    FusionHead: _generic,
    OriginHead: _origin,
    PerPromptHead: _generic,
    VoteHead: _vote,
    LogitFusion: _logit,
    FlexFusion: _flex,
    RerankHead: _rerank,
    CascadeHead: _cascade,
    SimilarPromptHead: _similar_prompt,
    NearestAnswerHead: _nearest_answer,
    SelfConsistencyHead: _self_consistency,
}


def register(cls: type, plan: Callable[[FusionHead], HeadPlan]) -> None:
    """Sweep heads of class ``cls`` (and its subclasses that name no plan of their own) by ``plan(head)``."""
    PLANS[cls] = plan


def plan_for(head: FusionHead) -> HeadPlan:
    """How the sweep computes ``head``: the plan of its nearest class in :data:`PLANS`."""
    for cls in type(head).__mro__:
        if cls in PLANS:
            return PLANS[cls](head)
    raise InternalError(f"{type(head).__name__} is no FusionHead: the sweep sweeps fusion heads only")


@dataclass(frozen=True)
class EngineNeeds:
    """What one engine pass must compute for a sweep's heads (:meth:`selfens_pl.sweep.runner.Sweep.engine`): the
    LogitFusion ``rules`` it decodes, whether it rescores every fact's answers (any derived head: the
    rescoring tables are one pass over answers already decoded; an ``engine_free`` control adds nothing), the most ``first_tokens`` a derived head rescores
    and whether one rescores the ``demo_answers``."""

    rules: list[str]
    rescore: bool
    first_tokens: int
    demo_answers: bool


def engine_needs(plans: list[HeadPlan]) -> EngineNeeds:
    """The :class:`EngineNeeds` of heads with these plans."""
    derived = [p for p in plans if p.how == "derived" and not p.engine_free]
    return EngineNeeds(rules=[p.engine_rule for p in plans if p.how == "rule"], rescore=bool(derived),
                       first_tokens=max((p.first_tokens for p in derived), default=1),
                       demo_answers=any(p.demo_answers for p in derived))
