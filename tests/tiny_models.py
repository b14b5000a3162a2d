"""Tiny real models for tests and device checks: a byte-level BPE tokenizer trained on the package's own text and a
``LlamaForCausalLM`` with seeded random weights, saved as a local checkpoint. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from selfens_pl.data.datamodule import demo_few_shot, demo_path
from selfens_pl.data.prompts import MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, WEBQA_INSTRUCTION


def _corpus() -> list[str]:
    lines = [WEBQA_INSTRUCTION, MYRIADLAMA_INSTRUCTION]
    for rec in map(json.loads, Path(demo_path()).read_text().splitlines()):
        lines += rec["paraphrases"] + rec["answers"]
    lines += [f"Q: {e['question']}\nA: {e['answer']}" for e in demo_few_shot() + MYRIADLAMA_FEW_SHOT]
    return lines


def build_tiny_tokenizer(vocab_size: int = 400):
    """A Llama-style (BOS-adding) byte-level BPE tokenizer; any text tokenises."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tiny_model(path: Path, seed: int = 0, **overrides) -> Path:
    """Save a 2-layer Llama (GQA, 64 wide) and its tokenizer to ``path``; ``overrides`` change the config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    config.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**config))
    # Larger-than-default weights spread the logits out, so argmax ties (and float-noise flips) are unlikely.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
