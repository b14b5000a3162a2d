"""The fusion-head contract shared by every head.

A head turns a batch of paraphrase groups into answer records using a :class:`~selfens_pl.decoding.GreedyDecoder`
(the model) and a :class:`~selfens_pl.prompts.PromptTokenizer` (the prompt format). Heads are ``nn.Module``s so
that a head with parameters (none yet) trains with the LM, and so LightningCLI picks one by ``class_path``.
"""

from __future__ import annotations

import torch
from torch import nn

from selfens_pl.decoding import GreedyDecoder, Generation, PrefillBatch, left_pad, pad_token_id
from selfens_pl.prompts import PromptTokenizer


class FusionHead(nn.Module):
    """Base class. Subclasses implement :meth:`generate`.

    ``generate(decoder, prompts, groups) -> records``: ``groups`` are dicts ``{id, paraphrases[N], answers,
    confidences?}``; each record is ``{id, method, paraphrase_index, paraphrases, generation, prediction, answers,
    mean_prob, agreement}`` (``paraphrase_index`` is None when the record fuses several paraphrases).

    Confidence of a record: ``mean_prob``, the mean probability of its answer's tokens under the distribution they
    were picked from (fused, for fused heads; ``None`` for an empty answer), and ``agreement``, the share of the
    group's paraphrases whose own answer agrees with it (:mod:`selfens_pl.agreement`). ``agreement`` is ``None``
    unless those per-paraphrase answers were computed: per_prompt and vote have them for free; the fused heads and
    origin decode them only with ``agreement=True`` (a per_prompt pass over the same groups: its cost).
    """

    #: Name written to outputs and summaries.
    method: str = "base"
    #: Also answer every paraphrase on its own and fill each record's ``agreement`` (heads that offer the flag).
    agreement: bool = False

    def generate(self, decoder: GreedyDecoder, prompts: PromptTokenizer, groups: list[dict]) -> list[dict]:
        raise NotImplementedError

    def check_groups(self, groups: list[dict]) -> None:
        """One clear error naming the record for input this head cannot answer. Groups may differ in size."""
        for group in groups:
            if not group.get("paraphrases"):
                raise ValueError(f"record {group.get('id')!r}: empty paraphrase list")

    def record(self, group: dict, gen: Generation, paraphrase_index: int | None, paraphrases: list[str]) -> dict:
        return {
            "id": group["id"],
            "method": self.method,
            "paraphrase_index": paraphrase_index,
            "paraphrases": paraphrases,
            "generation": gen.text,
            "prediction": gen.prediction,
            "answers": group.get("answers"),
            "mean_prob": gen.mean_prob,
            "agreement": None,
        }

    def add_agreement(self, decoder: GreedyDecoder, prompts: PromptTokenizer, groups: list[dict],
                      records: list[dict]) -> list[dict]:
        """With ``self.agreement``: answer each paraphrase on its own (one batched per_prompt pass) and fill every
        record's ``agreement`` and ``paraphrase_predictions``. Records are one per group, in group order."""
        if not self.agreement:
            return records
        from selfens_pl.agreement import Lemmas, agreement_share

        lemmas = Lemmas()
        for rec, gens in zip(records, paraphrase_generations(decoder, prompts, groups)):
            answers = [g.prediction for g in gens]
            rec["agreement"] = agreement_share(rec["prediction"], answers, lemmas)
            rec["paraphrase_predictions"] = answers
        return records


def paraphrase_generations(decoder: GreedyDecoder, prompts: PromptTokenizer, groups: list[dict],
                           known: list[dict[int, Generation]] | None = None) -> list[list[Generation]]:
    """Every member (paraphrase x few-shot block, :func:`selfens_pl.demos.members`) of every group answered on its
    own, all as independent rows of one batch (per_prompt's decoding). Returns, per group, one Generation per member
    (block-major: without extra blocks, one per paraphrase). ``known[g]``: members of group ``g`` already answered
    (``{member index: Generation}``, e.g. by a cascade's first stage): taken as they are, not decoded again."""
    from selfens_pl.fusion import no_fusion

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
        raise ValueError(
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
    prefix is encoded once and shared by its rows (few-shot blocks, :mod:`selfens_pl.demos`).
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


def prompt_batch(decoder: GreedyDecoder, prompts: PromptTokenizer, items: list[tuple],
                 rows_per_group: int = 1) -> PrefillBatch:
    """One row per item ``(group, paraphrase)`` or ``(group, paraphrase, block)`` (few-shot block ``block`` of the
    group, :mod:`selfens_pl.demos`; 0 = the template's): the full prompt, or only the question when the decoder
    shares prefixes (each distinct prefix encoded once per batch). Checks every prompt against the context window,
    naming the record."""
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


def member_items(group: dict) -> list[tuple[dict, str, int]]:
    """``(group, text, block)`` for each of the group's members (:func:`selfens_pl.demos.members`, block-major)."""
    from selfens_pl.demos import members

    return [(group, m.text, m.block_index) for m in members(group)]


def confidence_weights(groups: list[dict], method: str, device, n: int | None = None) -> torch.Tensor:
    """``[g, n]`` float weights from each group's ``confidences`` (padded with 0 to ``n`` for ragged groups), or a
    ValueError naming the record."""
    n = n or max(len(g["paraphrases"]) for g in groups)
    weights = []
    for group in groups:
        conf = group.get("confidences")
        if conf is None or len(conf) != len(group["paraphrases"]):
            raise ValueError(
                f"record {group['id']!r}: method={method} needs one confidence per paraphrase "
                f"(got {None if conf is None else len(conf)} for {len(group['paraphrases'])} paraphrases); "
                "run `python -m selfens_pl confidence` or point --data.confidences at a confidence file"
            )
        if method == "weighted_avg" and sum(conf) <= 0:
            raise ValueError(f"record {group['id']!r}: method=weighted_avg: the confidences sum to 0; weights "
                             "cannot be normalised")
        weights.append([float(c) for c in conf] + [0.0] * (n - len(conf)))
    return torch.tensor(weights, dtype=torch.float32, device=device)
