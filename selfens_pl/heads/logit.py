"""``LogitFusion``: decode all paraphrases of a group together and fuse their next-token distributions.

The rules (``avg``, ``max``, ``weighted_avg``, ``weighted_max``, ``prob_avg``, ``entropy_weighted``) live in
:mod:`selfens_pl.engine.fusion`. The fused token is fed to every row of the group, so each paraphrase continues the same
answer. With ``--data.demo_blocks`` a group's rows are its members (every paraphrase x few-shot block,
:mod:`selfens_pl.data.demos`). Groups may differ in size: each is padded to the largest group of the batch with copies of
its first row, which the rule ignores (``valid``).

Calibration (``calibration=subject|question``, :mod:`selfens_pl.data.content_free`): the group's content-free prompts
ride as extra rows of the same group, after its ``n`` paraphrase rows (``n`` of them for ``subject``, one per
paraphrase; one for ``question``), are fed the same fused token (so each prior follows the answer prefix) and are
split off again by :meth:`LogitFusion.fuse`, which subtracts their log-probabilities from the paraphrase rows'
logits. The decoder only sees ``rows_per_group = n + m``. Cost: ``m`` extra cached rows per group, i.e. about 2x
the rows of the uncalibrated rule for ``subject`` and ``(n + 1) / n`` for ``question``; the shared prefix is still
encoded once per batch.
"""

from __future__ import annotations

import torch

from selfens_pl.data.content_free import Calibration, check_calibration, content_free_prompts
from selfens_pl.data.group import Group
from selfens_pl.data.origin_share import group_shape, group_share, head_share, share_suffix, weight_table
from selfens_pl.engine.batches import member_items, prompt_batch
from selfens_pl.engine.fusion import (ROW_WEIGHTED, WEIGHTED, FusionMethod, check_method, check_prior_floor,
                                     fuse_logits)
from selfens_pl.engine.members import group_valid
from selfens_pl.errors import UserError
from selfens_pl.heads.base import FusionHead, confidence_weights


