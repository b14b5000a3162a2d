"""``VoteHead``: every paraphrase answered on its own, then the answer most paraphrases agree on.

Decoding is per_prompt's (every paraphrase of every group an independent row of one batch). Per group, each
paraphrase's answer gets a *support*: how many of the group's answers agree with it under the lemma rule
(:mod:`selfens_pl.scoring.agreement`: one answer's lemmas inside the other's). The answer with the most support wins; ties
go to the highest mean token log-probability (``Generation.logprobs``, under its own paraphrase), then to the
lowest member index. With ``--data.demo_blocks`` the voters are the group's members (every paraphrase x few-shot
block, :mod:`selfens_pl.data.demos`). One record per group: the winner's generation, ``voted_index`` (which member gave
it: paraphrase ``voted_index % K`` with block ``voted_index // K``), ``paraphrase_predictions`` (every member's
answer), ``mean_prob`` (the winner's own mean token probability) and ``agreement`` = support / members. Cost:
exactly per_prompt's.

The decision over already decoded answers is :meth:`VoteHead.decide`: ``generate`` calls it on the answers it
decodes (for a cascade's escalated groups, with the cheap members' answers reused), and ``sweep`` on the answers of
its one engine pass (:mod:`selfens_pl.sweep.derive`), for the vote and for a cascade escalating to a vote.
"""

from __future__ import annotations

from selfens_pl.data.group import Group
from selfens_pl.data.origin_share import check_origin_share, member_weights, share_suffix
from selfens_pl.engine.batches import paraphrase_generations
from selfens_pl.heads.base import FusionHead
from selfens_pl.scoring.agreement import Lemmas, vote


class VoteHead(FusionHead):
    """Majority vote over the paraphrases' own answers (lemma-rule agreement, ties to the surest answer)."""

    def __init__(self, origin_share: float | str | None = "auto"):
        """
        Args:
            origin_share: The original question's (paraphrase 0's) share of the votes
                (:mod:`selfens_pl.data.origin_share`): 0.5 counts it as much as all its paraphrases together, so
                the paraphrases overturn its answer only when they agree on another; ``support`` is then the
                winner's summed vote weight (members weigh 1 on average). ``auto`` (default): 0.9 for paraphrases
                ``paraphrase`` generated, one vote per member for written ones. ``None``: one vote per member
                always (the method gets ``_equal``). A number: the method gets ``_origin{share}``.
        """
        super().__init__()
        self.origin_share = check_origin_share(origin_share)

    @property
    def method(self) -> str:  # type: ignore[override]
        return "vote" + share_suffix(self.origin_share)

    def generate(self, decoder, prompts, groups: list[Group], known=None):
        """``known[g]``: members of group ``g`` already answered (a cascade's first stage): not decoded again."""
        self.check_groups(groups)
        lemmas = Lemmas()
        return [self.decide(group, gens, lemmas=lemmas)
                for group, gens in zip(groups, paraphrase_generations(decoder, prompts, groups, known))]

    def decide(self, group: Group, gens, scores=None, lemmas=None, alternatives=None, demos=None) -> dict:
        """The vote record of ``group`` from its members' answers ``gens`` ``[N]`` (member order):
        :func:`~selfens_pl.scoring.agreement.vote` picks the winner and its support."""
        self.check_no_extras(alternatives, demos)
        answers = [g.prediction for g in gens]
        best, support = vote(answers, [g.logprobs for g in gens], lemmas, member_weights(group, self.origin_share))
        rec = self.record(group, gens[best], None, list(group["paraphrases"]))
        rec["voted_index"] = best
        rec["agreement"] = support / len(gens)  # share of the members
        rec["paraphrase_predictions"] = answers
        return rec
