"""Answer-level rescoring: the members' own answers are the candidates, every member's prompt scores every one.

Token-level rules fuse next-token distributions greedily, one token at a time; they never compare whole answers.
Here each member (paraphrase x few-shot block, :mod:`selfens_pl.data.demos`) first answers on its own (greedy, as
per_prompt); the distinct non-empty answers are the *candidates*; then every candidate's tokens, through its end
(the stop string's token, or EOS), are scored under every member's prompt: ``s[m, c] = log P_m(c)``, the sequence
log-probability, with ``L_c`` tokens. Wider candidates (``RerankHead(first_tokens=k)``): each member's answers
from its 2nd .. k-th most likely first token (continued greedily) join them, after the greedy answers (``rank``).
Demonstration answers (``RerankHead(demo_answers=True)``): the answers of the demonstrations the group was asked with
(its extra few-shot blocks) join them last, as answers no member decoded (member :data:`DEMO_MEMBER`): with similar
blocks the nearest train questions' answers, which the members' scores can confirm or not. A rule turns
``s [N, C]`` into one score per candidate and the best wins (ties: the candidate that comes first: the lowest
member's greedy answer, then the alternatives):

* ``mixture``: ``log (1/N sum_m P_m(c))``: the candidate the members' sequence distributions give the most mass on
  average (a mixture: one member that finds ``c`` unlikely does not veto it);
* ``product``: ``sum_m log P_m(c)``: a product of experts over whole answers;
* ``max``: ``max_m log P_m(c)``: the candidate some member is surest of;
* ``mean_token``: ``1/N sum_m log P_m(c) / L_c``: the product of per-token geometric means (length-normalised, so
  longer answers are not penalised for their length);
* ``vote``: the most members' answers agree with ``c`` (the lemma rule of :mod:`selfens_pl.scoring.agreement`), ties broken
  by ``mixture``.

Everything here is pure Python on the scores; :class:`~selfens_pl.heads.rerank.RerankHead` computes them in one
batched pass that reuses the members' prompt KV caches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from selfens_pl.errors import InternalError, UserError
from selfens_pl.scoring.agreement import Lemmas

RerankRule = Literal["mixture", "product", "max", "mean_token", "vote"]
RERANK_RULES: tuple[str, ...] = ("mixture", "product", "max", "mean_token", "vote")
#: The member index of a candidate that is a demonstration's answer (no member decoded it); ``-1`` is an extra
#: decoded answer (the fused one).
DEMO_MEMBER = -2


def check_rule(rule: str, flag: str = "--model.head.init_args.rule") -> str:
    if rule not in RERANK_RULES:
        raise UserError(f"{flag}={rule!r}: choose one of {', '.join(RERANK_RULES)}")
    return rule


@dataclass
class Candidate:
    """A distinct answer: its text, the tokens scored (``Generation.continuation`` of the first answer that gave
    it), the member that gave it (``-1``: an extra answer, e.g. the fused one; :data:`DEMO_MEMBER`: a
    demonstration's answer), which of that member's answers it is
    (``rank`` 0: its greedy answer; ``r``: the answer starting with its rank-``r`` first token,
    :mod:`selfens_pl.engine.alternatives`) and how many of the members' greedy answers agree with it."""

    prediction: str
    tokens: list[int]
    member: int
    support: int = 0
    rank: int = 0


def candidates(predictions: list[str], continuations: list[list[int]], lemmas: Lemmas | None = None,
               extra: list[tuple[str, list[int]]] = (),
               alternatives: list[list[tuple[str, list[int]]]] = (),
               demos: list[tuple[str, list[int]]] = ()) -> list[Candidate]:
    """The distinct non-empty answers among ``predictions`` (the members' greedy answers, member order; the first
    member giving an answer owns it), then the members' ``alternatives`` ``[member][rank-1] (prediction, tokens)``
    (member-major, rank order; ``rank`` r), then ``extra`` answers ``(prediction, tokens)`` (member index ``-1``:
    e.g. a fused answer), then ``demos`` ``(prediction, tokens)``: demonstrations' answers (member
    :data:`DEMO_MEMBER`), each only when not already there. ``support``: how many of ``predictions`` (greedy
    answers only) agree with each (:class:`~selfens_pl.scoring.agreement.Lemmas`)."""
    if alternatives and len(alternatives) != len(predictions):
        raise InternalError(f"candidates: {len(alternatives)} members' alternatives for {len(predictions)} members")
    lemmas = lemmas or Lemmas()
    seen: dict[str, Candidate] = {}
    pairs = [(p, c, i, 0) for i, (p, c) in enumerate(zip(predictions, continuations))]
    pairs += [(p, c, m, r) for m, own in enumerate(alternatives) for r, (p, c) in enumerate(own, start=1)]
    pairs += [(p, c, -1, 0) for p, c in extra]
    pairs += [(p, c, DEMO_MEMBER, 0) for p, c in demos]
    for prediction, tokens, member, rank in pairs:
        if prediction and tokens and prediction not in seen:
            seen[prediction] = Candidate(prediction, list(tokens), member, rank=rank)
    out = list(seen.values())
    for cand in out:
        cand.support = sum(lemmas.agree(cand.prediction, p) for p in predictions)
    return out


def combine(scores: list[list[float]], lengths: list[int], rule: str, support: list[float] | None = None,
            weights: list[float] | None = None) -> list[float]:
    """``scores [N][C]`` sequence log-probabilities (member m, candidate c), ``lengths [C]`` -> one score per
    candidate under ``rule`` (module docstring). ``vote`` returns ``support * BIG + mixture`` so support ranks
    first; it needs ``support``. ``weights [N]`` (mean 1; the original question's share,
    :mod:`selfens_pl.data.origin_share`): member m counts ``weights[m]`` times (:func:`weighted_combine`)."""
    check_rule(rule)
    n = len(scores)
    if n == 0 or any(len(row) != len(lengths) for row in scores):
        raise InternalError("combine needs one score per member and candidate")
    if weights is not None:
        return weighted_combine(scores, lengths, rule, support, weights)
    out = []
    for c, length in enumerate(lengths):
        column = [scores[m][c] for m in range(n)]
        if rule == "product":
            out.append(sum(column))
        elif rule == "max":
            out.append(max(column))
        elif rule == "mean_token":
            out.append(sum(column) / n / length)
        else:
            top = max(column)
            mixture = top + math.log(sum(math.exp(s - top) for s in column) / n)
            if rule == "vote":
                if support is None:
                    raise InternalError("rule 'vote' needs each candidate's support")
                mixture += 1e6 * support[c]  # log-probabilities are far above -1e6 per support step
            out.append(mixture)
    return out


def weighted_combine(scores: list[list[float]], lengths: list[int], rule: str, support: list[float] | None,
                     weights: list[float]) -> list[float]:
    """:func:`combine` with member m counting ``weights[m]`` (mean 1): ``mixture`` ``log sum_m w_m P_m(c) / N``,
    ``product`` ``sum_m w_m log P_m(c)``, ``mean_token`` that over ``N L_c``, ``max`` ``max_m log(w_m P_m(c))``
    (a member's probability scaled by its weight), ``vote`` the weighted ``support`` first, then the weighted
    mixture. Equal weights give :func:`combine`'s ranking."""
    n = len(scores)
    if len(weights) != n or min(weights) <= 0:
        raise InternalError(f"weighted_combine needs one positive weight per member ({len(weights)} for {n})")
    logw = [math.log(w) for w in weights]
    out = []
    for c, length in enumerate(lengths):
        column = [scores[m][c] for m in range(n)]
        if rule == "product":
            out.append(sum(w * s for w, s in zip(weights, column)))
        elif rule == "max":
            out.append(max(lw + s for lw, s in zip(logw, column)))
        elif rule == "mean_token":
            out.append(sum(w * s for w, s in zip(weights, column)) / n / length)
        else:
            shifted = [lw + s for lw, s in zip(logw, column)]
            top = max(shifted)
            mixture = top + math.log(sum(math.exp(s - top) for s in shifted) / n)
            if rule == "vote":
                if support is None:
                    raise InternalError("rule 'vote' needs each candidate's support")
                mixture += 1e6 * support[c]
            out.append(mixture)
    return out


def best(scores: list[float]) -> int:
    """Index of the highest score; the lowest index on ties (candidates come in member order)."""
    return max(range(len(scores)), key=lambda c: (scores[c], -c))
