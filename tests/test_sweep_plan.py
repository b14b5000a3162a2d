"""The sweep's plans for the heads (:mod:`selfens_pl.sweep.plan`): what each head needs of the engine pass, kept by
the sweep rather than declared by the heads.

:data:`EXPECTED` is what the heads' capability attributes said before they moved here (``engine_rule``,
``derivable``, ``rescores``, ``cascades``, ``first_tokens``, ``demo_answers``, ``learns_from_facts``,
``one_member_is_origin``), head by head, so every sweep decision reads the same answer from the plan; the sweep's
tables are the same number for number (a sweep before and after the move compared equal but for timings).
"""

from __future__ import annotations

import pytest

from selfens_pl.errors import InternalError
from selfens_pl.heads import (CascadeHead, FlexFusion, FusionHead, LogitFusion, OriginHead, PerPromptHead, RerankHead,
                              VoteHead)
from selfens_pl.heads.cascade import one_record_per_group, reuses_known
from selfens_pl.heads.rerank import rescores_demo_answers
from selfens_pl.sweep.plan import EngineNeeds, HeadPlan, engine_needs, plan_for

EXPECTED = [
    (lambda: OriginHead(), HeadPlan("derived")),
    (lambda: OriginHead(agreement=True), HeadPlan("generic")),  # agreement: generate's extra per_prompt pass
    (lambda: PerPromptHead(), HeadPlan("generic")),
    (lambda: VoteHead(), HeadPlan("derived")),
    (lambda: VoteHead(0.5), HeadPlan("derived")),
    (lambda: LogitFusion("avg"), HeadPlan("rule", engine_rule="avg@auto", one_member_is_origin=True)),
    (lambda: LogitFusion("prob_avg", origin_share=0.5),
     HeadPlan("rule", engine_rule="prob_avg@0.5", one_member_is_origin=True)),
    (lambda: LogitFusion("entropy_weighted", origin_share=None),
     HeadPlan("rule", engine_rule="entropy_weighted", one_member_is_origin=True)),
    (lambda: LogitFusion("max"), HeadPlan("rule", engine_rule="max", one_member_is_origin=True)),
    (lambda: LogitFusion("weighted_avg"), HeadPlan("generic", one_member_is_origin=True)),
    (lambda: LogitFusion("avg", calibration="subject"), HeadPlan("generic")),
    (lambda: FlexFusion(), HeadPlan("generic", one_member_is_origin=True)),
    (lambda: FlexFusion(calibration="question"), HeadPlan("generic")),
    (lambda: RerankHead(), HeadPlan("derived", rescores=True)),
    (lambda: RerankHead("max", first_tokens=3), HeadPlan("derived", rescores=True, first_tokens=3)),
    (lambda: RerankHead(demo_answers=True), HeadPlan("derived", rescores=True, demo_answers=True)),
    (lambda: RerankHead("learned", first_tokens=2, demo_answers=True),
     HeadPlan("derived", rescores=True, first_tokens=2, demo_answers=True, cross_validated=True)),
    (lambda: RerankHead(fused="avg"), HeadPlan("generic", rescores=True)),
    (lambda: CascadeHead(), HeadPlan("derived", rescores=True, cascade=True)),
    (lambda: CascadeHead(ensemble=RerankHead("max", first_tokens=2)),
     HeadPlan("derived", rescores=True, cascade=True, first_tokens=2)),
    (lambda: CascadeHead(ensemble=VoteHead()), HeadPlan("derived", cascade=True)),
    (lambda: CascadeHead(ensemble=LogitFusion("avg"), first=1, confidence="mean_prob"),
     HeadPlan("generic", cascade=True)),
    (lambda: CascadeHead(ensemble=RerankHead(fused="avg")), HeadPlan("generic", rescores=True, cascade=True)),
]


@pytest.mark.parametrize("make,expected", EXPECTED, ids=[f"{i}" for i in range(len(EXPECTED))])
def test_each_head_is_planned_as_its_attributes_said(make, expected):
    head = make()
    assert plan_for(head) == expected, head.label


def test_a_plan_is_read_from_the_head_settings_not_fixed_per_class():
    head = RerankHead()
    assert plan_for(head).how == "derived"
    head.fused = "avg"  # the engine's rows hold no fused candidate
    assert plan_for(head).how == "generic"


def test_something_that_is_no_head_has_no_plan():
    with pytest.raises(InternalError, match="no FusionHead"):
        plan_for(object())


def test_the_engine_pass_computes_what_the_planned_heads_need():
    """Rules of the rule heads in order; rescoring for any derived head (a cascade escalating to a vote too); the
    most alternatives and the demonstrations' answers of the derived heads only (a generic head decodes its own)."""
    plans = [plan_for(h) for h in (LogitFusion("prob_avg"), LogitFusion("entropy_weighted"), VoteHead(),
                                    RerankHead("max", first_tokens=2), RerankHead(fused="avg", first_tokens=4),
                                    RerankHead(demo_answers=True), FlexFusion())]
    assert engine_needs(plans) == EngineNeeds(["prob_avg@auto", "entropy_weighted@auto"], True, 2, True)
    assert engine_needs([plan_for(LogitFusion("avg")), plan_for(FlexFusion())]) == EngineNeeds(["avg@auto"], False,
                                                                                               1, False)
    assert engine_needs([plan_for(CascadeHead(ensemble=VoteHead()))]) == EngineNeeds([], True, 1, False)
    assert engine_needs([]) == EngineNeeds([], False, 1, False)


def test_what_a_cascade_and_preflight_ask_of_a_head():
    """The capabilities that are not the sweep's: a cascade hands ``known`` to an ensemble whose ``generate`` takes
    it, wants one record per group, refuses an ensemble rescoring the demonstrations' answers (as predict's
    pre-flight refuses such a head without extra blocks)."""
    assert reuses_known(VoteHead()) and reuses_known(RerankHead()) and reuses_known(RerankHead(fused="avg"))
    assert not any(reuses_known(h) for h in (LogitFusion(), FlexFusion(), OriginHead(), PerPromptHead(),
                                             CascadeHead()))
    assert not one_record_per_group(PerPromptHead())
    assert all(one_record_per_group(h) for h in (VoteHead(), RerankHead(), LogitFusion(), OriginHead(), FlexFusion()))
    assert rescores_demo_answers(RerankHead(demo_answers=True))
    assert not any(rescores_demo_answers(h) for h in (RerankHead(), VoteHead(), CascadeHead(), LogitFusion()))


def test_the_head_contract_declares_no_sweep_flags():
    """A head is its decide, generate and training loss: the base class carries none of the sweep's knowledge."""
    for flag in ("derivable", "rescores", "cascades", "engine_rule", "learns_from_facts", "one_member_is_origin",
                 "reuses_known", "one_record_per_group", "first_tokens", "demo_answers"):
        assert not hasattr(FusionHead, flag), flag
