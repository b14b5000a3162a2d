"""The fusion-head contract shared by every head.

A head turns a batch of paraphrase groups into answer records using a :class:`~selfens_pl.engine.decoding.GreedyDecoder`
(the model) and a :class:`~selfens_pl.data.prompts.PromptTokenizer` (the prompt format). Heads are ``nn.Module``s so
that a head with parameters (none yet) trains with the LM, and so LightningCLI picks one by ``class_path``.

A head is its decision (:meth:`FusionHead.decide`, where it has one: the record of a group from its members' answers
already decoded, the same decision its ``generate`` takes over the answers it decodes), its ``generate``, its
training loss (:attr:`FusionHead.training_loss`) and how many rows it decodes per group (its cost). What others may
do with a head is theirs to know: how the sweep reuses one engine pass for it is the sweep's
(:func:`selfens_pl.sweep.plan.plan_for`), what a cascade's ensemble must be is the cascade's
(:mod:`selfens_pl.heads.cascade`).
"""

from __future__ import annotations

import torch
from torch import nn

from selfens_pl.data.group import Group
from selfens_pl.data.origin_share import applied_share
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.batches import paraphrase_generations
from selfens_pl.engine.decoding import Generation, GreedyDecoder
from selfens_pl.errors import InternalError, UserError
from selfens_pl.scoring.agreement import Lemmas, agreement_share


class FusionHead(nn.Module):
    """Base class. Subclasses implement :meth:`generate`.

    ``generate(decoder, prompts, groups) -> records``: ``groups`` are :class:`~selfens_pl.data.group.Group` dicts;
    each record is ``{id, method, paraphrase_index, paraphrases, generation, prediction, answers, mean_prob,
    agreement}`` (``paraphrase_index`` is None when the record fuses several paraphrases).

    Confidence of a record: ``mean_prob``, the mean probability of its answer's tokens under the distribution they
    were picked from (fused, for fused heads; ``None`` for an empty answer), and ``agreement``, the share of the
    group's paraphrases whose own answer agrees with it (:mod:`selfens_pl.scoring.agreement`). ``agreement`` is ``None``
    unless those per-paraphrase answers were computed: per_prompt and vote have them for free; the fused heads and
    origin decode them only with ``agreement=True`` (a per_prompt pass over the same groups: its cost).
    """

    #: Name written to outputs and summaries.
    method: str = "base"
    training_loss: str | None = None  #: fit's loss: origin, members, fused, flex (lit/training.py); None: refused
    #: Also answer every paraphrase on its own and fill each record's ``agreement`` (heads that offer the flag).
    agreement: bool = False

    @property
    def label(self) -> str:
        """The name of this head's runs in a sweep: its method, plus any setting that tells two heads apart and
        that the method leaves out."""
        return self.method

    def decoded_rows(self, members: int) -> int:
        """Greedy rows (decode streams) this head decodes for a group of ``members`` members: one per member."""
        return members

    def decide(self, group: Group, gens: list[Generation], scores=None, lemmas=None, alternatives=None,
               demos=None) -> dict:
        """The record of ``group`` from its members' already decoded answers, without decoding (heads that have
        one): what ``generate`` answers from the same answers.

        Args:
            group: The group, cut to the members asked (its paraphrases x few-shot blocks).
            gens: ``[N]`` each member's own greedy answer, in member order (:func:`selfens_pl.data.demos.members`).
            scores: ``scores(candidates) -> [N][C]``, the sequence log-probability of each candidate answer
                (:class:`~selfens_pl.scoring.rescoring.Candidate`) under each member's prompt (heads that rescore).
            lemmas: A shared :class:`~selfens_pl.scoring.agreement.Lemmas` (each answer lemmatised once).
            alternatives: ``[N][first_tokens - 1]`` each member's answers from its 2nd.. most likely first token
                (a RerankHead with ``first_tokens > 1``, a cascade escalating to one), else ``None``.
            demos: ``[D] (prediction, tokens)`` the answers of the group's demonstrations
                (``RerankHead(demo_answers=True)``), else ``None``.
        """
        raise NotImplementedError(f"{type(self).__name__} decodes its own answers: it has no decide()")

    def generate(self, decoder: GreedyDecoder, prompts: PromptTokenizer, groups: list[Group]) -> list[dict]:
        raise NotImplementedError

    def check_no_extras(self, alternatives, demos) -> None:
        """A head that reads only its members' greedy answers is handed no alternatives or demonstration answers
        (a caller that passes them expects them read: an InternalError, not a silent drop)."""
        if alternatives is not None or demos is not None:
            raise InternalError(f"{self.method}: decide() takes no alternatives or demonstration answers "
                                f"(alternatives given: {alternatives is not None}, demonstration answers given: "
                                f"{demos is not None})")

    def check_groups(self, groups: list[Group]) -> None:
        """One clear error naming the record for input this head cannot answer. Groups may differ in size."""
        for group in groups:
            if not group.get("paraphrases"):
                raise UserError(f"record {group.get('id')!r}: empty paraphrase list")

    def record(self, group: Group, gen: Generation, paraphrase_index: int | None, paraphrases: list[str]) -> dict:
        """``group``'s record answering ``gen``. A head that takes ``origin_share`` also says what the group's
        original question got (``"origin_share"``: ``auto`` resolved for the group, ``None`` when every member
        weighed the same; :func:`~selfens_pl.data.origin_share.applied_share`)."""
        rec = {
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
        if hasattr(self, "origin_share"):
            rec["origin_share"] = applied_share(group, self.origin_share)
        return rec

    def add_agreement(self, decoder: GreedyDecoder, prompts: PromptTokenizer, groups: list[Group],
                      records: list[dict]) -> list[dict]:
        """With ``self.agreement``: answer each paraphrase on its own (one batched per_prompt pass) and fill every
        record's ``agreement`` and ``paraphrase_predictions``. Records are one per group, in group order."""
        if not self.agreement:
            return records
        lemmas = Lemmas()
        for rec, gens in zip(records, paraphrase_generations(decoder, prompts, groups)):
            answers = [g.prediction for g in gens]
            rec["agreement"] = agreement_share(rec["prediction"], answers, lemmas)
            rec["paraphrase_predictions"] = answers
        return records


def confidence_weights(groups: list[Group], method: str, device, n: int | None = None) -> torch.Tensor:
    """``[g, n]`` float weights from each group's ``confidences`` (padded with 0 to ``n`` for ragged groups), or a
    ValueError naming the record."""
    n = n or max(len(g["paraphrases"]) for g in groups)
    weights = []
    for group in groups:
        conf = group.get("confidences")
        if conf is None or len(conf) != len(group["paraphrases"]):
            raise UserError(
                f"record {group['id']!r}: method={method} needs one confidence per paraphrase "
                f"(got {None if conf is None else len(conf)} for {len(group['paraphrases'])} paraphrases); "
                "run `python -m selfens_pl confidence` or point --data.confidences at a confidence file"
            )
        if method == "weighted_avg" and sum(conf) <= 0:
            raise UserError(f"record {group['id']!r}: method=weighted_avg: the confidences sum to 0; weights "
                             "cannot be normalised")
        weights.append([float(c) for c in conf] + [0.0] * (n - len(conf)))
    return torch.tensor(weights, dtype=torch.float32, device=device)
