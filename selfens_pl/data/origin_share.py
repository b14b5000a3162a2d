"""How much the original question weighs among a group's members: ``origin_share``.

A group's paraphrase 0 is the question as the user (or the dataset) asked it; the others are rewordings. With
hand-written paraphrases (MyriadLAMA's manual templates) every rewording is as good a question as the original, and
every member counts the same (``origin_share: None``: each rule exactly as it always was). With
paraphrases a small model generated (``python -m selfens_pl paraphrase``) each rewording alone is a worse question
than the original (measured on WebQuestions: studies/webqa_slices/), and a rule that weighs them like the original can fall below
asking the original alone. ``origin_share = s`` gives the original's members (paraphrase 0 with every few-shot
block) the share ``s`` of the group's total weight and splits ``1 - s`` evenly among the other members; ``0.5``:
the question as asked counts as much as all its rewordings together.

Weights are per member (block-major, :func:`selfens_pl.data.demos.members`) and have mean 1, so a group of ``n``
paraphrases x ``M`` blocks gives each of the original's ``M`` members ``s * n`` and each other member
``(1 - s) * n / (n - 1)``; ``s = 1 / n`` is every member equal. A group of one paraphrase has nothing to share:
its members are equal whatever ``s`` is (:func:`member_weights` returns ``None``, the unweighted rule).
The heads that take it (LogitFusion's avg / prob_avg / entropy_weighted, VoteHead, RerankHead's fixed rules) say
how a weight enters their rule.

Their default is ``"auto"``: a group whose paraphrases ``paraphrase`` generated (its record names its
``paraphraser``, as every record ``paraphrase`` writes does) gets :data:`GENERATED_SHARE`; a group of hand-written
paraphrases (MyriadLAMA's templates, a user's own file) keeps every member equal. The value, 0.9 (the question
as asked counts nine times all its rewordings together: they decide where the original's own members are unsure or
split, as between the answers of its few-shot blocks, and hardly overturn it alone), was chosen on two WebQuestions
train slices (questions 300-799 and 2300-2799) among 0.5 (the default before 2026-12-05), 0.6, 0.7, 0.8 and 0.9, as
the value whose worst rescoring rule without extra blocks fell least below the original alone, with the gains of
similar blocks at least kept; then judged on a slice nobody had looked at (2800-3299; studies/origin_share/). A head whose rule
cannot weigh its members (``max``, the ``weighted_*`` rules, calibration, a learned chooser, a fused candidate)
takes ``"auto"`` as every member equal; an explicit number there is refused. Every record of a head that takes
the flag says what its group got (``"origin_share"``, :func:`applied_share`): the share, or ``null`` for members
that weighed the same.
"""

from __future__ import annotations

from selfens_pl.errors import UserError


AUTO = "auto"
GENERATED_SHARE = 0.9  # chosen on two train slices, judged on a third (module docstring); 0.5 before 2026-12-05


def check_origin_share(share, flag: str = "--model.head.init_args.origin_share") -> float | str | None:
    """``share`` as a float in ``(0, 1)``, ``"auto"`` or ``None`` (every member equal); else one error naming
    ``flag``."""
    if share is None or share == AUTO:
        return share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < float(share) < 1.0:
        raise UserError(f"{flag}={share!r}: give the original question's share of a group's weight, a number "
                         "strictly between 0 and 1 (0.5: the original counts as much as all its paraphrases "
                         "together), \"auto\" (0.9 for generated paraphrases, else every member equal) or null "
                         "for every member equal")
    return float(share)


def is_generated(group: dict) -> bool:
    """Whether ``group``'s paraphrases were generated (its record names the ``paraphraser`` that wrote them)."""
    return bool(group.get("paraphraser"))


def resolve_share(share: float | str | None, generated: bool) -> float | None:
    """The share a group's original gets under the setting ``share``: ``"auto"`` is :data:`GENERATED_SHARE` for
    generated paraphrases and ``None`` (every member equal) for written ones; a number or ``None`` is itself."""
    if share == AUTO:
        return GENERATED_SHARE if generated else None
    return share


def group_share(group: dict, share: float | str | None) -> float | None:
    """:func:`resolve_share` for ``group``."""
    return resolve_share(share, is_generated(group))


def applied_share(group: dict, share: float | str | None) -> float | None:
    """The share ``group``'s original question got under the setting ``share`` (what its record says): ``None``
    when every member weighed the same (no share resolved, or one paraphrase: nothing to share)."""
    resolved = group_share(group, share)
    return resolved if resolved is not None and len(group["paraphrases"]) > 1 else None


def share_weights(paraphrases: int, blocks: int, share: float | None) -> list[float] | None:
    """``[paraphrases x blocks]`` member weights (block-major, mean 1) giving paraphrase 0's members ``share`` of
    the total; ``None`` (every member equal) without a share or with one paraphrase."""
    if share is None or paraphrases < 2:
        return None
    own, other = share * paraphrases, (1.0 - share) * paraphrases / (paraphrases - 1)
    return [own if p == 0 else other for _ in range(blocks) for p in range(paraphrases)]


def weight_table(shapes: list[tuple[int, int]], shares: list[float | None], n: int) -> list[list[float]] | None:
    """``[g][n]`` each group's member weights (:func:`share_weights` of its ``shapes[g]`` = (paraphrases, blocks)
    under its resolved ``shares[g]``; all 1 without one or for one paraphrase), then 1 for the padding rows up to
    ``n`` (a batch pads every group to its largest; padding is masked out). ``None`` when no group weighs its
    members (the rule then runs unweighted, exactly as without a share)."""
    own = [share_weights(*shape, share) for shape, share in zip(shapes, shares)]
    if all(weights is None for weights in own):
        return None
    return [(weights or [1.0] * (p * b)) + [1.0] * (n - p * b) for weights, (p, b) in zip(own, shapes)]


def group_shape(group: dict) -> tuple[int, int]:
    """``(paraphrases, blocks)`` of ``group``'s members."""
    return len(group["paraphrases"]), 1 + len(group.get("blocks") or ())


def member_weights(group: dict, share: float | str | None) -> list[float] | None:
    """:func:`share_weights` of ``group``'s members (its paraphrases x few-shot blocks) under the setting
    ``share``: the share its record says it got (:func:`applied_share`)."""
    return share_weights(*group_shape(group), applied_share(group, share))


def share_suffix(share: float | str | None, weighs: bool = True) -> str:
    """What a head's method name gets for its setting: ``""`` for ``"auto"`` (the default) and for a rule that
    weighs nothing (``weighs`` False), ``"_equal"`` for an explicit ``None`` (every member equal, also for generated
    paraphrases), ``"_origin0.5"`` for ``0.5``."""
    if share == AUTO or not weighs:
        return ""
    return "_equal" if share is None else f"_origin{share:g}"


def head_share(share, weighs: bool, refusal: str) -> float | str | None:
    """A head's checked setting: ``"auto"`` on a rule that cannot weigh is ``None`` (every member equal); a number
    there is refused with ``refusal`` (which names the flag and the rule)."""
    share = check_origin_share(share)
    if weighs:
        return share
    if share not in (None, AUTO):
        raise UserError(refusal)
    return None
