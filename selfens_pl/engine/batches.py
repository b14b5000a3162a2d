"""Batches of prompts for the decoder: rows of independent prompts (left-padded, positions from each row's start,
shared prefixes encoded once), the members of a group as rows, the context-window check, and per_prompt's decoding
of every member on its own.

A *member* of a group is one (paraphrase, few-shot block) pair (:func:`selfens_pl.data.demos.members`).
"""

from __future__ import annotations

import torch

from selfens_pl.data.demos import members
from selfens_pl.data.group import Group
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.decoding import Generation, GreedyDecoder, PrefillBatch, left_pad, pad_token_id
from selfens_pl.engine.fusion import no_fusion
from selfens_pl.errors import UserError


def paraphrase_generations(decoder: GreedyDecoder, prompts: PromptTokenizer, groups: list[Group],
                           known: list[dict[int, Generation]] | None = None) -> list[list[Generation]]:
    """Every member (paraphrase x few-shot block, :func:`selfens_pl.data.demos.members`) of every group answered on its
    own, all as independent rows of one batch (per_prompt's decoding). Returns, per group, one Generation per member
    (block-major: without extra blocks, one per paraphrase). ``known[g]``: members of group ``g`` already answered
    (``{member index: Generation}``, e.g. by a cascade's first stage): taken as they are, not decoded again."""
    out: list[list[Generation | None]] = []
    owners = []
    for gi, g in enumerate(groups):
        items = member_items(g)
        got = known[gi] if known is not None else {}
        out.append([got.get(m) for m in range(len(items))])
        owners += [(gi, m, item) for m, item in enumerate(items) if m not in got]
    if owners:
        gens = decoder.decode_n_tokens(prompt_batch(decoder, prompts, [item for _, _, item in owners]), no_fusion,
                                       no_fusion)
        for (gi, m, _), gen in zip(owners, gens):
            out[gi][m] = gen
    return out  # type: ignore[return-value]


def check_context(decoder: GreedyDecoder, length: int, record_id, what: str = "prompt") -> None:
    """Raise when ``length`` prompt tokens plus the answer do not fit the model's context window."""
    limit = decoder.context_length
    if limit is not None and length + decoder.max_new_tokens > limit:
        raise UserError(
            f"record {record_id!r}: {what} of {length} tokens + --model.max_new_tokens={decoder.max_new_tokens} "
            f"exceeds the model's context window of {limit} tokens"
        )


def rows_batch(decoder: GreedyDecoder, rows: list[list[int]], rows_per_group: int = 1,
               prefix: list[int] | list[list[int]] | None = None,
               prefix_of_row: list[int] | None = None) -> PrefillBatch:
    """A batch of independent prompts (one row each), left-padded, positions counted from each row's start.

    With ``prefix``, ``rows`` are what follows the shared prefix: the prefix is encoded once and its KV cache
    shared, and each row's tokens are positioned right after it (pads sit between prefix and row, masked). With
    several prefixes (``prefix`` a list of token lists, ``prefix_of_row [r]`` the one each row continues), each
    prefix is encoded once and shared by its rows (few-shot blocks, :mod:`selfens_pl.data.demos`).
    """
    input_ids, pad_mask = left_pad(rows, pad_token_id(decoder.tokenizer), decoder.device)
    s = input_ids.shape[1]
    several = prefix_of_row is not None
    if several:
        prefix_ids, prefix_mask = left_pad(prefix, pad_token_id(decoder.tokenizer), decoder.device)
        prefix_rows = torch.tensor(prefix_of_row, dtype=torch.long, device=decoder.device)
        offset = prefix_mask.sum(-1)[prefix_rows]  # [r] each row's own prefix length
    else:
        offset = len(prefix) if prefix else 0
    position_ids = (pad_mask.cumsum(-1) - 1).clamp(min=0) + (offset[:, None] if several else offset)
    batch = PrefillBatch(
        input_ids=input_ids,
        pad_mask=pad_mask,
        position_ids=position_ids,
        next_position=pad_mask.sum(-1) + offset,
        gather=torch.full((len(rows), 1), s - 1, dtype=torch.long, device=decoder.device),
        rows_per_group=rows_per_group,
    )
    if several:
        batch.prefix_ids, batch.prefix_mask, batch.prefix_rows = prefix_ids, prefix_mask, prefix_rows
        batch.pad_mask = torch.cat([prefix_mask[prefix_rows], pad_mask], dim=1)
    elif prefix:
        batch.prefix_ids = torch.tensor(prefix, dtype=torch.long, device=decoder.device)
        batch.pad_mask = torch.cat([pad_mask.new_ones(len(rows), len(prefix)), pad_mask], dim=1)
    return batch


def stop_at_end_of_turn(decoder: GreedyDecoder, prompts: PromptTokenizer) -> None:
    """Under a chat template an answer ends with the template's end-of-turn token (``<|im_end|>``, ``<|eot_id|>``):
    make it one of the tokens the decoder stops at (not kept in the answer, as EOS), if the model's EOS ids lack it."""
    if prompts.end_of_turn is not None:
        decoder.eos_ids.add(prompts.end_of_turn)


def prompt_batch(decoder: GreedyDecoder, prompts: PromptTokenizer, items: list[tuple],
                 rows_per_group: int = 1) -> PrefillBatch:
    """One row per item ``(group, paraphrase)`` or ``(group, paraphrase, block)`` (few-shot block ``block`` of the
    group, :mod:`selfens_pl.data.demos`; 0 = the template's): the full prompt, or only the question when the decoder
    shares prefixes (each distinct prefix encoded once per batch). Checks every prompt against the context window,
    naming the record."""
    stop_at_end_of_turn(decoder, prompts)
    tokenizers = [prompts.for_block(item[0], item[2] if len(item) > 2 else 0) for item in items]
    for (group, paraphrase, *_), tok in zip(items, tokenizers):
        check_context(decoder, len(tok.prefix_ids) + len(tok.question_ids(paraphrase)), group["id"])
    if not decoder.share_prefix:
        return rows_batch(decoder, [tok.prompt_ids(p) for (_, p, *_), tok in zip(items, tokenizers)], rows_per_group)
    questions = [tok.question_ids(p) for (_, p, *_), tok in zip(items, tokenizers)]
    if all(tok is prompts for tok in tokenizers):  # one prefix: the plain shared-prefix path
        return rows_batch(decoder, questions, rows_per_group, prompts.prefix_ids)
    index: dict[int, int] = {}
    for tok in tokenizers:
        index.setdefault(id(tok), len(index))
    prefixes = list({id(tok): tok.prefix_ids for tok in tokenizers}.values())
    return rows_batch(decoder, questions, rows_per_group, prefixes, [index[id(tok)] for tok in tokenizers])


def member_items(group: Group) -> list[tuple[Group, str, int]]:
    """``(group, text, block)`` for each of the group's members (:func:`selfens_pl.data.demos.members`, block-major)."""
    return [(group, m.text, m.block_index) for m in members(group)]
