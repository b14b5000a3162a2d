"""``per_prompt``: every paraphrase answered on its own; one record per paraphrase."""

from __future__ import annotations

from selfens_pl.agreement import Lemmas, agreement_share
from selfens_pl.heads.base import FusionHead, paraphrase_generations


class PerPromptHead(FusionHead):
    """All paraphrases of all groups as independent rows of one batch. Each record's ``agreement`` is the share of
    its group's paraphrases whose answer agrees with its own (every paraphrase's answer is at hand: no extra cost)."""

    method = "per_prompt"

    def generate(self, decoder, prompts, groups):
        self.check_groups(groups)
        return per_prompt_records(self, groups, paraphrase_generations(decoder, prompts, groups))


def per_prompt_records(head: FusionHead, groups: list[dict], generations: list[list]) -> list[dict]:
    """One record per paraphrase from each group's per-paraphrase ``Generation``s, with its ``agreement`` (also used
    by ``sweep``, which keeps the generations' log-probabilities for its votes)."""
    records, lemmas = [], Lemmas()
    for g, gens in zip(groups, generations):
        answers = [gen.prediction for gen in gens]
        for i, (p, gen) in enumerate(zip(g["paraphrases"], gens)):
            rec = head.record(g, gen, i, [p])
            rec["agreement"] = agreement_share(gen.prediction, answers, lemmas)
            records.append(rec)
    return records
