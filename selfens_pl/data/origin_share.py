"""How much the original question weighs among a group's members: ``origin_share``.

A group's paraphrase 0 is the question as the user (or the dataset) asked it; the others are rewordings. With
hand-written paraphrases (MyriadLAMA's manual templates) every rewording is as good a question as the original, and
every member counts the same (``origin_share: None``, the default: each rule exactly as it always was). With
paraphrases a small model generated (``python -m selfens_pl paraphrase``) each rewording alone is a worse question
than the original (measured on WebQuestions, README), and a rule that weighs them like the original can fall below
asking the original alone. ``origin_share = s`` gives the original's members (paraphrase 0 with every few-shot
block) the share ``s`` of the group's total weight and splits ``1 - s`` evenly among the other members; ``0.5``:
the question as asked counts as much as all its rewordings together.

Weights are per member (block-major, :func:`selfens_pl.data.demos.members`) and have mean 1, so a group of ``n``
paraphrases x ``M`` blocks gives each of the original's ``M`` members ``s * n`` and each other member
``(1 - s) * n / (n - 1)``; ``s = 1 / n`` is every member equal. A group of one paraphrase has nothing to share:
its members are equal whatever ``s`` is (:func:`member_weights` returns ``None``, the unweighted rule).
The heads that take it (LogitFusion's avg / prob_avg / entropy_weighted, VoteHead, RerankHead's fixed rules) say
how a weight enters their rule.
"""

from __future__ import annotations

from selfens_pl.errors import UserError


def check_origin_share(share, flag: str = "--model.head.init_args.origin_share") -> float | None:
    """``share`` as a float in ``(0, 1)``, or ``None`` (every member equal); else one error naming ``flag``."""
    if share is None:
        return None
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < float(share) < 1.0:
        raise UserError(f"{flag}={share!r}: give the original question's share of a group's weight, a number "
                         "strictly between 0 and 1 (0.5: the original counts as much as all its paraphrases "
                         "together), or null for every member equal")
    return float(share)


def share_weights(paraphrases: int, blocks: int, share: float | None) -> list[float] | None:
    """``[paraphrases x blocks]`` member weights (block-major, mean 1) giving paraphrase 0's members ``share`` of
    the total; ``None`` (every member equal) without a share or with one paraphrase."""
    if share is None or paraphrases < 2:
        return None
    own, other = share * paraphrases, (1.0 - share) * paraphrases / (paraphrases - 1)
    return [own if p == 0 else other for _ in range(blocks) for p in range(paraphrases)]


def padded_weights(paraphrases: int, blocks: int, share: float, n: int) -> list[float]:
    """``[n]`` the weights of a group's ``paraphrases x blocks`` members for ``share`` (all 1 for one paraphrase),
    then 1 for the padding rows up to ``n`` (a batch pads every group to its largest; padding is masked out)."""
    own = share_weights(paraphrases, blocks, share) or [1.0] * (paraphrases * blocks)
    return own + [1.0] * (n - len(own))


def group_shape(group: dict) -> tuple[int, int]:
    """``(paraphrases, blocks)`` of ``group``'s members."""
    return len(group["paraphrases"]), 1 + len(group.get("blocks") or ())


def member_weights(group: dict, share: float | None) -> list[float] | None:
    """:func:`share_weights` of ``group``'s members (its paraphrases x few-shot blocks)."""
    return share_weights(*group_shape(group), share)


def share_suffix(share: float | None) -> str:
    """What a head's method name gets for its share: ``""`` without one, ``"_origin0.5"`` with ``0.5``."""
    return "" if share is None else f"_origin{share:g}"
