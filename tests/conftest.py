"""Fixtures on tiny real models (:mod:`tiny_models`): nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import build_tiny_model  # noqa: F401  (tests import it from here too)

from selfens_pl.data.datamodule import demo_few_shot, demo_path
from selfens_pl.data.prompts import WEBQA_INSTRUCTION, PromptTemplate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture
def one_thread():
    """In-process runs on one thread: the tiny model is many times slower on two threads of a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """A configured :class:`SelfEnsembleLM` on the tiny model (origin head, no stop string)."""
    from selfens_pl.lit.module import SelfEnsembleLM

    lm = SelfEnsembleLM(model=str(tiny_model_dir), max_new_tokens=8, stop=None)
    lm.configure_model()
    return lm


@pytest.fixture
def template() -> PromptTemplate:
    return PromptTemplate(WEBQA_INSTRUCTION, demo_few_shot()[:2])


@pytest.fixture
def groups() -> list[dict]:
    """Three demo groups with ragged paraphrase lengths."""
    recs = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()[:3]]
    return [{"id": r["id"], "paraphrases": r["paraphrases"][:3], "answers": r["answers"], "confidences": None}
            for r in recs]
