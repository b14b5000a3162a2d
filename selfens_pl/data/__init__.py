"""The data layer: records and their sources (WebQuestions, MyriadLAMA), prompt templates, few-shot demonstration
blocks, content-free prompts and the ``ParaphraseDataModule``. Imports nothing above the package's base modules.

``selfens_pl.data.ParaphraseDataModule`` (the class LightningCLI is built with) stays importable from here.
"""

from __future__ import annotations


def __getattr__(name: str):
    # lazy: importing selfens_pl.data.records must not import Lightning and the DataModule
    if name in ("ParaphraseDataModule", "load_groups", "demo_path", "demo_few_shot"):
        from selfens_pl.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'selfens_pl.data' has no attribute {name!r}")
