"""``ChoiceHead``: multiple choice by a self-ensemble: each option's log-likelihood under every member, fused.

A multiple-choice group (:mod:`selfens_pl.data.sources.choice`) carries ``options [O]`` and the ``gold`` index. Per
batch, the prompts of every member of every group (paraphrase x few-shot block, :mod:`selfens_pl.data.demos`) are
encoded ONCE, then every option of a group is scored under every one of its members' prompts in one teacher-forced
pass that copies the prompts' KV caches (:func:`~selfens_pl.engine.members.score_members`, the pass lm_eval's
``loglikelihood`` runs too, :mod:`selfens_pl.integrations.lm_eval`; as :class:`~selfens_pl.heads.rerank.RerankHead`
scores its candidates): ``s [N, O]`` sequence log-probabilities per group, batched across the batch's groups. A rule
(:mod:`selfens_pl.scoring.choice`) fuses them into one score per option; the highest wins. Nothing is decoded.

How an option continues the prompt: the prompt ends ``"...\\nA:"`` (the open-question format,
:mod:`selfens_pl.data.prompts`) and option ``o`` is scored as the tokens a member would decode to answer it: a leading
space, the option's text, then the stop string (``"\\n"``; EOS when the decoder has none),
:func:`~selfens_pl.engine.members.answer_continuation`, exactly as RerankHead scores open-question answers (with
``--data.chat_template model``: the option's text and the end-of-turn token, as the assistant turn shows an answer).
The stop token counts, so an option is scored as a *complete* answer (``Paris`` is not credited with the mass of
``Paris Saint-Germain``), and ``L_o`` (``mean_token``'s length) includes it. The options are not shown in the
prompt: each is scored as the answer to the question as asked (cloze-style).

``members: origin`` is the single-prompt control: paraphrase 0 with the template's few-shot block only, one member,
every option scored the same way; the ensemble is compared with it (``studies/multiple_choice/``). With one member
(K=1, M=1) every rule ranks the options as that member's log-likelihoods do (``mean_token``: per token), so
``members: all`` on a one-member group answers exactly as ``members: origin`` (tested).

``fuse: attention`` scores the options by attention-level fusion instead
(:meth:`~selfens_pl.heads.flex.FlexFusion.score_options`, FlexFusion's default layout: every member's full prompt in
ONE sequence, each positioned as if asked alone, isolated by the mask): an option's first token under the mean of the
members' next-token probabilities, its later tokens from the one sequence, attending to every member. One score per
option, so ``rule`` is ``mixture`` (that sequence log-likelihood) or ``mean_token`` (per token); ``member_scores``,
``member_choices`` and ``agreement`` are ``None`` (no member scores on its own). Cost per group: one prompt row of
every member's tokens and one scored row.

Cost per group of ``N`` members and ``O`` options: ``N`` prompt rows encoded once and ``N`` scored rows holding the
``O`` options packed (:meth:`~selfens_pl.engine.decoding.GreedyDecoder.score_continuations`); no decoded row.

Record (one per group): the base fields (``prediction`` = the chosen option's text, ``paraphrase_index`` 0 for
origin, else ``None``), plus ``options``, ``gold``, ``choice`` (the chosen index), ``option_scores [O]`` (fused),
``member_scores [N][O]``, ``option_lengths [O]`` (tokens scored), ``member_choices [N]`` (each member's own
argmax), ``correct`` (``choice == gold``; ``None`` without gold) and ``member_correct`` (some member's own choice is
right). ``agreement``: the share of
members whose own choice is the chosen one; ``mean_prob``: the chosen option's per-token geometric-mean
probability, averaged over the members.
"""

from __future__ import annotations

import math
from typing import Literal

from selfens_pl.data.demos import cut_blocks
from selfens_pl.data.group import Group
from selfens_pl.engine.decoding import Generation
from selfens_pl.engine.members import answer_continuation, score_members
from selfens_pl.errors import UserError
from selfens_pl.heads.base import FusionHead
from selfens_pl.heads.flex import FlexFusion
from selfens_pl.scoring.choice import ChoiceRule, check_choice_rule, choose, member_choices, score_choice

#: Which members score the options: every member of the group, or paraphrase 0 with the template's block only.
ChoiceMembers = Literal["all", "origin"]
#: How the members' judgements of an option combine: their own scores fused by ``rule``, or one fused sequence.
ChoiceFuse = Literal["scores", "attention"]
_ATTENTION_RULES = ("mixture", "mean_token")  #: one score per option: its sequence log-likelihood, or per token
#: The rules under which one member's choice is its own log-likelihood argmax (``mean_token`` is per token).
_SEQUENCE_RULES = ("mixture", "product", "max", "vote")


