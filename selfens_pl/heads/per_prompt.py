"""``per_prompt``: every paraphrase answered on its own; one record per paraphrase."""

from __future__ import annotations

from selfens_pl.decoding import no_fusion
from selfens_pl.heads.base import FusionHead, prompt_batch


class PerPromptHead(FusionHead):
    """All paraphrases of all groups as independent rows of one batch."""

    method = "per_prompt"

    def generate(self, decoder, prompts, groups):
        self.check_groups(groups)
        owners = [(g, i, p) for g in groups for i, p in enumerate(g["paraphrases"])]
        batch = prompt_batch(decoder, prompts, [(g, p) for g, _, p in owners])
        gens = decoder.decode_n_tokens(batch, no_fusion, no_fusion)
        return [self.record(g, gen, i, [p]) for (g, i, p), gen in zip(owners, gens)]
