"""``origin``: answer with the first paraphrase (the original question) only: the baseline."""

from __future__ import annotations

from selfens_pl.decoding import no_fusion
from selfens_pl.heads.base import FusionHead, prompt_batch


class OriginHead(FusionHead):
    """Paraphrase 0 of every group, one row each, batched across groups."""

    method = "origin"

    def generate(self, decoder, prompts, groups):
        self.check_groups(groups)
        batch = prompt_batch(decoder, prompts, [(g, g["paraphrases"][0]) for g in groups])
        gens = decoder.decode_n_tokens(batch, no_fusion, no_fusion)
        return [self.record(g, gen, 0, g["paraphrases"][:1]) for g, gen in zip(groups, gens)]
