"""The paraphrase group: one question asked several ways, the unit every head answers and the sweep scores.

A group travels as a plain ``dict`` typed by :class:`Group` (a ``TypedDict``: no conversion anywhere, so any code
that builds or reads groups as dicts keeps working; a public API may wrap it at its own boundary). Every field is
documented here, once; the loaders (:func:`selfens_pl.data.datamodule.load_groups`, the sources in
:mod:`selfens_pl.data.sources`) build groups, :func:`selfens_pl.data.demos.attach_blocks` adds ``blocks``.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class Demo(TypedDict):
    """One demonstration of a few-shot block: a question and the answer it is shown with."""

    question: str
    answer: str


class Group(TypedDict):
    """One question and its paraphrases, with what is known about them.

    Attributes:
        id: The record's id (a string, unique in its file): what every output record is keyed by.
        paraphrases: ``[K]`` the ways of asking, paraphrase 0 the original question (origin asks it alone). Never
            empty (the heads refuse an empty list, naming the record).
        answers: The gold answers (aliases), possibly empty when a file has none (``predict`` still answers it;
            ``sweep`` refuses it, since it scores against them).
        confidences: ``[K]`` one sampled confidence in ``[0, 1]`` per paraphrase (``python -m selfens_pl
            confidence`` or ``--data.confidences``), read by the ``weighted_*`` LogitFusion rules; ``None`` when not
            sampled.
        paraphraser: The model that generated the paraphrases (a file written by ``python -m selfens_pl
            paraphrase``); absent for written ones. Its presence is what ``origin_share: auto`` reads
            (:func:`selfens_pl.data.origin_share.is_generated`).
        subject: MyriadLAMA: the fact's subject (``None`` when it cannot be recovered), which ``calibration:
            subject`` masks in its content-free prompts (:mod:`selfens_pl.data.content_free`); absent elsewhere.
        blocks: ``[M - 1]`` the extra few-shot blocks the group is asked with, each a list of :class:`Demo`
            (:mod:`selfens_pl.data.demos`; block 0 is the template's own and is not listed); absent or empty: the
            template's block only.
    """

    id: str
    paraphrases: list[str]
    answers: list[str]
    confidences: list[float] | None
    paraphraser: NotRequired[str]
    subject: NotRequired[str | None]
    blocks: NotRequired[list[list[Demo]]]