class LogitFusion(FusionHead):
    """All paraphrases of each group decode as cached rows; each step's logits are fused per group."""

    training_loss = "fused"

    def __init__(self, method: FusionMethod = "avg", calibration: Calibration = "none", prior_floor: float = 0.1,
                 agreement: bool = False, origin_share: float | str | None = "auto"):
        """
        Args:
            method: Fusion rule: ``avg`` (mean logits), ``max`` (max probability), ``prob_avg`` (mean probability),
                ``entropy_weighted`` (log-probabilities weighted by softmax of minus each row's entropy, per step),
                ``weighted_avg`` / ``weighted_max`` (sampled confidences, ``--data.confidences``).
            calibration: ``none``; ``subject`` (MyriadLAMA: each paraphrase with the fact's subject replaced by
                ``N/A``, one content-free row per paraphrase); ``question`` (the question replaced by ``N/A``, one
                content-free row per group). The rule then fuses ``logits - content-free log-probabilities``.
            prior_floor: With calibration: content-free probabilities below ``prior_floor`` times their top one
                count as that floor, so only tokens the template favours are discounted (0: plain division, as
                Zhao et al.; 1: no calibration).
            agreement: Also answer every paraphrase on its own (a per_prompt pass: its cost) to fill each record's
                ``agreement``.
            origin_share: The original question's (paraphrase 0's) share of each group's weight in the rule
                (``avg``, ``prob_avg``, ``entropy_weighted``; :mod:`selfens_pl.data.origin_share`): 0.5 counts it
                as much as all its paraphrases together. ``auto`` (default): 0.9 for paraphrases ``paraphrase``
                generated, every member equal for written ones (and for the rules that weigh no rows). ``None``:
                every member equal always (the method gets ``_equal``). A number: the method gets
                ``_origin{share}``.
        """
        super().__init__()
        self.fusion = check_method(method)
        self.calibration = check_calibration(calibration)
        self.prior_floor = check_prior_floor(prior_floor)
        self.agreement = agreement
        self.origin_share = head_share(
            origin_share, self.weighs_rows,
            f"--model.head.init_args.origin_share={origin_share!r} weighs the rows of the uncalibrated "
            f"{', '.join(ROW_WEIGHTED)} rules; method={self.fusion!r} with calibration={self.calibration!r} takes none")

    @property
    def weighs_rows(self) -> bool:
        """Whether the rule can weigh its rows by the original's share (``origin_share``)."""
        return self.fusion in ROW_WEIGHTED and self.calibration == "none"

    @property
    def method(self) -> str:  # type: ignore[override]
        name = self.fusion if self.calibration == "none" else f"calibrated_{self.fusion}"
        return name + share_suffix(self.origin_share, self.weighs_rows)

    def content_free_rows(self, n: int) -> int:
        """``m``: content-free rows per group for groups padded to ``n`` paraphrases."""
        return {"none": 0, "subject": n, "question": 1}[self.calibration]

    def decoded_rows(self, members: int) -> int:
        return members + self.content_free_rows(members)

    def fuse(self, logits: torch.Tensor, weights: torch.Tensor | None = None,
             valid: torch.Tensor | None = None) -> torch.Tensor:
        """``logits [g, n + m, V]`` -> ``[g, V]``. Without calibration ``m = 0``; with it the last ``m`` rows are the
        content-free ones and ``weights`` / ``valid`` are ``[g, n + m]`` (only their first ``n`` columns count)."""
        if self.calibration == "none":
            return fuse_logits(logits, self.fusion, weights, valid)
        rows = logits.shape[1]
        n = rows // 2 if self.calibration == "subject" else rows - 1  # shapes only: no host sync
        # split, not logits[:, n:]: inductor (torch 2.13, CPU) miscompiles a slice whose bound comes from a dynamic
        # shape once the batch size goes dynamic (garbage / NaN scores; tests/test_compiled.py pins this)
        sizes = [n, rows - n]
        paraphrases, free = logits.split(sizes, dim=1)
        prior = free.log_softmax(dim=-1)  # [g, n | 1, V]
        return fuse_logits(paraphrases, self.fusion, None if weights is None else weights.split(sizes, dim=1)[0],
                           None if valid is None else valid.split(sizes, dim=1)[0], prior, self.prior_floor)

    def generate(self, decoder, prompts, groups: list[Group]):
        self.check_groups(groups)
        check_no_blocks(self, groups)
        rows = [member_items(g) for g in groups]  # every paraphrase x few-shot block
        n = max(len(r) for r in rows)
        m = self.content_free_rows(n)
        items = []
        for g, own in zip(groups, rows):
            items += padded(own, n)
            if m:
                items += [(g, p) for p in padded(content_free_prompts(g, self.calibration), m)]
        batch = prompt_batch(decoder, prompts, items, n + m)
        ragged = any(len(r) < n for r in rows)
        if ragged or m:
            valid = group_valid([len(r) for r in rows], n, decoder.device)
            if m:  # the content-free rows' own mask; the fused rule only reads the first n columns
                valid = torch.cat([valid, valid if m == n else valid[:, :1]], dim=1)
            batch.valid = batch.step_valid = valid
        if self.fusion in WEIGHTED:
            weights = confidence_weights(groups, self.fusion, decoder.device, n)
            if m:
                weights = torch.cat([weights, weights.new_zeros(len(groups), m)], dim=1)
            batch.weights = batch.step_weights = weights
        elif (weights := share_tensor(groups, self.origin_share, n, decoder.device)) is not None:
            batch.weights = batch.step_weights = weights
        gens = decoder.decode_n_tokens(batch, self.fuse, self.fuse)
        records = [self.record(g, gen, None, list(g["paraphrases"])) for g, gen in zip(groups, gens)]
        return self.add_agreement(decoder, prompts, groups, records)


def share_tensor(groups: list[Group], share: float | str | None, n: int, device) -> torch.Tensor | None:
    """``[g, n]`` each group's member weights under the setting ``share`` (``"auto"`` resolved per group;
    :func:`~selfens_pl.data.origin_share.weight_table`: all 1 for a group of one paraphrase or of written
    paraphrases under ``auto``, padding rows 1), or ``None`` when no group of the batch weighs its members."""
    if share is None:
        return None
    table = weight_table([group_shape(g) for g in groups], [group_share(g, share) for g in groups], n)
    return None if table is None else torch.tensor(table, dtype=torch.float32, device=device)


def padded(items: list, n: int) -> list:
    """``items`` (a group's paraphrases or member rows) followed by copies of the first one up to ``n`` rows (the
    copies are masked out)."""
    return list(items) + [items[0]] * (n - len(items))


def check_no_blocks(head: FusionHead, groups: list[Group]) -> None:
    """Refuse extra few-shot blocks where a head reads something written for block 0 only: calibration (each
    member would need a content-free prompt of its own block) and the ``weighted_*`` rules (confidences sampled per
    paraphrase with block 0). Nothing is silently mixed."""
    from selfens_pl.data.demos import num_blocks

    what = []
    if getattr(head, "calibration", "none") != "none":
        what.append(f"--model.head.init_args.calibration={head.calibration}")
    if getattr(head, "fusion", None) in WEIGHTED:
        what.append(f"the {head.fusion} rule")
    if not what:
        return
    for g in groups:
        if num_blocks(g) > 1:
            raise UserError(f"record {g['id']!r}: {' and '.join(what)} cannot run with --data.demo_blocks > 1 (the "
                             f"group has {num_blocks(g)} few-shot blocks; both are defined for block 0 only): use "
                             "--data.demo_blocks 1 or another rule")
