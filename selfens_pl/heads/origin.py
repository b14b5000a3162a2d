"""``origin``: answer with the first paraphrase (the original question) only: the baseline."""

from __future__ import annotations

from selfens_pl.data.group import Group
from selfens_pl.engine.batches import prompt_batch
from selfens_pl.engine.decoding import no_fusion
from selfens_pl.heads.base import FusionHead


class OriginHead(FusionHead):
    """Paraphrase 0 of every group, one row each, batched across groups."""

    method = "origin"
    training_loss = "origin"

    def __init__(self, agreement: bool = False):
        """
        Args:
            agreement: Also answer every paraphrase on its own (a per_prompt pass: its cost) to fill each record's
                ``agreement``, the share of paraphrases whose answer agrees with the origin answer.
        """
        super().__init__()
        self.agreement = agreement

    def decoded_rows(self, members: int) -> int:
        return 1

    def generate(self, decoder, prompts, groups: list[Group]):
        self.check_groups(groups)
        batch = prompt_batch(decoder, prompts, [(g, g["paraphrases"][0]) for g in groups])
        gens = decoder.decode_n_tokens(batch, no_fusion, no_fusion)
        records = [self.decide(g, [gen]) for g, gen in zip(groups, gens)]
        return self.add_agreement(decoder, prompts, groups, records)

    def decide(self, group: Group, gens, scores=None, lemmas=None, alternatives=None, demos=None) -> dict:
        """Member 0's answer (paraphrase 0 with the standard few-shot block): ``gens[0]``."""
        self.check_no_extras(alternatives, demos)
        return self.record(group, gens[0], 0, group["paraphrases"][:1])
