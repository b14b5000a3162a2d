"""Built-in controls: what an ensemble of similar few-shot blocks must beat to show it does more than retrieve.

With ``--data.demo_blocks M --data.demo_selection similar`` a group's extra blocks hold the pool questions most
similar to its question (:mod:`selfens_pl.data.demos`: block 1 the five nearest, block 2 the next five, ...). Most
of what such an ensemble gains over origin may be the retrieval itself. Three controls measure that, each a head,
so ``predict`` runs it by ``class_path`` and ``sweep`` / ``report`` set it beside every method:

* :class:`SimilarPromptHead` (the kNN single prompt), one decoded row:

  - ``prompt="nearest"`` (``knn_prompt``): the original question (paraphrase 0) with block 1, the most similar
    demonstrations, as its only few-shot block: exactly the ensemble's member (paraphrase 0, block 1);
  - ``prompt="all"`` (``knn_prompt_all``): one prompt holding every demonstration of the extra blocks 1..M-1
    (10 for M = 3), least similar first, so the most similar one stands right before the question;

* :class:`NearestAnswerHead` (the copy), no model, 0 decoded rows:

  - ``rule="nearest"`` (``copy_nearest``): the answer of block 1's first demonstration (the nearest question);
  - ``rule="vote"`` (``copy_vote``): the answer most of the extra blocks' demonstrations agree on (the lemma rule
    of :mod:`selfens_pl.scoring.agreement`; ties to the more similar demonstration): a nearest-neighbour vote;

* :class:`SelfConsistencyHead` (Wang et al. 2022) at a matched budget: one prompt (the kNN ``nearest`` prompt where
  the group has extra blocks, else origin; or origin always) sampled ``N`` times, ``N`` the ensemble's decoded rows
  (``samples="members"``: the group's paraphrases x blocks) or a given number, and the majority answer under the
  lemma rule (ties: the earliest sample). The samples come from the package's sampler
  (:class:`~selfens_pl.engine.sampling.Sampler`): each prompt encoded once, its KV cache copied ``N`` times, every
  group's samples decoded together; row ``i`` of a group draws from its own generator seeded by ``(seed, group id,
  i)``, so a group's samples do not depend on the batch it rides in (up to the float noise of a padded batch, which
  would have to land on a sampling boundary). ``temperature=0`` is greedy: every sample is the greedy answer of the
  prompt, so the head answers exactly as origin / ``knn_prompt`` (tested).

The kNN prompt and the copy need extra few-shot blocks: a group without any is refused, naming the flag. That the
blocks are *similar* is the data's setting; ``sweep`` refuses these controls unless ``--data.demo_selection
similar`` (with random blocks they measure a random block, not retrieval).

:func:`is_control` tells a control's runs from the methods' (``sweep`` and ``report`` compare every method with the
strongest control: :func:`selfens_pl.scoring.gains.strongest`).
"""

from __future__ import annotations

from typing import Literal

from selfens_pl.data.demos import num_blocks, stable_seed
from selfens_pl.data.group import Demo, Group
from selfens_pl.engine.batches import prompt_batch
from selfens_pl.engine.decoding import Generation, no_fusion
from selfens_pl.engine.members import demo_answers
from selfens_pl.engine.sampling import Sampler
from selfens_pl.errors import InternalError, UserError
from selfens_pl.heads.base import FusionHead
from selfens_pl.scoring.agreement import Lemmas, vote

#: Method-name prefixes of the controls' runs (:func:`is_control`).
CONTROL_PREFIXES = ("knn_prompt", "copy_", "self_consistency")
BLOCKS_FLAG = "--data.demo_blocks >= 2 with --data.demo_selection similar"


def is_control(method: str) -> bool:
    """Whether a run of method ``method`` is one of the built-in controls (its method starts with one of
    :data:`CONTROL_PREFIXES`)."""
    return str(method).startswith(CONTROL_PREFIXES)


def reads_similar_blocks(head: FusionHead) -> bool:
    """Whether ``head`` asks with, or copies from, the group's similar blocks: a kNN prompt, a copy, or
    self-consistency over the kNN prompt (which, without extra blocks, samples origin's prompt)."""
    return isinstance(head, (SimilarPromptHead, NearestAnswerHead)) or \
        (isinstance(head, SelfConsistencyHead) and head.prompt == "knn")


