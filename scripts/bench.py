"""Benchmark: ms/question for every decoding method, divided by a plain-prompt Hugging Face ``generate`` floor.

    python scripts/bench.py                       # embedded SmolLM2-135M on CPU, N=5 paraphrases, T=20 tokens
    python scripts/bench.py --random-shape llama3.2_3b --tokenizer tiny --device cuda --dtype bfloat16 \\
        --backends flex dense --batch-sizes 1 16 64 --long     # what scripts/gpu_check.sh runs

Rows: ``hf_generate`` (one plain prompt per question through ``model.generate``: with ``--hf-compile`` a static
cache and ``torch.compile``, which is HF's own auto-compile on CUDA; the floor every row is divided by), ``origin``,
``logit_avg``, FlexFusion ``concat`` / ``shared_prefix`` per attention backend, and optionally the reference code's no-cache
recompute. Every method generates exactly T tokens (EOS and the stop string are switched off), so the work compared
is equal. Each row first answers every batch once (warm-up: compilation, CUDA-graph recording), then is timed on a
second pass; ``graphs`` counts graphs compiled in the warm-up and in the timed pass (should be 0), ``peak MiB`` the
peak GPU memory of the timed pass. ``--long``: N=10 paraphrases in ``concat`` after a ~1,000-token few-shot block
(flex vs dense on time and memory). ``--budget-s`` skips rows that would start after that many seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from selfens_pl.data.datamodule import demo_few_shot, demo_path
from selfens_pl.data.prompts import WEBQA_INSTRUCTION, PromptTemplate, PromptTokenizer
from selfens_pl.engine.attention import GENERATED, dense_mask
from selfens_pl.engine.decoding import GreedyDecoder, left_pad, pad_token_id
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead
from selfens_pl.heads.flex import build_layout

SHAPES = {  # random weights in a real model's shape (for GPU timing where no checkpoint can be downloaded)
    "llama3.2_3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                        rope_theta=500000.0, tie_word_embeddings=True),
    # the tests' smoke run of these scripts on a CPU
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=4096),
}


def load(args):
    from selfens_pl.engine.models import load_model_and_tokenizer

    dtype = getattr(torch, args.dtype)
    if not args.random_shape:
        model, tok = load_model_and_tokenizer(args.model, dtype=dtype)
        return model.to(args.device), tok
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selfens_pl.engine.attention import ATTN_IMPLEMENTATION, register_attention
    from selfens_pl.engine.models import resolve_model_name

    register_attention()
    if args.tokenizer == "tiny":  # no checkpoint needed: the test suite's BPE tokenizer
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's tiny models
        from tiny_models import build_tiny_tokenizer

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
    """Demo groups; more paraphrases than the 5 written ones repeat them (timing does not read the text)."""
    recs = [json.loads(line) for line in Path(demo_path()).read_text().splitlines()]
    out = []
    for i in range(n_questions):
        r = recs[i % len(recs)]
        paraphrases = [r["paraphrases"][j % len(r["paraphrases"])] for j in range(n_paraphrases)]
        out.append({"id": f"{r['id']}-{i}", "paraphrases": paraphrases, "answers": r["answers"], "confidences": None})
    return out


def long_few_shot(tok, asked: set[str], tokens: int = 1000) -> list[dict]:
    """Few-shot examples from the demo set (questions not asked in the benchmark) until ``tokens`` prompt tokens."""
    shots = []
    for line in Path(demo_path()).read_text().splitlines():
        rec = json.loads(line)
        for question in rec["paraphrases"]:
            if question in asked:
                continue
            shots.append({"question": question, "answer": rec["answers"][0]})
            text = PromptTemplate(WEBQA_INSTRUCTION, shots).prefix
            if len(tok(text)["input_ids"]) >= tokens:
                return shots
    return shots


@torch.inference_mode()
def seed_recompute(model, prompts, group, tokens_out: int) -> list[int]:
    """The reference code's algorithm: rebuild and re-encode the whole fused sequence for every new token, batch 1."""
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


