"""Every swept method at every ``(K, M)``, derived from the engine's fact rows (:mod:`selfens_pl.sweep.engine`)
through the heads' own decisions, without decoding. What a head needs of the engine's rows (its candidates' scores,
the members' alternatives, the demonstrations' answers) and whether it is a cascade or cross-validated is the
sweep's plan for it (:func:`selfens_pl.sweep.plan.plan_for`).

For configuration ``(K, M)`` the members are ``S = Grid.subset(K, M)`` of each fact. Their rows become the heads'
own :class:`~selfens_pl.engine.decoding.Generation` objects (:func:`~selfens_pl.sweep.engine.generation_of`), the
group is cut to its first ``K`` paraphrases and ``M`` few-shot blocks, and each method is what its head decides
from those answers, the very function its ``generate`` calls on the answers it decodes:

* ``per_prompt``: :func:`selfens_pl.heads.per_prompt.per_prompt_records` (the full grid);
* ``origin``: :meth:`selfens_pl.heads.origin.OriginHead.decide` (member 0);
* ``vote``: :meth:`selfens_pl.heads.vote.VoteHead.decide`;
* ``rerank_<rule>``: :meth:`selfens_pl.heads.rerank.RerankHead.decide` (the candidates of ``S``'s answers, then
  ``RerankHead.pick`` over their ``[N][C]`` scores, read from the engine's table: :class:`TableScores`; with
  ``first_tokens = k > 1`` the members' alternatives the engine decoded join them: :meth:`Deriver.alternatives`;
  with ``demo_answers`` the answers of the group's demonstrations in its first ``M`` blocks, tokenised and scored
  by the engine: :meth:`Deriver.demos`);
* a cascade: :meth:`selfens_pl.heads.cascade.CascadeHead.outcomes` (its first stage over its cheap members of
  ``S`` and its ensemble's ``decide`` over ``S``), the record :meth:`~selfens_pl.heads.cascade.CascadeHead.keeps`
  says at the head's threshold, and the curve: ``keeps`` again at every threshold (accuracy and decoded rows per
  question);
* ``rerank_learned_cv`` (a ``RerankHead(rule="learned")`` without a chooser file): the chooser is fit on the sweep's
  own facts, cross-validated: each fact is picked (:meth:`~selfens_pl.heads.rerank.RerankHead.pick`) by the chooser
  fit on the other folds (:func:`~selfens_pl.scoring.chooser.fold_choosers`, folds by a hash of the fact id);
* LogitFusion rules: the engine decoded them; the record is the head's own;
* the controls (:mod:`selfens_pl.heads.controls`): ``knn_prompt`` by
  :meth:`~selfens_pl.heads.controls.SimilarPromptHead.decide` (member (paraphrase 0, block 1)), the copies by
  :meth:`~selfens_pl.heads.controls.NearestAnswerHead.decide` (the blocks' demonstrations, no model); their prompt
  tokens are those of the members they ask (their plan's ``asks``: none for a copy).

Each run also states its cost per question: decoded rows (the head's
:meth:`~selfens_pl.heads.base.FusionHead.decoded_rows`, or each record's for a cascade), prompt tokens encoded (the
questions of its members plus the prefixes of the extra few-shot blocks; the standard instruction + few-shot block
is encoded once per batch for every question and not counted) and, for rescoring, continuation tokens scored.
Records are the heads' own plus ``k``, ``m`` and ``correct`` (``method``: the run's label), so ``report`` reads
every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfens_pl.data.demos import cut_blocks
from selfens_pl.data.group import Group
from selfens_pl.engine.decoding import Generation
from selfens_pl.engine.members import demo_candidates
from selfens_pl.errors import InternalError
from selfens_pl.heads.base import FusionHead
from selfens_pl.heads.cascade import cheap_members
from selfens_pl.heads.origin import OriginHead
from selfens_pl.heads.per_prompt import PerPromptHead, per_prompt_records
from selfens_pl.scoring.agreement import Lemmas
from selfens_pl.scoring.chooser import fold_choosers, fold_of
from selfens_pl.scoring.rescoring import Candidate
from selfens_pl.scoring.summaries import score_oracles
from selfens_pl.sweep.engine import Grid, config_name, generation_of
from selfens_pl.sweep.plan import plan_for


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


class TableScores:
    """``scores(candidates) -> [N][C]`` for :meth:`~selfens_pl.heads.base.FusionHead.decide`: each candidate's
    sequence log-probability under each member of ``subset``, read from the fact's engine table (every distinct
    answer of the fact scored under every member); ``fed`` counts the continuation tokens a rescoring pass over
    ``subset`` feeds for them (a candidate's first token comes from the prompt's last logits)."""

    def __init__(self, fact: dict, subset: list[int], columns: dict[tuple, int]):
        self.fact, self.subset, self.columns, self.fed = fact, subset, columns, 0

    def __call__(self, cands: list[Candidate]) -> list[list[float]]:
        if "table" not in self.fact:
            raise InternalError(f"fact {self.fact['id']!r}: its engine row has no rescoring table (the engine pass "
                                "ran without rescore)")
        self.fed += len(self.subset) * sum(len(c.tokens) - 1 for c in cands)
        cols = [self.columns[tuple(c.tokens)] for c in cands]
        return [[self.fact["table"][j][col] for col in cols] for j in self.subset]


class Deriver:
    """Derives runs from fact rows; ``groups`` (by id) give the paraphrase texts and blocks of the records."""

    def __init__(self, facts: dict[str, dict], groups: list[Group], grid: Grid, is_match):
        self.facts, self.groups, self.grid, self.is_match = facts, groups, grid, is_match
        self.lemmas = Lemmas()
        # the engine scored each fact's distinct token sequences: a candidate's column, by its tokens
        self._columns = {i: {tuple(c["tokens"]): col for col, c in enumerate(fact.get("candidates", []))}
                         for i, fact in facts.items()}
        # the tokens the engine scored for each fact's demonstration answers, by prediction (demo_answers only)
        self._demo_tokens = {i: dict(map(tuple, fact["demos"])) for i, fact in facts.items() if "demos" in fact}
        self._members: dict[tuple[int, int], list[tuple[Group, list[Generation]]]] = {}

    def members(self, k: int, m: int) -> list[tuple[Group, list[Generation]]]:
        """Per group: the group cut to ``k`` paraphrases and ``m`` blocks, and its members' answers ``[k * m]``
        (member order), as the heads take them."""
        if (k, m) not in self._members:
            self._members[(k, m)] = [
                (cut_blocks(dict(g, paraphrases=g["paraphrases"][:k]), m),
                 [generation_of(self.facts[g["id"]]["members"][j]) for j in self.subset(g, k, m)])
                for g in self.groups]
        return self._members[(k, m)]

    def alternatives(self, group: Group, k: int, m: int, first_tokens: int) -> list[list[Generation]] | None:
        """``[member][rank-1]``: the answers of ``group``'s members at ``(k, m)`` from their 2nd .. ``first_tokens``-th
        most likely first tokens, as the engine decoded them (None with ``first_tokens = 1``)."""
        if first_tokens == 1:
            return None
        rows = self.facts[group["id"]].get("alternatives")
        if rows is None or any(len(own) < first_tokens - 1 for own in rows):
            raise InternalError(f"fact {group['id']!r}: its engine row holds no {first_tokens - 1} alternatives per "
                                "member (the engine pass ran with a smaller first_tokens)")
        return [[generation_of(x) for x in rows[j][:first_tokens - 1]] for j in self.subset(group, k, m)]

    def demos(self, group: Group, cut: Group, wanted: bool) -> list[tuple[str, list[int]]] | None:
        """``[(prediction, tokens)]``: the answers of the demonstrations of ``cut`` (``group`` cut to a
        configuration's blocks), with the tokens the engine scored for them; None unless ``wanted`` (a head whose
        plan rescores the ``demo_answers``)."""
        if not wanted:
            return None
        if group["id"] not in self._demo_tokens:
            raise InternalError(f"fact {group['id']!r}: its engine row holds no demonstration answers (the engine "
                                "pass ran without demo_answers)")
        return demo_candidates(cut, self._demo_tokens[group["id"]].__getitem__)

    def subset(self, group: Group, k: int, m: int) -> list[int]:
        """The engine-row indices of ``group``'s members at ``(k, m)`` (all its paraphrases when it has fewer)."""
        return self.grid.subset(k, m, len(group["paraphrases"]))

    def rows(self, head: FusionHead, k: int, m: int) -> float:
        """Decoded rows per question of ``head`` at ``(k, m)``: its rows for each group's own members, averaged."""
        return sum(head.decoded_rows(len(self.subset(g, k, m))) for g in self.groups) / len(self.groups)

    def scores(self, group: Group, k: int, m: int) -> TableScores:
        return TableScores(self.facts[group["id"]], self.subset(group, k, m), self._columns[group["id"]])

    def finish(self, rec: dict, method: str, k: int, m: int) -> dict:
        """A head's record as the sweep's: the run's label, its ``(k, m)`` and whether it is right (a rescoring
        record also whether any candidate, any member is: :func:`~selfens_pl.scoring.summaries.score_oracles`)."""
        rec.update(method=method, k=k, m=m, correct=self.is_match(rec["prediction"], rec["answers"]))
        score_oracles(rec, self.is_match)
        return rec

    def cost(self, fact: dict, subset: list[int], m: int) -> float:
        return sum(fact["q_tokens"][j] for j in subset) + sum(fact["block_tokens"][:m - 1])

    # -- the baselines' runs ---------------------------------------------------------------------------------------
    def per_prompt(self) -> Run:
        """Every member at the full grid, one record each (``block_index`` when there are several blocks)."""
        k, m, head = self.grid.k_max, self.grid.m_max, PerPromptHead()
        cut = self.members(k, m)
        records = per_prompt_records(head, [g for g, _ in cut], [gens for _, gens in cut], self.lemmas)
        return self._run("per_prompt", k, m, [self.finish(r, "per_prompt", k, m) for r in records],
                         self.rows(head, k, m))

    def origin(self) -> Run:
        head = OriginHead()
        records = [self.finish(head.decide(g, gens), "origin", 1, 1) for g, gens in self.members(1, 1)]
        return self._run("origin", 1, 1, records, head.decoded_rows(1))

    # -- every head ------------------------------------------------------------------------------------------------
    def derived(self, label: str, head: FusionHead, k: int, m: int) -> Run:
        """``head`` (planned ``derived``) at ``(k, m)``: a cascade with its curve, any other head by its
        ``decide``."""
        plan = plan_for(head)
        if plan.cascade:
            return self.cascade(label, head, k, m)
        records, fed = [], 0
        for (group, gens), g in zip(self.members(k, m), self.groups):
            scores = self.scores(g, k, m)
            decided = head.decide(group, gens, scores, self.lemmas, self.alternatives(g, k, m, plan.first_tokens),
                                  self.demos(g, group, plan.demo_answers))
            records.append(self.finish(decided, label, k, m))
            fed += scores.fed
        run = self._run(label, k, m, records, self.rows(head, k, m), plan.asks)
        if plan.rescores:
            run.scored_tokens = fed / len(self.groups)
            run.extra["first_tokens"] = plan.first_tokens
            run.extra["demo_answers"] = plan.demo_answers
        return run

    def cross_validated(self, label: str, head, k: int, m: int, folds: int = 5, data=None) -> Run:
        """A ``RerankHead(rule="learned")`` with no chooser of its own at ``(k, m)``: each fact picked by the chooser
        fit on the facts of the other ``folds`` folds (its candidates, their scores and features as the head builds
        them; labels: the lemma match against the fact's answers). ``data``: :meth:`chooser_data`, if at hand."""
        ids, items, feats, labels, fed = data or self.chooser_data(head, k, m)
        choosers = {f: head.with_chooser(model)
                    for f, model in fold_choosers(ids, feats, labels, folds, features=head.features).items()}
        records = [self.finish(choosers[fold_of(i, folds)].pick(group, gens, None, cands, table, wider), label, k, m)
                   for i, (group, gens, cands, table, wider) in zip(ids, items)]
        plan = plan_for(head)
        run = self._run(label, k, m, records, self.rows(head, k, m))
        run.scored_tokens = fed / len(self.groups)
        run.extra["first_tokens"] = plan.first_tokens
        run.extra["demo_answers"] = plan.demo_answers
        return run

    def chooser_data(self, head, k: int, m: int):
        """What a chooser fits on at ``(k, m)``: ``(ids, [(group, gens, candidates, table, alternatives)], features
        [g][C][F], labels [g][C], scored tokens)``; the candidates, scores and features as ``head`` builds them."""
        ids, items, feats, labels, fed, plan = [], [], [], [], 0, plan_for(head)
        for (group, gens), g in zip(self.members(k, m), self.groups):
            scores, wider = self.scores(g, k, m), self.alternatives(g, k, m, plan.first_tokens)
            cands, table = head.scored_candidates(gens, scores, self.lemmas, wider, self.demos(g, group,
                                                                                                plan.demo_answers))
            fed += scores.fed
            ids.append(g["id"])
            items.append((group, gens, cands, table, wider))
            feats.append(head.candidate_features(group, gens, cands, table, self.lemmas) if cands else [])
            labels.append([self.is_match(c.prediction, group["answers"]) for c in cands])
        return ids, items, feats, labels, fed

    def fused(self, head: FusionHead, k: int, m: int) -> Run:
        """The LogitFusion rule the engine decoded for ``head`` (its plan's ``engine_rule``) at ``(k, m)``."""
        rule = plan_for(head).engine_rule
        records = [self.finish(head.record(group, generation_of(
            self.facts[g["id"]]["fused"][rule][config_name(k, m)]), None, list(group["paraphrases"])),
            head.label, k, m) for (group, _), g in zip(self.members(k, m), self.groups)]
        return self._run(head.label, k, m, records, self.rows(head, k, m))

    def cascade(self, label: str, head: FusionHead, k: int, m: int) -> Run:
        """CascadeHead ``head`` at its threshold, with the curve over every threshold in ``run.extra["curve"]``:
        ``[(threshold, accuracy, decoded rows per question)]``."""
        outcomes, cheap_tokens, first_tokens = [], [], plan_for(head).first_tokens
        for (group, gens), g in zip(self.members(k, m), self.groups):
            fact, subset = self.facts[g["id"]], self.subset(g, k, m)
            stage, first, escalated = head.outcomes(group, gens, self.scores(g, k, m), self.lemmas,
                                                    self.alternatives(g, k, m, first_tokens))
            outcomes.append((stage, self.finish(first, label, k, m), self.finish(escalated, label, k, m)))
            picked = [subset[i] for i in cheap_members(group, head.first)]
            blocks = {j // len(g["paraphrases"]) for j in picked} - {0}
            # an escalated group encodes all of S again (RerankHead scores under every member)
            cheap_tokens.append(sum(fact["q_tokens"][j] for j in picked)
                                + sum(fact["block_tokens"][b - 1] for b in blocks))
        n = len(self.groups)
        thresholds = sorted({stage.confidence for stage, _, _ in outcomes})
        if len(thresholds) > 21:  # a continuous signal (mean_prob): its 21 quantiles draw the same curve
            thresholds = [thresholds[round(i * (len(thresholds) - 1) / 20)] for i in range(21)]
        curve = []
        for t in sorted({0.0, 1.01} | set(thresholds)):
            taken = [first if head.keeps(stage, t) else escalated for stage, first, escalated in outcomes]
            curve.append((t, sum(r["correct"] for r in taken) / n, sum(r["decoded_rows"] for r in taken) / n))
        records, tokens = [], 0.0
        for (stage, first, escalated), g, own in zip(outcomes, self.groups, cheap_tokens):
            keep = head.keeps(stage)
            records.append(first if keep else escalated)
            tokens += own + (0 if keep else self.cost(self.facts[g["id"]], self.subset(g, k, m), m))
        run = self._run(label, k, m, records, sum(r["decoded_rows"] for r in records) / n)
        run.prompt_tokens = tokens / n
        run.extra["curve"] = curve
        return run

    def _run(self, method: str, k: int, m: int, records: list[dict], rows: float,
             asks: tuple[tuple[int, int], ...] | None = None) -> Run:
        """A run of ``records``; its prompt tokens those of every member of ``(k, m)``, or with ``asks`` (a
        control's plan) of those members ``(paraphrase, block)`` only, with their blocks' prefixes."""
        n = len(self.groups)
        if asks is None:
            tokens = sum(self.cost(self.facts[g["id"]], self.subset(g, k, m), m) for g in self.groups) / n
        else:
            tokens = sum(self.facts[g["id"]]["q_tokens"][b * len(g["paraphrases"]) + p]
                         + (self.facts[g["id"]]["block_tokens"][b - 1] if b else 0)
                         for g in self.groups for p, b in asks) / n
        return Run(method, k, m, records, rows=rows, prompt_tokens=tokens)
