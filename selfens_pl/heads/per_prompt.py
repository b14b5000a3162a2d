"""``per_prompt``: every paraphrase (with ``--data.demo_blocks``: every paraphrase x few-shot block) answered on its
own; one record per member."""

from __future__ import annotations

from selfens_pl.data.demos import members, num_blocks
from selfens_pl.data.group import Group
from selfens_pl.engine.batches import paraphrase_generations
from selfens_pl.heads.base import FusionHead
from selfens_pl.scoring.agreement import Lemmas, agreement_share


class PerPromptHead(FusionHead):
    """All paraphrases of all groups as independent rows of one batch. Each record's ``agreement`` is the share of
    its group's paraphrases whose answer agrees with its own (every paraphrase's answer is at hand: no extra cost)."""

    method = "per_prompt"
    training_loss = "members"

    def generate(self, decoder, prompts, groups: list[Group]):
        self.check_groups(groups)
        return per_prompt_records(self, groups, paraphrase_generations(decoder, prompts, groups))


def per_prompt_records(head: FusionHead, groups: list[Group], generations: list[list],
                       lemmas: Lemmas | None = None) -> list[dict]:
    """One record per member (paraphrase x few-shot block) from each group's per-member ``Generation``s
    (``generations[g]`` ``[N]``, member order), with its ``agreement``: what ``generate`` answers, and the sweep's
    per_prompt run from the answers of its engine pass (:mod:`selfens_pl.sweep.derive`). With extra few-shot blocks
    each record also names its ``block_index``."""
    records, lemmas = [], lemmas or Lemmas()
    for g, gens in zip(groups, generations):
        answers = [gen.prediction for gen in gens]
        blocks = num_blocks(g) > 1
        for member, gen in zip(members(g), gens):
            rec = head.record(g, gen, member.paraphrase_index, [member.text])
            if blocks:  # which few-shot block asked it (records of runs without extra blocks stay as they were)
                rec["block_index"] = member.block_index
            rec["agreement"] = agreement_share(gen.prediction, answers, lemmas)
            records.append(rec)
    return records