class ChoiceHead(FusionHead):
    """Every option of every group scored under every member's prompt (one batched pass); the best by ``rule``."""

    training_loss = None  # predict only: fit refuses it, naming --model.head

    def __init__(self, rule: ChoiceRule = "mixture", members: ChoiceMembers = "all", fuse: ChoiceFuse = "scores"):
        """
        Args:
            rule: How the members' option log-likelihoods combine (:mod:`selfens_pl.scoring.choice`): ``mixture``
                (log of their mean probability), ``product`` (their mean log-probability), ``max``, ``mean_token``
                (``product`` per token) or ``vote`` (most members' own choice, ties by ``mixture``).
            members: ``all`` (default): the self-ensemble over every member (paraphrases x few-shot blocks).
                ``origin``: the single-prompt control, paraphrase 0 with the template's few-shot block.
            fuse: ``scores`` (default): each member scores the options, ``rule`` fuses the scores. ``attention``:
                the options scored once on the members' fused sequence (FlexFusion's layout; module docstring).
        """
        super().__init__()
        self.rule = check_choice_rule(rule)
        if members not in ("all", "origin"):
            raise UserError(f"--model.head.init_args.members={members!r}: choose all (the self-ensemble) or origin "
                            "(paraphrase 0 with the standard block: the single-prompt control)")
        self.members = members
        if fuse not in ("scores", "attention"):
            raise UserError(f"--model.head.init_args.fuse={fuse!r}: choose scores (each member scores the options, "
                            "the rule fuses them) or attention (the options scored on the members' fused sequence)")
        if fuse == "attention" and self.rule not in _ATTENTION_RULES:
            raise UserError(f"--model.head.init_args.rule={rule!r}: with fuse=attention one fused sequence scores "
                            "each option: choose mixture (its log-likelihood) or mean_token (per token)")
        self.fuse = fuse
        # the default FlexFusion: concat layout, aligned positions, first token by the mean of the probabilities
        self.flex = FlexFusion() if fuse == "attention" else None

    @property
    def method(self) -> str:  # type: ignore[override]
        if self.members == "origin":  # one member: the sequence rules all pick its own argmax
            return "choice_origin" + ("" if self.rule in _SEQUENCE_RULES else f"_{self.rule}")
        if self.fuse == "attention":
            return "choice_attention" + ("" if self.rule == "mixture" else f"_{self.rule}")
        return f"choice_{self.rule}"

    def decoded_rows(self, members: int) -> int:
        return 0  # options are scored (teacher forced), never decoded

    def check_groups(self, groups: list[Group]) -> None:
        super().check_groups(groups)
        for group in groups:
            options = group.get("options")
            if not options or len(options) < 2:
                raise UserError(f"record {group.get('id')!r}: ChoiceHead needs at least 2 'options' (a multiple-"
                                f"choice file, --data.source choice), got {options!r}")

    def asked(self, group: Group) -> Group:
        """The group as this head asks it: whole, or (``members: origin``) paraphrase 0 with block 0 only."""
        if self.members == "all":
            return group
        return {**cut_blocks(group, 1), "paraphrases": group["paraphrases"][:1]}

    def generate(self, decoder, prompts, groups: list[Group]) -> list[dict]:
        self.check_groups(groups)
        asked = [self.asked(g) for g in groups]
        # [g][O] each option's token ids, as a member would answer it (under a chat template: its assistant turn)
        options = [[answer_continuation(decoder, o, prompts) for o in g["options"]] for g in groups]
        if self.flex is None:
            tables, _, _ = score_members(decoder, prompts, asked, options)  # [g][N][O]
        else:  # [g][1][O]: one fused sequence scores each option
            tables = [[[sum(lp) for lp in own]] for own in self.flex.score_options(decoder, prompts, asked, options)]
        return [self.pick(g, table, [len(tokens) for tokens in own])
                for g, table, own in zip(asked, tables, options)]

    def pick(self, group: Group, table: list[list[float]], lengths: list[int]) -> dict:
        """The record of ``group`` (as asked, :meth:`asked`) from ``table [N][O]``, its members' log-likelihoods
        of its options, and ``lengths [O]`` their token counts (module docstring)."""
        choice, fused = choose(table, lengths, self.rule)
        own = member_choices(table) if self.rule in _SEQUENCE_RULES else \
            member_choices([[s / length for s, length in zip(row, lengths)] for row in table])
        option = group["options"][choice]
        mean_prob = sum(math.exp(row[choice] / lengths[choice]) for row in table) / len(table)
        rec = self.record(group, Generation(text=f" {option}"), 0 if self.members == "origin" else None,
                          group["paraphrases"])
        # the option verbatim (a generation's prediction is its first line stripped), scored, not decoded
        rec.update({
            "prediction": option,
            "mean_prob": mean_prob,
            "agreement": own.count(choice) / len(own),
            "options": list(group["options"]),
            "gold": group.get("gold"),
            "choice": choice,
            "option_scores": fused,
            "member_scores": table,
            "option_lengths": lengths,
            "member_choices": own,
        })
        if self.flex is not None:  # no member scored on its own
            rec.update({"member_scores": None, "member_choices": None, "agreement": None})
        score_choice(rec)
        return rec