def check_selection(heads: list[FusionHead], demo_selection: str, largest_m: int,
                    flag: str = "--ms with an M >= 2 (e.g. 1,3)") -> None:
    """One error naming the flag when a control that reads similar blocks would read random ones
    (``demo_selection``), or a kNN prompt or copy has no extra block at any ``M`` (``largest_m``; ``flag``: what
    the caller's user sets it with)."""
    for head in heads:
        if reads_similar_blocks(head) and largest_m > 1 and demo_selection != "similar":
            raise UserError(f"{head.method} is a control for similar demonstrations; --data.demo_selection is "
                            f"{demo_selection!r}: run with --data.demo_selection similar")
        if isinstance(head, (SimilarPromptHead, NearestAnswerHead)) and largest_m < 2:
            raise UserError(f"{head.method} needs extra few-shot blocks: give {flag} and --data.demo_selection "
                            "similar")


def init_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else one error naming the head's setting."""
    if value not in choices:
        raise UserError(f"--model.head.init_args.{name}={value!r}: choose {' or '.join(choices)}")
    return value


def check_blocks(groups: list[Group], method: str) -> None:
    """One error naming the record and the flag for a group without extra few-shot blocks."""
    for group in groups:
        if num_blocks(group) < 2:
            raise UserError(f"record {group.get('id')!r}: {method} asks with the question's most similar "
                            f"demonstrations, and the group has no extra few-shot block: run with {BLOCKS_FLAG}")


def knn_demos(group: Group) -> list[Demo]:
    """``[5 (M-1)]`` every demonstration of ``group``'s extra blocks, least similar first: block M-1 backwards, ...,
    block 1 backwards, so the most similar demonstration (block 1's first) comes last, right before the question."""
    return [d for block in reversed(group.get("blocks") or []) for d in reversed(block)]


def nearest_answer(group: Group) -> str:
    """The answer of the first demonstration of block 1 (the most similar one under ``similar`` selection)."""
    answers = demo_answers(group)
    if not answers:
        raise InternalError(f"record {group.get('id')!r}: no extra few-shot block to copy an answer from")
    return answers[0]


def demos_vote(group: Group, lemmas: Lemmas | None = None) -> tuple[str, float]:
    """``(answer, support)``: the answer most of the extra blocks' demonstrations agree on under the lemma rule
    (:func:`~selfens_pl.scoring.agreement.vote`), ties to the more similar demonstration (block 1 first, each block
    most similar first: equal log-probabilities leave the tie to the lower index), and how many agree with it."""
    answers = demo_answers(group)
    if not answers:
        raise InternalError(f"record {group.get('id')!r}: no extra few-shot block to vote over")
    best, support = vote(answers, [[0.0]] * len(answers), lemmas)
    return answers[best], support


class BlocksControl(FusionHead):
    """A control that reads the group's extra blocks (kNN prompt, copy): refuses a group without any. No training
    loss (``fit`` refuses it, as vote and rerank)."""

    def check_groups(self, groups: list[Group]) -> None:
        super().check_groups(groups)
        check_blocks(groups, self.method)


