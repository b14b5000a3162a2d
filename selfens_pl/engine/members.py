"""The member passes: a batch of groups' members encoded once, then answered, widened, scored and fused from that
one encoding.

A *member* of a group is one (paraphrase, few-shot block) pair (:func:`selfens_pl.data.demos.members`, block-major).
:func:`encode_members` prefills every member's prompt of every group as one row of an
:class:`~selfens_pl.engine.decode_batches.EncodedPrompts` (``u`` rows in all; member ``m`` of group ``g`` is row
``starts[g] + m``); every other pass here reads those rows without encoding a prompt again:

* :func:`decode_members`: each member's own greedy answer (per_prompt's answers, one batched decode);
* :func:`member_alternatives`: each member's answers from its 2nd .. k-th most likely first token;
* :func:`score_tables`: each candidate answer's sequence log-probability under each member (teacher forced, the
  prompts' KV caches copied); :func:`score_members` encodes and scores in one call (multiple choice's whole pass);
* :func:`fused_answers`: each group's answer under LogitFusion rules, fused over a chosen subset of its rows.

:class:`~selfens_pl.heads.rerank.RerankHead` runs them over a batch's groups, and the sweep's engine pass
(:mod:`selfens_pl.sweep.engine`) over every member of a fact and each ``(K, M)``'s members. The demonstrations'
answers a rescoring head adds as candidates (:func:`demo_candidates`) are tokenised here as a member would decode
them (:func:`answer_continuation`).

Shapes: ``g`` groups, ``N`` members of a group, ``C`` candidates of a group, ``u`` encoded rows, ``V`` the
vocabulary; ``[g][N]`` is a nested list, ``[u, V]`` a tensor.
"""

from __future__ import annotations

from functools import partial
from itertools import accumulate

import torch

from selfens_pl.data.group import Group
from selfens_pl.data.origin_share import resolve_share, weight_table
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.alternatives import decode_alternatives
from selfens_pl.engine.batches import member_items, prompt_batch
from selfens_pl.engine.decoding import EncodedPrompts, Generation, GreedyDecoder, no_fusion
from selfens_pl.engine.fusion import fuse_logits, split_rule_key
from selfens_pl.errors import InternalError

#: A member as the prompt builder takes it: ``(group, paraphrase text, few-shot block index)``.
MemberItem = tuple[Group, str, int]


def encode_members(decoder: GreedyDecoder, prompts: PromptTokenizer,
                   groups: list[Group]) -> tuple[list[list[MemberItem]], EncodedPrompts, list[int]]:
    """Every member's prompt of every group encoded once. Returns ``items [g][N]`` (the members,
    :func:`~selfens_pl.engine.batches.member_items`), ``encoded`` (``u = sum of N`` rows: ``logits [u, V]``, a KV
    cache of ``u`` rows) and ``starts [g]``: member m of group g is row ``starts[g] + m``."""
    items = [member_items(g) for g in groups]
    encoded = decoder.encode(prompt_batch(decoder, prompts, [it for own in items for it in own]))
    return items, encoded, list(accumulate((len(own) for own in items), initial=0))[:-1]


def member_rows(items: list[list[MemberItem]], starts: list[int]) -> list[list[int]]:
    """``rows [g][N]``: the encoded rows of group g's members (:func:`encode_members`)."""
    return [[start + m for m in range(len(own))] for own, start in zip(items, starts)]


def decode_members(decoder: GreedyDecoder, encoded: EncodedPrompts, items: list[list[MemberItem]],
                   starts: list[int], known: list[dict[int, Generation]] | None = None) -> list[list[Generation]]:
    """``[g][N]``: every member's greedy answer from ``encoded`` (row ``starts[g] + m`` is member ``m`` of group
    ``g``), except those in ``known[g]`` (``{member index: Generation}``, taken as they are); one batched decode."""
    todo = [(g, m) for g, own in enumerate(items) for m in range(len(own))
            if known is None or m not in known[g]]
    out: list[list[Generation | None]] = [[None] * len(own) for own in items]
    if known is not None:
        for g, got in enumerate(known):
            for m, gen in got.items():
                out[g][m] = gen
    if todo:
        rows = torch.tensor([starts[g] + m for g, m in todo], device=decoder.device)  # [len(todo)] encoded rows
        for (g, m), gen in zip(todo, decoder.decode_n_tokens(encoded.batch(rows), no_fusion, no_fusion)):
            out[g][m] = gen
    return out  # type: ignore[return-value]