@torch.inference_mode()
def hf_generate(model, tok, prompts, batch: list[dict], tokens_out: int, compiled: bool) -> None:
    """One plain prompt per question (paraphrase 0) through ``model.generate``, exactly ``tokens_out`` tokens."""
    pad = pad_token_id(tok)
    ids, mask = left_pad([prompts.prompt_ids(g["paraphrases"][0]) for g in batch], pad, model.device)
    kwargs = dict(max_new_tokens=tokens_out, min_new_tokens=tokens_out, do_sample=False, pad_token_id=pad)
    if compiled:  # a static cache: HF compiles the decoding forward itself on CUDA (its auto-compile)
        from transformers import CompileConfig

        kwargs.update(cache_implementation="static", compile_config=CompileConfig(fullgraph=False))
        if model.device.type != "cuda":
            kwargs["compile_config"]._compile_all_devices = True
    else:
        kwargs["disable_compile"] = True
    model.generate(input_ids=ids, attention_mask=mask, **kwargs)


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def measure(run_batch, data, bs, device, warmup_full: bool, reset) -> dict:
    """Warm up (every batch once, or the first one), ``reset()`` the counters, then time a full pass; graphs
    compiled and peak memory per phase."""
    batches = [data[i:i + bs] for i in range(0, len(data), bs)]
    before = graphs_compiled()
    for batch in batches if warmup_full else batches[:1]:
        run_batch(batch)
    warm_graphs = graphs_compiled() - before
    reset()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before, start = graphs_compiled(), time.perf_counter()
    for batch in batches:
        run_batch(batch)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"ms_per_question": 1000 * seconds / len(data), "graphs_warmup": warm_graphs,
            "graphs_timed": graphs_compiled() - before,
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


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
    ap.add_argument("--compile", default="auto", choices=["auto", "true", "false"], help="--model.compile")
    ap.add_argument("--hf-compile", default="auto", choices=["auto", "true", "false"],
                    help="the hf_generate floor with a static cache + torch.compile (auto: on CUDA)")
    ap.add_argument("--seed-questions", type=int, default=2, help="questions for the slow seed reference (0: skip)")
    ap.add_argument("--long", action="store_true", help="also N=10 paraphrases, concat, ~1,000-token few-shot block")
    ap.add_argument("--long-batch-sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--long-prefix-tokens", type=int, default=1000, help="few-shot block length of the long case")
    ap.add_argument("--budget-s", type=float, default=None, help="skip rows that would start after this many seconds")
    ap.add_argument("--json", help="also write the rows as JSON here (rewritten after every row)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()

    model, tok = load(args)
    cuda = args.device.startswith("cuda")
    compile_flag = {"auto": "auto", "true": True, "false": False}[args.compile]
    hf_compiled = cuda if args.hf_compile == "auto" else args.hf_compile == "true"
    decoder = GreedyDecoder(model, tok, max_new_tokens=args.tokens, stop=None, compile=compile_flag)
    decoder.eos_ids = set()  # exactly T tokens for every method
    device_name = torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()}"
    model_name = args.random_shape and f"random {args.random_shape}" or args.model
    print(f"{model_name}, {args.dtype}, {device_name}; T={args.tokens} tokens; decoder compile={decoder.compiled}, "
          f"flex_attention compile={FlexFusion().compile}, hf_generate compile={hf_compiled}", flush=True)

    rows, skipped = [], []

    def add(case, name, bs, data, prompts, run_batch):
        if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
            skipped.append(f"{case} {name} batch {bs} (past --budget-s {args.budget_s:g})")
            return
        try:
            row = {"case": case, "method": name, "batch": bs, "questions": len(data),
                   **measure(run_batch, data, bs, args.device, warmup_full=cuda or decoder.compiled,
                             reset=decoder.stats.__init__)}
        except torch.OutOfMemoryError as err:  # e.g. a dense mask over a long fused sequence: a result, not a crash
            torch.cuda.empty_cache()
            skipped.append(f"{case} {name} batch {bs}: out of memory ({str(err).splitlines()[0][:80]})")
            print(f"{case:<34} {name:<30} {bs:>5}  out of memory", flush=True)
            return
        row["prompt_tokens_per_question"] = round(decoder.stats.prompt_tokens / len(data), 1)  # 0: not our decoder
        rows.append(row)
        print_row(rows, row)
        save()

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps({"device": device_name, "model": model_name, "rows": rows,
                                                   "not_measured": skipped}, indent=2))

    def heads(backends, layouts=("concat", "shared_prefix"), plain=True):
        out = {"origin": OriginHead(), "logit_avg": LogitFusion("avg")} if plain else {}
        for backend in backends:
            for layout in layouts:
                out[f"flex_{layout}[{backend}]"] = FlexFusion(layout=layout, backend=backend)
        return out

    print_header()
    data = groups(args.questions, args.paraphrases)
    prompts = PromptTokenizer(tok, PromptTemplate(WEBQA_INSTRUCTION, demo_few_shot()))
    case = f"N={args.paraphrases}"
    for bs in args.batch_sizes:
        floor = "hf_generate_compiled" if hf_compiled else "hf_generate"
        add(case, floor, bs, data, prompts, lambda b: hf_generate(model, tok, prompts, b, args.tokens, hf_compiled))
        for name, head in heads(args.backends).items():
            add(case, name, bs, data, prompts, lambda b, head=head: head.generate(decoder, prompts, b))
    if args.seed_questions:
        sub = data[: args.seed_questions]
        add(case, "seed no-cache recompute", 1, sub, prompts,
            lambda b: [seed_recompute(model, prompts, g, args.tokens) for g in b])
    if args.long:
        long_data = groups(args.questions, 10)
        asked = {p for g in long_data for p in g["paraphrases"]}
        long_prompts = PromptTokenizer(tok, PromptTemplate(WEBQA_INSTRUCTION, long_few_shot(tok, asked, args.long_prefix_tokens)))
        case = f"long: N=10, {len(long_prompts.prefix_ids)}-token prefix"
        for bs in args.long_batch_sizes:
            for name, head in heads(args.backends, plain=False).items():
                add(case, name, bs, long_data, long_prompts, lambda b, head=head: head.generate(decoder, long_prompts, b))
    save()
    if skipped:
        print(f"not measured: {'; '.join(skipped)}")


COLUMNS = f"{'case':<34} {'method':<30} {'batch':>5} {'ms/q':>9} {'x floor':>8} {'x origin':>9} {'peak MiB':>9} " \
          f"{'graphs':>7} {'prompt tok/q':>12}"


def print_header() -> None:
    print(COLUMNS)
    print("-" * len(COLUMNS), flush=True)


def print_row(rows: list[dict], r: dict) -> None:
    def ref(prefix):
        same = [x["ms_per_question"] for x in rows if x["case"] == r["case"] and x["batch"] == r["batch"]
                and x["method"].startswith(prefix)]
        return r["ms_per_question"] / same[0] if same else float("nan")

    peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
    print(f"{r['case']:<34} {r['method']:<30} {r['batch']:>5} {r['ms_per_question']:>9.1f} {ref('hf_generate'):>8.2f} "
          f"{ref('origin'):>9.2f} {peak:>9} {r['graphs_warmup']:>3}/{r['graphs_timed']:<3} "
          f"{r['prompt_tokens_per_question'] or '':>12}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