class SimilarPromptHead(BlocksControl):
    """The kNN single prompt: paraphrase 0 asked once with the group's most similar demonstrations (module
    docstring), one row per group, batched across groups."""

    def __init__(self, prompt: Literal["nearest", "all"] = "nearest"):
        """
        Args:
            prompt: ``nearest``: block 1 (the five most similar demonstrations) as the only few-shot block, the
                member (paraphrase 0, block 1); ``all``: every demonstration of blocks 1..M-1 in one prompt, the
                most similar nearest the question.
        """
        super().__init__()
        self.prompt = init_choice("prompt", prompt, ("nearest", "all"))

    @property
    def method(self) -> str:  # type: ignore[override]
        return "knn_prompt" if self.prompt == "nearest" else "knn_prompt_all"

    def decoded_rows(self, members: int) -> int:
        return 1

    def item(self, group: Group) -> tuple[Group, str, int]:
        """The prompt as :func:`~selfens_pl.engine.batches.prompt_batch` takes it: ``(group, paraphrase 0, block)``;
        for ``all`` a copy of the group whose one extra block is :func:`knn_demos` (tokenised once per group, like
        any block)."""
        if self.prompt == "nearest":
            return group, group["paraphrases"][0], 1
        return {"id": group["id"], "paraphrases": group["paraphrases"][:1], "blocks": [knn_demos(group)]}, \
            group["paraphrases"][0], 1

    def generate(self, decoder, prompts, groups: list[Group]):
        self.check_groups(groups)
        gens = decoder.decode_n_tokens(prompt_batch(decoder, prompts, [self.item(g) for g in groups]), no_fusion,
                                       no_fusion)
        return [self.answer(g, gen) for g, gen in zip(groups, gens)]

    def answer(self, group: Group, gen: Generation) -> dict:
        rec = self.record(group, gen, 0, group["paraphrases"][:1])
        rec["block_index"] = 1  # nearest: the ensemble's member (0, 1)
        if self.prompt == "all":
            rec["block_index"] = None
            rec["demonstrations"] = sum(len(b) for b in group["blocks"])
        return rec

    def decide(self, group: Group, gens, scores=None, lemmas=None, alternatives=None, demos=None) -> dict:
        """``nearest`` only (the sweep's): the answer of member (paraphrase 0, block 1), ``gens[K]`` in member
        order (block-major). ``all`` asks a prompt no member asks: it has no decide."""
        self.check_no_extras(alternatives, demos)
        if self.prompt != "nearest":
            raise InternalError("knn_prompt_all asks a prompt no member asks: it has no decide()")
        self.check_groups([group])
        return self.answer(group, gens[len(group["paraphrases"])])


class NearestAnswerHead(BlocksControl):
    """The copy: no model; a demonstration's answer (``nearest``) or the demonstrations' vote (``vote``)."""

    def __init__(self, rule: Literal["nearest", "vote"] = "nearest"):
        """
        Args:
            rule: ``nearest``: block 1's first demonstration's answer; ``vote``: the answer most of the extra blocks'
                demonstrations agree on (lemma rule, ties to the more similar one).
        """
        super().__init__()
        self.rule = init_choice("rule", rule, ("nearest", "vote"))

    @property
    def method(self) -> str:  # type: ignore[override]
        return f"copy_{self.rule}"

    def decoded_rows(self, members: int) -> int:
        return 0

    def generate(self, decoder, prompts, groups: list[Group]):
        self.check_groups(groups)
        lemmas = Lemmas()
        return [self.decide(g, [], lemmas=lemmas) for g in groups]

    def decide(self, group: Group, gens, scores=None, lemmas=None, alternatives=None, demos=None) -> dict:
        """The copied answer of ``group`` (cut to the blocks asked); ``gens`` are not read (no model)."""
        self.check_no_extras(alternatives, demos)
        self.check_groups([group])
        if self.rule == "nearest":
            answer, agreement = nearest_answer(group), None
        else:
            answer, support = demos_vote(group, lemmas)
            agreement = support / len(demo_answers(group))
        rec = self.record(group, Generation(text=f" {answer.strip()}"), None, group["paraphrases"][:1])
        rec["agreement"] = agreement  # vote: the share of the demonstrations agreeing with it
        rec["demo_answers"] = demo_answers(group)
        return rec


def sample_seed(seed: int, group_id, index: int) -> int:
    """The seed of sample ``index`` of group ``group_id``: :func:`~selfens_pl.data.demos.stable_seed` of the three
    (it depends on nothing else: not the batch, not the order of the groups), within the sampler's 63 bits."""
    return stable_seed(str(seed), str(group_id), str(index)) % (2 ** 63)


