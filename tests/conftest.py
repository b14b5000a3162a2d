"""Tiny real models for tests: a byte-level BPE tokenizer trained on the repo's own text and a 2-layer
``LlamaForCausalLM`` with seeded random weights, saved as a local checkpoint. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfens_pl.data import demo_few_shot, demo_path
from selfens_pl.prompts import MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, WEBQA_INSTRUCTION, PromptTemplate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _corpus() -> list[str]:
    lines = [WEBQA_INSTRUCTION, MYRIADLAMA_INSTRUCTION]
    for rec in map(json.loads, Path(demo_path()).read_text().splitlines()):
        lines += rec["paraphrases"] + rec["answers"]
    lines += [f"Q: {e['question']}\nA: {e['answer']}" for e in demo_few_shot() + MYRIADLAMA_FEW_SHOT]
    return lines


def build_tiny_model(path: Path, seed: int = 0, **overrides) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    config = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    config.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    # Larger-than-default weights make logits spread out, so argmax ties (and float-noise flips) are unlikely.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """A configured :class:`SelfEnsembleLM` on the tiny model (origin head, no stop string)."""
    from selfens_pl.module import SelfEnsembleLM

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