def member_alternatives(decoder: GreedyDecoder, encoded: EncodedPrompts, rows: list[list[int]],
                        first_tokens: int) -> list[list[list[Generation]]]:
    """``[g][N][first_tokens - 1]``: the answer of group g's member m (row ``rows[g][m]`` of ``encoded``) from its
    rank-r first token, ``r = 1 .. first_tokens-1`` (:func:`~selfens_pl.engine.alternatives.decode_alternatives`:
    one batched decode for every group; nothing decoded with ``first_tokens = 1``)."""
    flat = decode_alternatives(decoder, encoded, [row for own in rows for row in own], first_tokens)
    starts = list(accumulate((len(own) for own in rows), initial=0))
    return [flat[start:start + len(own)] for own, start in zip(rows, starts)]


def score_tables(decoder: GreedyDecoder, encoded: EncodedPrompts, rows: list[list[int]],
                 continuations: list[list[list[int]]]) -> list[list[list[float]]]:
    """``tables [g][N][C]``: the sequence log-probability of each of group g's candidate continuations
    ``continuations[g][c]`` (token ids) under each of its members' prompts (rows ``rows[g][m]`` of ``encoded``), in
    one teacher-forced pass that copies the prompts' KV caches instead of encoding them again. A group without
    candidates gets an empty row per member."""
    todo = [(g, row) for g, own in enumerate(rows) if continuations[g] for row in own]
    scored = iter(decoder.score_continuations(encoded, [row for _, row in todo],
                                              [continuations[g] for g, _ in todo]) if todo else [])
    return [[[sum(lp) for lp in next(scored)] if continuations[g] else [] for _ in own]
            for g, own in enumerate(rows)]


def score_members(decoder: GreedyDecoder, prompts: PromptTokenizer, groups: list[Group],
                  continuations: list[list[list[int]]],
                  ) -> tuple[list[list[list[float]]], EncodedPrompts, list[list[int]]]:
    """Every member of every group encoded once (:func:`encode_members`), then each of group g's continuations
    ``continuations[g][c]`` scored under each of its members (:func:`score_tables`). Returns ``tables [g][N][C]``,
    ``encoded`` and ``rows [g][N]`` (its rows of each group's members), for any further pass from the same
    encoding (lm_eval's ``is_greedy`` decode)."""
    items, encoded, starts = encode_members(decoder, prompts, groups)
    rows = member_rows(items, starts)
    return score_tables(decoder, encoded, rows, continuations), encoded, rows


def group_valid(groups: list[Group] | list[int], n: int, device) -> torch.Tensor:
    """``[g, n]`` True for each group's real rows, False for its padding rows; ``groups``: the groups (sized by
    their paraphrases) or each group's row count."""
    sizes = torch.tensor([s if isinstance(s, int) else len(s["paraphrases"]) for s in groups], device=device)
    return torch.arange(n, device=device)[None, :] < sizes[:, None]


