"""Every swept method at every ``(K, M)``, derived from the engine's fact rows (:mod:`.sweep_engine`) without decoding.

For configuration ``(K, M)`` the members are ``S = Grid.subset(K, M)`` of each fact. From the members' own answers:

* ``origin``: member 0 (paraphrase 0, the standard few-shot block); the **mean single paraphrase** (standard
  prompt): the mean accuracy of paraphrases ``< K`` asked with block 0 (the baseline of every gain, per fact the mean
  of their correctness); the **mean single member**: the same over all of ``S`` (every block); the **oracle**: any
  member of ``S`` right;
* ``vote``: :func:`selfens_pl.scoring.agreement.vote` over ``S`` (VoteHead's rule);
* ``rerank_<rule>``: RerankHead's choice over ``S`` (:mod:`selfens_pl.scoring.rescoring`): the candidates are ``S``'s distinct
  answers, each the token sequence of the first member of ``S`` giving it, scored from the engine's table;
* ``cascade``: CascadeHead's first stage (``first`` members of ``S``, paraphrase j with block j) and its ensemble (vote
  or a rerank rule over ``S``); for every threshold, accuracy and decoded rows per question (the curve), and the
  records at the head's own threshold;
* LogitFusion rules: the engine decoded them.

Each run also states its cost per question: decoded rows (greedy decoding streams), prompt tokens encoded (the
questions of its members plus the prefixes of the extra few-shot blocks; the standard instruction + few-shot block
is encoded once per batch for every question and not counted) and, for rescoring, continuation tokens scored.
Records look like the heads' own (``id, method, paraphrase_index, paraphrases, generation, prediction, answers,
mean_prob, agreement, correct``), so ``report`` reads every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from selfens_pl.data.demos import cut_blocks
from selfens_pl.errors import UserError
from selfens_pl.heads.cascade import cheap_members
from selfens_pl.scoring.agreement import Lemmas, vote
from selfens_pl.scoring.rescoring import best, combine
from selfens_pl.sweep.engine import Grid, config_name


@dataclass
class Run:
    """One method at one ``(k, m)``: its records, per-fact scores (for paired intervals) and cost per question."""

    method: str
    k: int
    m: int
    records: list[dict]
    rows: float
    prompt_tokens: float
    scored_tokens: float | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.method}_{config_name(self.k, self.m)}"

    @property
    def accuracy(self) -> float:
        return sum(bool(r["correct"]) for r in self.records) / len(self.records)

    def per_fact(self) -> dict[str, float]:
        return {str(r["id"]): float(bool(r["correct"])) for r in self.records}


def mean_prob(logprobs: list[float]) -> float | None:
    return sum(math.exp(lp) for lp in logprobs) / len(logprobs) if logprobs else None


class Deriver:
    """Derives runs from fact rows; ``groups`` (by id) give the paraphrase texts and blocks of the records."""

    def __init__(self, facts: dict[str, dict], groups: list[dict], grid: Grid, is_match):
        self.facts, self.groups, self.grid, self.is_match = facts, groups, grid, is_match
        self.lemmas = Lemmas()
        for fact in facts.values():
            for member in fact["members"]:
                member.setdefault("correct", is_match(member["prediction"], fact["answers"]))

    def record(self, group: dict, method: str, member: dict, k: int, m: int, index: int | None = None,
               agreement: float | None = None) -> dict:
        texts = list(group["paraphrases"][:k]) if index is None else [member.get("text", "")]
        return {"id": group["id"], "method": method, "paraphrase_index": index, "paraphrases": texts,
                "generation": member["generation"], "prediction": member["prediction"], "answers": group["answers"],
                "mean_prob": mean_prob(member["logprobs"]), "agreement": agreement, "k": k, "m": m,
                "correct": self.is_match(member["prediction"], group["answers"])}

    def cost(self, fact: dict, subset: list[int], m: int) -> float:
        return sum(fact["q_tokens"][j] for j in subset) + sum(fact["block_tokens"][:m - 1])

    # -- baselines ------------------------------------------------------------------------------------------------
    def per_prompt(self) -> Run:
        """Every member at the full grid, one record each (``block_index`` when there are several blocks)."""
        k, m = self.grid.k_max, self.grid.m_max
        records = []
        for g in self.groups:
            fact = self.facts[g["id"]]
            answers = [x["prediction"] for x in fact["members"]]
            for j, member in enumerate(fact["members"]):
                p, b = j % k, j // k
                rec = self.record(g, "per_prompt", dict(member, text=g["paraphrases"][p]), k, m, p,
                                  sum(self.lemmas.agree(member["prediction"], a) for a in answers) / len(answers))
                if m > 1:
                    rec["block_index"] = b
                records.append(rec)
        n = len(self.groups)
        return Run("per_prompt", k, m, records, rows=k * m,
                   prompt_tokens=sum(self.cost(self.facts[g["id"]], self.grid.subset(k, m), m) for g in self.groups) / n)

    def origin(self) -> Run:
        records = [self.record(g, "origin", dict(self.facts[g["id"]]["members"][0], text=g["paraphrases"][0]), 1, 1, 0)
                   for g in self.groups]
        tokens = sum(self.facts[g["id"]]["q_tokens"][0] for g in self.groups) / len(self.groups)
        return Run("origin", 1, 1, records, rows=1, prompt_tokens=tokens)

    def mean_single(self, k: int, blocks: int = 1) -> dict[str, float]:
        """Per fact: the mean correctness of paraphrases ``< k`` asked with blocks ``< blocks`` (1: the standard
        prompt: the mean single paraphrase)."""
        subset = self.grid.subset(k, blocks)
        return {g["id"]: sum(self.facts[g["id"]]["members"][j]["correct"] for j in subset) / len(subset)
                for g in self.groups}

    def oracle(self, k: int, m: int) -> dict[str, float]:
        subset = self.grid.subset(k, m)
        return {g["id"]: float(any(self.facts[g["id"]]["members"][j]["correct"] for j in subset)) for g in self.groups}

    # -- ensembles over S ------------------------------------------------------------------------------------------
    def vote(self, k: int, m: int) -> Run:
        subset, records = self.grid.subset(k, m), []
        for g in self.groups:
            members = [self.facts[g["id"]]["members"][j] for j in subset]
            index, support = vote([x["prediction"] for x in members], [x["logprobs"] for x in members], self.lemmas)
            rec = self.record(g, "vote", members[index], k, m, agreement=support / len(members))
            rec["voted_index"] = index
            records.append(rec)
        return self._run("vote", k, m, records, subset)

    def rerank_choice(self, fact: dict, subset: list[int], rule: str) -> tuple[dict, float, int]:
        """RerankHead's choice over ``subset``: the winning member row, its agreement, and scored tokens."""
        members = [fact["members"][j] for j in subset]
        preds = [x["prediction"] for x in members]
        columns = {tuple(c["tokens"]): i for i, c in enumerate(fact.get("candidates", []))}
        cands, seen = [], set()
        for i, x in enumerate(members):
            if x["prediction"] and x["tokens"] and x["prediction"] not in seen:
                seen.add(x["prediction"])
                cands.append((i, columns[tuple(x["tokens"])], len(x["tokens"])))
        if not cands:
            return members[0], 0.0, 0
        support = [sum(self.lemmas.agree(preds[i], p) for p in preds) for i, _, _ in cands]
        table = [[fact["table"][j][col] for _, col, _ in cands] for j in subset]
        scores = combine(table, [length for _, _, length in cands], rule, support)
        c = best(scores)
        return members[cands[c][0]], support[c] / len(members), len(subset) * sum(n - 1 for _, _, n in cands)

    def rerank(self, rule: str, k: int, m: int) -> Run:
        subset, records, scored = self.grid.subset(k, m), [], 0
        for g in self.groups:
            member, agreement, tokens = self.rerank_choice(self.facts[g["id"]], subset, rule)
            records.append(self.record(g, f"rerank_{rule}", member, k, m, agreement=agreement))
            scored += tokens
        run = self._run(f"rerank_{rule}", k, m, records, subset)
        run.scored_tokens = scored / len(self.groups)
        return run

    def fused(self, rule: str, k: int, m: int) -> Run:
        subset = self.grid.subset(k, m)
        records = [self.record(g, rule, self.facts[g["id"]]["fused"][rule][config_name(k, m)], k, m)
                   for g in self.groups]
        return self._run(rule, k, m, records, subset)

    def cascade(self, label: str, head, k: int, m: int) -> Run:
        """CascadeHead ``head`` at its threshold, with the curve over every threshold in ``run.extra["curve"]``:
        ``[(threshold, accuracy, decoded rows per question)]``."""
        subset = self.grid.subset(k, m)
        ensemble = self._ensemble_of(head)
        stage, final, cheap_tokens = [], [], []
        for g in self.groups:
            fact = self.facts[g["id"]]
            cut = cut_blocks(dict(g, paraphrases=g["paraphrases"][:k]), m)
            picked = [subset[i] for i in cheap_members(cut, head.first)]
            cheap = [fact["members"][j] for j in picked]
            index, support = vote([x["prediction"] for x in cheap], [x["logprobs"] for x in cheap], self.lemmas)
            conf = support / len(cheap) if head.confidence == "agreement" else (mean_prob(cheap[index]["logprobs"]) or 0.0)
            stage.append((cheap[index], conf, len(cheap), support / len(cheap)))
            final.append(ensemble(fact, subset))
            blocks = {j // self.grid.k_max for j in picked} - {0}
            cheap_tokens.append(sum(fact["q_tokens"][j] for j in picked)
                                + sum(fact["block_tokens"][b - 1] for b in blocks))
        n, size = len(self.groups), len(subset)
        thresholds = sorted({conf for _, conf, _, _ in stage})
        if len(thresholds) > 21:  # a continuous signal (mean_prob): its 21 quantiles draw the same curve
            thresholds = [thresholds[round(i * (len(thresholds) - 1) / 20)] for i in range(21)]
        thresholds = sorted({0.0, 1.01} | set(thresholds))
        # each answer matched once: a curve over hundreds of thresholds (mean_prob) re-matches nothing
        first_right = [self.is_match(s[0]["prediction"], g["answers"]) for g, s in zip(self.groups, stage)]
        final_right = [self.is_match(f[0]["prediction"], g["answers"]) for g, f in zip(self.groups, final)]
        curve = []
        for t in thresholds:
            right = sum(a if s[1] >= t else b for s, a, b in zip(stage, first_right, final_right))
            rows = sum(s[2] + (0 if s[1] >= t else size - s[2]) for s in stage)
            curve.append((t, right / n, rows / n))
        records, rows, tokens = [], 0, 0.0
        for g, (member, conf, c, agree), (fmember, fagree), own in zip(self.groups, stage, final, cheap_tokens):
            first = conf >= head.threshold
            # an escalated group encodes all of S again (RerankHead scores under every member)
            tokens += own + (0 if first else self.cost(self.facts[g["id"]], subset, m))
            rec = self.record(g, label, member if first else fmember, k, m, agreement=agree if first else fagree)
            rec.update(path="first" if first else "ensemble", cascade_confidence=conf,
                       decoded_rows=c if first else size)
            rows += rec["decoded_rows"]
            records.append(rec)
        run = self._run(label, k, m, records, subset)
        run.rows, run.prompt_tokens = rows / n, tokens / n
        run.extra["curve"] = curve
        return run

    def _ensemble_of(self, head):
        from selfens_pl.heads import RerankHead, VoteHead

        if isinstance(head.ensemble, RerankHead) and head.ensemble.fused is None:
            rule = head.ensemble.rule
            return lambda fact, subset: self.rerank_choice(fact, subset, rule)[:2]
        if isinstance(head.ensemble, VoteHead):
            def by_vote(fact, subset):
                members = [fact["members"][j] for j in subset]
                index, support = vote([x["prediction"] for x in members], [x["logprobs"] for x in members],
                                      self.lemmas)
                return members[index], support / len(members)
            return by_vote
        raise UserError("--heads: the sweep derives a CascadeHead whose ensemble is VoteHead or RerankHead "
                         f"(without fused); got {type(head.ensemble).__name__}")

    def _run(self, method: str, k: int, m: int, records: list[dict], subset: list[int]) -> Run:
        n = len(self.groups)
        tokens = sum(self.cost(self.facts[g["id"]], subset, m) for g in self.groups) / n
        return Run(method, k, m, records, rows=len(subset), prompt_tokens=tokens)