class SelfConsistencyHead(FusionHead):
    """One prompt sampled ``N`` times, the majority answer (self-consistency, Wang et al. 2022): the ensemble's
    budget spent on one prompt."""

    def __init__(self, samples: int | Literal["members"] = "members", temperature: float = 0.7, top_p: float = 1.0,
                 seed: int = 0, prompt: Literal["knn", "origin"] = "knn"):
        """
        Args:
            samples: ``N``, decoded rows per group: ``members`` (default) the group's members (paraphrases x
                few-shot blocks, what per_prompt, vote and rerank decode), or a number.
            temperature: Sampling temperature; ``0``: greedy (every sample is the prompt's greedy answer).
            top_p: Nucleus mass (``1``: the full distribution).
            seed: Seeds every group's samples (with the group id and the sample index).
            prompt: ``knn``: paraphrase 0 with block 1 (the kNN ``nearest`` prompt) where the group has extra blocks,
                else origin's prompt; ``origin``: origin's prompt always.
        """
        super().__init__()
        if samples != "members" and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise UserError(f"--model.head.init_args.samples={samples!r}: give a number >= 1 or members")
        if temperature < 0:
            raise UserError(f"--model.head.init_args.temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise UserError(f"--model.head.init_args.top_p must be in (0, 1], got {top_p}")
        self.samples, self.temperature, self.top_p, self.seed = samples, float(temperature), float(top_p), int(seed)
        self.prompt = init_choice("prompt", prompt, ("knn", "origin"))

    @property
    def method(self) -> str:  # type: ignore[override]
        """``self_consistency_<prompt>``, plus each setting away from its default (so two heads of a sweep differ)."""
        name = f"self_consistency_{self.prompt}"
        if self.samples != "members":
            name += f"_n{self.samples}"
        if self.temperature != 0.7:
            name += f"_t{self.temperature:g}"
        if self.top_p != 1.0:
            name += f"_p{self.top_p:g}"
        return name + (f"_seed{self.seed}" if self.seed else "")

    def decoded_rows(self, members: int) -> int:
        return members if self.samples == "members" else int(self.samples)

    def item(self, group: Group) -> tuple[Group, str, int]:
        """The prompt sampled: ``(group, paraphrase 0, block)``, block 1 for ``knn`` where the group has one."""
        block = 1 if self.prompt == "knn" and num_blocks(group) > 1 else 0
        return group, group["paraphrases"][0], block

    def sampled(self, decoder, prompts, groups: list[Group]) -> list[list[Generation]]:
        """``[g][N_g]`` every group's samples of its prompt (:meth:`item`). Groups of equal ``N`` share one sampling
        pass (the sampler copies every prompt's cache ``N`` times); ragged groups make one pass per distinct ``N``."""
        sampler = Sampler(decoder, self.temperature, self.top_p, decoder.max_new_tokens, stop=decoder.stop)
        sizes = [self.decoded_rows(len(g["paraphrases"]) * num_blocks(g)) for g in groups]
        out: list[list[Generation]] = [[] for _ in groups]
        for n in sorted(set(sizes)):
            mine = [i for i, size in enumerate(sizes) if size == n]
            batch = prompt_batch(decoder, prompts, [self.item(groups[i]) for i in mine])
            seeds = [sample_seed(self.seed, groups[i]["id"], j) for i in mine for j in range(n)]
            gens = sampler.sample(batch, seeds, repeat=n)
            for pos, i in enumerate(mine):
                out[i] = gens[pos * n:(pos + 1) * n]
        return out

    def generate(self, decoder, prompts, groups: list[Group]):
        self.check_groups(groups)
        lemmas = Lemmas()
        return [self.vote(g, own, lemmas) for g, own in zip(groups, self.sampled(decoder, prompts, groups))]

    def vote(self, group: Group, gens: list[Generation], lemmas: Lemmas | None = None) -> dict:
        """The record of ``group`` from its samples ``gens [N]``: the majority answer under the lemma rule, ties to
        the earliest sample; ``agreement`` the share of samples agreeing with it."""
        answers = [g.prediction for g in gens]
        best, support = vote(answers, [[0.0]] * len(answers), lemmas)
        _, _, block = self.item(group)
        rec = self.record(group, gens[best], 0, group["paraphrases"][:1])
        rec.update(agreement=support / len(gens), voted_index=best, sample_predictions=answers, block_index=block,
                   decoded_rows=len(gens))
        return rec