def fused_answers(decoder: GreedyDecoder, encoded: EncodedPrompts, rows: list[list[int]], rules: list[str],
                  shapes: list[tuple[int, int]] | None = None,
                  generated: list[bool] | None = None) -> list[list[Generation]]:
    """``[g][len(rules)]``: group g's answer under LogitFusion rule ``rules[h]``, fused over its members' rows
    ``rows[g]`` of ``encoded``. One batched decode per rule (one decode of every (group, rule) pair would fuse each
    pair by every rule: a cost in the square of the rules) of ``g x n`` rows, ``n`` the most rows of a group; a group
    with fewer rows is padded with its last row and masked (``valid [g, n]``). A rule may carry the original
    question's share (:func:`~selfens_pl.engine.fusion.rule_key`, ``avg@0.5``, or ``avg@auto``: each group's share
    from ``generated[g]``, whether its paraphrases were generated): its rows' weights ``[g, n]`` come from
    ``shapes[g]`` = (paraphrases, blocks) of group g's rows (block-major) and ride the decode as the rule's weights
    (none when no group weighs, the plain rule)."""
    n = max(len(own) for own in rows)
    sizes = [len(own) for own in rows]
    flat = torch.tensor([own[min(m, len(own) - 1)] for own in rows for m in range(n)], device=decoder.device)
    valid = group_valid(sizes, n, decoder.device) if any(size < n for size in sizes) else None
    out: list[list[Generation]] = [[] for _ in rows]
    for key in rules:
        rule, share = split_rule_key(key)
        batch = encoded.batch(flat, n)
        if valid is not None:
            batch.valid = batch.step_valid = valid
        if share is not None:
            if shapes is None or len(shapes) != len(rows) or generated is None or len(generated) != len(rows):
                raise InternalError(f"fused_answers: rule {key!r} weighs the original question; give each group's "
                                    "shape (paraphrases, blocks) and whether its paraphrases were generated")
            table = weight_table(shapes, [resolve_share(share, gen) for gen in generated], n)
            if table is not None:
                batch.weights = batch.step_weights = torch.tensor(table, dtype=torch.float32, device=decoder.device)
        fuse = partial(fuse_rule, rule)
        for own, gen in zip(out, decoder.decode_n_tokens(batch, fuse, fuse)):
            own.append(gen)
    return out


def fuse_rule(rule: str, logits: torch.Tensor, weights: torch.Tensor | None = None,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's ``fuse`` for one LogitFusion ``rule``: ``logits [g, n, V]`` -> ``[g, V]`` (``weights``,
    ``valid``: ``[g, n]`` or None)."""
    return fuse_logits(logits, rule, weights, valid)


# -- the demonstrations' answers as candidates -------------------------------------------------------------------
def demo_answers(group: Group) -> list[str]:
    """``[D]``: the answers of the demonstrations of ``group``'s extra few-shot blocks (block 1 first, each block in
    its order: with similar selection the most similar question first); none without extra blocks."""
    return [d["answer"] for block in group.get("blocks") or () for d in block]


def answer_continuation(decoder: GreedyDecoder, answer: str, prompts: PromptTokenizer | None = None) -> list[int]:
    """The tokens a member decodes to give ``answer`` after ``"A:"``: `` {answer}`` and the stop string (the
    tokenizer's own split of the text, as a demonstration shows it), or EOS when the decoder has no stop string.
    Under ``prompts``' chat template (:mod:`selfens_pl.data.prompts`) as its assistant turn shows it: ``{answer}``
    and the end-of-turn token (without one, the stop string or EOS as above)."""
    if prompts is not None and prompts.chat:
        ids = decoder.tokenizer.encode(answer.strip(), add_special_tokens=False)
        if prompts.end_of_turn is not None:
            return ids + [prompts.end_of_turn]
        return ids + (decoder.tokenizer.encode(decoder.stop, add_special_tokens=False) if decoder.stop is not None
                      else [min(decoder.eos_ids)])
    if decoder.stop is not None:
        return decoder.tokenizer.encode(f" {answer.strip()}{decoder.stop}", add_special_tokens=False)
    return decoder.tokenizer.encode(f" {answer.strip()}", add_special_tokens=False) + [min(decoder.eos_ids)]


def demo_candidates(group: Group, tokens_of) -> list[tuple[str, list[int]]]:
    """``[(prediction, tokens)]``: each distinct non-empty answer of ``group``'s demonstrations (:func:`demo_answers`)
    and ``tokens_of(prediction)`` (:func:`answer_continuation`; the sweep reads what its engine tokenised), in their
    order."""
    seen: dict[str, list[int]] = {}
    for answer in demo_answers(group):
        prediction = Generation(text=f" {answer}").prediction
        if prediction and prediction not in seen:
            seen[prediction] = list(tokens_of(prediction))
    return list(seen.items())
