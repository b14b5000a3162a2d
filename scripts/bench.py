"""Benchmark: ms/question for origin, logit avg and FlexFusion, against the seed's no-cache batch-1 recompute.

    python scripts/bench.py                       # embedded SmolLM2-135M on CPU, N=5 paraphrases, T=20 tokens
    python scripts/bench.py --random-shape llama3.2_3b --device cuda --dtype bfloat16 --backends flex dense

Every method generates exactly T tokens (EOS and the stop string are switched off) so the work compared is equal.
The seed reference re-runs the whole fused sequence (shared-prefix layout, the dense mask) through the model for
every new token at batch size 1, without a KV cache; it is implemented here only as the yardstick.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from selfens_pl.attention import GENERATED, FlexSettings, dense_mask
from selfens_pl.data import demo_few_shot, demo_path
from selfens_pl.decoding import GreedyDecoder
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead
from selfens_pl.heads.flex import build_layout
from selfens_pl.prompts import WEBQA_INSTRUCTION, PromptTemplate, PromptTokenizer

SHAPES = {  # random weights in a real model's shape (for GPU timing where no checkpoint can be downloaded)
    "llama3.2_3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                        rope_theta=500000.0, tie_word_embeddings=True),
}


def load(args):
    from selfens_pl.models import load_model_and_tokenizer

    dtype = getattr(torch, args.dtype)
    if not args.random_shape:
        model, tok = load_model_and_tokenizer(args.model, dtype=dtype)
        return model.to(args.device), tok
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selfens_pl.attention import ATTN_IMPLEMENTATION, register_attention
    from selfens_pl.models import resolve_model_name

    register_attention()
    if args.tokenizer == "tiny":  # no checkpoint needed: the test suite's BPE tokenizer
        from selfens_pl.testing import build_tiny_tokenizer

        tok = build_tiny_tokenizer()
    else:
        tok = AutoTokenizer.from_pretrained(resolve_model_name(args.tokenizer))
    config = LlamaConfig(**SHAPES[args.random_shape], bos_token_id=tok.bos_token_id or 1, eos_token_id=2)
    config._attn_implementation = ATTN_IMPLEMENTATION
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval(), tok


def groups(n_questions: int, n_paraphrases: int) -> list[dict]:
    recs = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()]
    return [{"id": r["id"], "paraphrases": r["paraphrases"][:n_paraphrases], "answers": r["answers"],
             "confidences": None} for r in recs[:n_questions]]


@torch.inference_mode()
def seed_recompute(model, prompts, group, tokens_out: int) -> list[int]:
    """The seed's algorithm: rebuild and re-encode the whole fused sequence for every new token, batch 1."""
    lay = build_layout(prompts, group["paraphrases"], "shared_prefix", "sequential")
    tokens, segments, out = list(lay.tokens), list(lay.segments), []
    device = next(model.parameters()).device
    for _ in range(tokens_out):
        ids = torch.tensor([tokens], device=device)
        mask = dense_mask(torch.tensor([segments], device=device))
        logits = model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(len(tokens), device=device)[None],
                       use_cache=False).logits
        nxt = int(logits[0, -1].argmax())
        tokens.append(nxt), segments.append(GENERATED), out.append(nxt)
    return out


def timed(fn, device) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--random-shape", choices=sorted(SHAPES), help="random weights in this model's shape")
    ap.add_argument("--tokenizer", default="smollm2-135m-instruct", help="tokenizer for --random-shape ('tiny': the tests' BPE)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--paraphrases", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--backends", nargs="+", default=["dense"], choices=["dense", "flex"])
    ap.add_argument("--seed-questions", type=int, default=2, help="questions for the slow seed reference (0: skip)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)

    model, tok = load(args)
    prompts = PromptTokenizer(tok, PromptTemplate(WEBQA_INSTRUCTION, demo_few_shot()))
    decoder = GreedyDecoder(model, tok, max_new_tokens=args.tokens, stop=None)
    decoder.eos_ids = set()  # exactly T tokens for every method
    data = groups(args.questions, args.paraphrases)
    heads = {"origin": OriginHead(), "logit_avg": LogitFusion("avg")}
    for backend in args.backends:
        for layout in ("concat", "shared_prefix"):
            heads[f"flex_{layout}[{backend}]"] = FlexFusion(layout=layout, backend=backend)

    rows = []
    for bs in args.batch_sizes:
        for name, head in heads.items():
            run = lambda: [head.generate(decoder, prompts, data[i:i + bs]) for i in range(0, len(data), bs)]
            head.generate(decoder, prompts, data[:bs])  # warm-up (and, for compiled flex, compilation)
            decoder.stats.__init__()
            seconds = timed(run, args.device)
            rows.append({"method": name, "batch": bs, "ms_per_question": 1000 * seconds / len(data),
                         "prompt_tokens_per_question": decoder.stats.prompt_tokens / len(data),
                         "forward_calls": decoder.stats.forward_calls})
    if args.seed_questions:
        sub = data[: args.seed_questions]
        seconds = timed(lambda: [seed_recompute(model, prompts, g, args.tokens) for g in sub], args.device)
        rows.append({"method": "seed no-cache recompute (shared_prefix)", "batch": 1,
                     "ms_per_question": 1000 * seconds / len(sub), "prompt_tokens_per_question": float("nan"),
                     "forward_calls": args.tokens * len(sub)})

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    model_name = args.random_shape and f"random {args.random_shape}" or args.model
    print(f"\n{model_name}, {args.dtype}, {device_name}; N={args.paraphrases} paraphrases, T={args.tokens} tokens, "
          f"{len(data)} questions; flex compile={FlexSettings.compile}")
    seed = next((r["ms_per_question"] for r in rows if r["method"].startswith("seed")), None)
    origin = {r["batch"]: r["ms_per_question"] for r in rows if r["method"] == "origin"}
    print(f"{'method':<40} {'batch':>5} {'ms/question':>12} {'x origin':>9} {'seed / this':>12} {'prompt tok/q':>13}")
    for r in rows:
        vs_origin = r["ms_per_question"] / origin[r["batch"]] if r["batch"] in origin else float("nan")
        speedup = seed / r["ms_per_question"] if seed else float("nan")
        print(f"{r['method']:<40} {r['batch']:>5} {r['ms_per_question']:>12.1f} {vs_origin:>9.2f} {speedup:>12.1f} "
              f"{r['prompt_tokens_per_question']:>13.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
