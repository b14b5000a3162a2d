"""Multiple choice: every member's log-likelihood of each option fused into one score per option.

A multiple-choice group has ``O`` options; each member (paraphrase x few-shot block, :mod:`selfens_pl.data.demos`)
scores every option's tokens after its own prompt: ``s[m, o] = log P_m(o)``, the sequence log-probability of ``L_o``
tokens. A rule turns ``s [N, O]`` into one score per option and the best option wins (ties: the lowest index):

* ``mixture``: ``log (1/N sum_m P_m(o))``: the mean of the members' probabilities (one member that finds ``o``
  unlikely does not veto it);
* ``product``: ``1/N sum_m log P_m(o)``: the mean of their log-probabilities (a product of experts; the mean, not
  the sum, so scores of groups with different ``N`` compare);
* ``max``: ``max_m log P_m(o)``: the option some member is surest of;
* ``mean_token``: ``1/N sum_m log P_m(o) / L_o``: ``product`` per token (length-normalised, so longer options are not
  penalised for their length; lm-evaluation-harness's ``acc_norm`` normalises by characters instead);
* ``vote``: the option most members pick on their own (each member's argmax), ties broken by ``mixture``.

With one member every rule ranks the options as that member's own log-likelihoods do (``mean_token`` as they do per
token): the single-prompt ("origin") choice. Pure Python on the scores, like :mod:`selfens_pl.scoring.rescoring`,
whose :func:`~selfens_pl.scoring.rescoring.combine` computes the rules both share;
:class:`~selfens_pl.heads.choice.ChoiceHead` computes the scores in one batched pass.
"""

from __future__ import annotations

from typing import Literal

from selfens_pl.errors import InternalError
from selfens_pl.scoring.rescoring import RERANK_RULES, best, check_rule, combine

ChoiceRule = Literal["mixture", "product", "max", "mean_token", "vote"]
#: The rescoring rules, applied to options instead of candidate answers (the same :func:`combine`).
CHOICE_RULES: tuple[str, ...] = RERANK_RULES


def check_choice_rule(rule: str, flag: str = "--model.head.init_args.rule") -> str:
    """``rule`` if it is one of :data:`CHOICE_RULES`, else a UserError naming ``flag`` (the rescoring rules' check)."""
    return check_rule(rule, flag)


def member_choices(scores: list[list[float]]) -> list[int]:
    """``[N]``: each member's own choice, the argmax of its row of ``scores [N][O]`` (lowest index on ties)."""
    return [best(row) for row in scores]


def fuse_option_scores(scores: list[list[float]], lengths: list[int], rule: str) -> list[float]:
    """``scores [N][O]`` (member m's log-probability of option o's tokens), ``lengths [O]`` (option o's token count,
    >= 1) -> ``[O]`` one fused score per option under ``rule`` (module docstring); the highest wins."""
    check_choice_rule(rule, "rule")
    n = len(scores)
    if n == 0 or any(len(row) != len(lengths) for row in scores) or any(length < 1 for length in lengths):
        raise InternalError(f"fuse_option_scores needs one score per member and option and positive lengths "
                            f"({n} members, rows of {[len(row) for row in scores]}, lengths {lengths})")
    if rule == "product":
        return [s / n for s in combine(scores, lengths, "product")]
    if rule == "vote":
        picks = member_choices(scores)
        return combine(scores, lengths, "vote", support=[picks.count(o) for o in range(len(lengths))])
    return combine(scores, lengths, rule)


def choose(scores: list[list[float]], lengths: list[int], rule: str) -> tuple[int, list[float]]:
    """``(index of the chosen option, fused scores [O])`` (:func:`fuse_option_scores`, lowest index on ties)."""
    fused = fuse_option_scores(scores, lengths, rule)
    return best(fused), fused


def score_choice(rec: dict) -> bool | None:
    """Score a multiple-choice record (one with ``choice``, :class:`~selfens_pl.heads.choice.ChoiceHead`) by index:
    ``correct`` = ``choice == gold`` and ``member_correct`` = some member's own choice (``member_choices``) is the
    gold one; both ``None`` without a gold index. Returns ``correct``."""
    gold = rec.get("gold")
    rec["correct"] = None if gold is None else rec["choice"] == gold
    rec["member_correct"] = None if gold is None else gold in (rec.get("member_choices") or ())
    return rec["correct"]
