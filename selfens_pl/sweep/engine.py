"""The sweep's one pass over the facts: every member encoded once, everything else decoded or scored from it.

For a grid of ``K`` (paraphrases) x ``M`` (few-shot blocks, :mod:`selfens_pl.data.demos`), a fact's members at the
largest ``(K_max, M_max)`` hold every smaller configuration: ``(K, M)`` is the members of paraphrases ``< K`` with
blocks ``< M`` (:meth:`Grid.subset`). So per batch of facts the pass

1. encodes the prompts of all ``K_max x M_max`` members once (:meth:`~selfens_pl.engine.decoding.GreedyDecoder.encode`;
   each few-shot block's prefix once per batch);
2. decodes every member's own greedy answer from that encoding (per_prompt; origin, vote, the oracle and the mean
   single paraphrase follow from these answers for every ``(K, M)``);
3. scores every distinct answer of a fact (a token sequence with a non-empty prediction) under every member's
   prompt, from the same encoding (answer-level rescoring of every ``(K, M)`` and every rule follows, see
   :mod:`selfens_pl.sweep.derive`);
4. decodes each LogitFusion rule (unweighted, uncalibrated) for every ``(K, M)`` with ``K x M >= 2``, all rules of a
   configuration in one batch, again from the same encoding.

What one fact yields is one JSON line of ``facts.jsonl`` (appended per batch, so an interrupted sweep resumes fact
by fact; ``facts.settings.json`` guards that the file belongs to the same settings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from selfens_pl.engine.batches import member_items, prompt_batch
from selfens_pl.engine.decoding import Generation, no_fusion
from selfens_pl.engine.fusion import fuse_logits
from selfens_pl.errors import UserError


@dataclass(frozen=True)
class Grid:
    """The swept configurations: every ``K`` in ``ks`` with every ``M`` in ``ms``."""

    ks: tuple[int, ...]
    ms: tuple[int, ...]

    @property
    def k_max(self) -> int:
        return max(self.ks)

    @property
    def m_max(self) -> int:
        return max(self.ms)

    def configs(self) -> list[tuple[int, int]]:
        return [(k, m) for m in self.ms for k in self.ks]

    def subset(self, k: int, m: int) -> list[int]:
        """Indices, among a fact's ``K_max x M_max`` members (block-major), of the members of ``(k, m)``, in the
        order a group cut to ``k`` paraphrases and ``m`` blocks lists its own members."""
        return [b * self.k_max + p for b in range(m) for p in range(k)]


def config_name(k: int, m: int) -> str:
    return f"k{k}_m{m}"


def fused_configs(grid: Grid) -> list[tuple[int, int]]:
    """Configurations a fused rule decodes: one member fuses to itself (it is origin)."""
    return [(k, m) for k, m in grid.configs() if k * m >= 2]


def generation_row(gen: Generation) -> dict:
    return {"generation": gen.text, "prediction": gen.prediction, "logprobs": gen.logprobs,
            "tokens": gen.continuation}


def engine_pass(decoder, prompts, groups: list[dict], grid: Grid, rules: list[str], rescore: bool) -> list[dict]:
    """One batch of facts (each cut to ``K_max`` paraphrases and ``M_max`` blocks) -> one row per fact (module
    docstring)."""
    items = [member_items(g) for g in groups]
    n = len(items[0])
    if any(len(own) != n for own in items):
        raise UserError("the sweep needs every fact cut to the same K_max x M_max members")
    encoded = decoder.encode(prompt_batch(decoder, prompts, [it for own in items for it in own]))
    rows = torch.arange(len(groups) * n, device=decoder.device)
    gens = decoder.decode_n_tokens(encoded.batch(rows), no_fusion, no_fusion)
    out = []
    for f, group in enumerate(groups):
        own = gens[f * n:(f + 1) * n]
        out.append({"id": group["id"], "answers": group["answers"], "members": [generation_row(x) for x in own],
                    "q_tokens": [len(prompts.for_block(group, b).question_ids(text)) for _, text, b in items[f]],
                    "block_tokens": [len(prompts.for_block(group, b).prefix_ids)
                                     for b in range(1, grid.m_max)],
                    "fused": {}})
    if rescore:
        score_candidates(decoder, encoded, out, n)
    for k, m in fused_configs(grid):
        if rules:
            decode_rules(decoder, encoded, out, n, grid.subset(k, m), rules, config_name(k, m))
    return out


def score_candidates(decoder, encoded, facts: list[dict], n: int) -> None:
    """Every fact's distinct answers (token sequences with a non-empty prediction, member order) scored under every
    member: ``fact["candidates"]`` and ``fact["table"] [N][C]`` (sequence log-probabilities)."""
    for fact in facts:
        seen, cands = set(), []
        for member in fact["members"]:
            key = tuple(member["tokens"])
            if member["prediction"] and key and key not in seen:
                seen.add(key)
                cands.append({"prediction": member["prediction"], "tokens": member["tokens"]})
        fact["candidates"] = cands
    todo = [(f, j) for f, fact in enumerate(facts) if fact["candidates"] for j in range(n)]
    scored = decoder.score_continuations(encoded, [f * n + j for f, j in todo],
                                         [[c["tokens"] for c in facts[f]["candidates"]] for f, _ in todo])
    for fact in facts:
        fact["table"] = [[] for _ in range(n)]
    for (f, j), row in zip(todo, scored):
        facts[f]["table"][j] = [sum(lp) for lp in row]


def decode_rules(decoder, encoded, facts: list[dict], n: int, subset: list[int], rules: list[str],
                 name: str) -> None:
    """Each LogitFusion rule over the members ``subset`` of every fact, all rules in one batch of groups (fact f,
    rule h), each group fused by its own rule (carried as its weight, which the decoder keeps aligned with the
    groups still decoding)."""
    rows = torch.tensor([f * n + j for f in range(len(facts)) for _ in rules for j in subset], device=decoder.device)
    batch = encoded.batch(rows, len(subset))
    batch.weights = batch.step_weights = torch.arange(len(rules), device=decoder.device,
                                                      dtype=torch.float32).repeat(len(facts))[:, None]

    def fuse(logits, weights=None, valid=None):
        scores = torch.stack([fuse_logits(logits, rule) for rule in rules], dim=1)  # [g, H, V]
        index = weights[:, :1].long()[..., None].expand(-1, 1, scores.shape[-1])
        return scores.gather(1, index)[:, 0]

    gens = decoder.decode_n_tokens(batch, fuse, fuse)
    for f, fact in enumerate(facts):
        for h, rule in enumerate(rules):
            gen = gens[f * len(rules) + h]
            fact["fused"].setdefault(rule, {})[name] = {"generation": gen.text, "prediction": gen.prediction,
                                                        "logprobs": gen.logprobs}


