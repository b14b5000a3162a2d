"""Device check for the decoder and FlexFusion on CUDA (``scripts/gpu_check.sh`` runs it, then the benchmark).

    python scripts/gpu_check.py --device cuda

1. Tiny float32 Llama: compiled ``flex_attention`` vs the dense SDPA mask, prefill logits within 1e-4 and identical
   tokens, both layouts, both position schemes, batched.
2. Tiny float32 Llama: compiled decoding (``--model.compile true``: static cache, compiled step, CUDA graphs) gives
   the same tokens as eager decoding for every head, with ragged groups and answers that stop at different steps
   (VoteHead decodes exactly as per_prompt and needs spaCy, which the GPU machine lacks, so per_prompt stands in).
3. Random weights in the Llama-3.2-3B shape, bfloat16: the prefill logits of flex and of dense are each compared with
   a float32 reference (the same weights upcast, the dense path in float32, the same inputs). bf16 kernels differ
   from each other by rounding, so neither is the truth; flex passes when its error is at most
   :data:`FLEX_ERROR_FACTOR` times dense's (max and mean absolute error over the fused final-token logits).

Prints one line per check and exits non-zero on a failure.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

from selfens_pl.data.datamodule import demo_few_shot
from selfens_pl.data.prompts import WEBQA_INSTRUCTION, PromptTemplate, PromptTokenizer
from selfens_pl.engine.decoding import GreedyDecoder
from selfens_pl.engine.models import load_model_and_tokenizer
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead

sys.path.insert(0, __file__.rsplit("/", 1)[0])
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models: the test suite's checkpoints
from bench import SHAPES, groups  # noqa: E402
from tiny_models import build_tiny_model  # noqa: E402

#: flex's bf16 error against the float32 reference may be at most this multiple of dense's.
FLEX_ERROR_FACTOR = 2.0


def flex_vs_dense(decoder, prompts, data, layout, positions, compile_flex) -> int:
    dense = FlexFusion(layout=layout, positions=positions, backend="dense")
    flex = FlexFusion(layout=layout, positions=positions, backend="flex", compile=compile_flex)
    a = decoder.prefill(dense.build_batch(decoder, prompts, data))
    b = decoder.prefill(flex.build_batch(decoder, prompts, data))
    err = (a - b).abs().max().item()
    same = [r["generation"] for r in dense.generate(decoder, prompts, data)] == \
           [r["generation"] for r in flex.generate(decoder, prompts, data)]
    ok = err <= 1e-4 and same
    print(f"  flex vs dense  {layout:<14} {positions:<10} max|diff| {err:.1e} (tol 1e-4)  same tokens: {same}  "
          f"{'OK' if ok else 'FAIL'}", flush=True)
    return int(not ok)


def compiled_vs_eager(model, tok, prompts, data) -> int:
    eager = GreedyDecoder(model, tok, max_new_tokens=10, stop=" ", compile=False)
    compiled = GreedyDecoder(model, tok, max_new_tokens=10, stop=" ", compile=True)
    heads = {"origin": OriginHead(), "per_prompt": PerPromptHead(), "avg": LogitFusion("avg"),
             "max": LogitFusion("max"), "weighted_avg": LogitFusion("weighted_avg"),
             "weighted_max": LogitFusion("weighted_max"), "prob_avg": LogitFusion("prob_avg"),
             "entropy_weighted": LogitFusion("entropy_weighted"),
             "calibrated_avg": LogitFusion("avg", calibration="question"),
             "flex_concat": FlexFusion(layout="concat", backend="flex"),
             "flex_shared_prefix": FlexFusion(layout="shared_prefix", backend="flex")}
    failures = 0
    for name, head in heads.items():
        batches = [data, data[:3]]
        a = [r["generation"] for b in batches for r in head.generate(eager, prompts, b)]
        c = [r["generation"] for b in batches for r in head.generate(compiled, prompts, b)]
        lengths = len({len(x) for x in a})
        ok = a == c
        failures += not ok
        print(f"  compiled vs eager  {name:<20} same tokens: {ok}  ({len(a)} answers, {lengths} lengths)  "
              f"{'OK' if ok else 'FAIL'}", flush=True)
    return failures


def reference_check(big, tok, prompts, data, compile_flex) -> int:
    """flex and dense (bf16) each against the float32 dense reference of the same weights."""
    ref_model = copy.deepcopy(big).float()
    ref = GreedyDecoder(ref_model, tok, max_new_tokens=4, stop=None, compile=False)
    dec = GreedyDecoder(big, tok, max_new_tokens=4, stop=None, compile=False)
    failures = 0
    for layout in ("concat", "shared_prefix"):
        truth = ref.prefill(FlexFusion(layout=layout, backend="dense").build_batch(ref, prompts, data))
        errors = {}
        for backend in ("dense", "flex"):
            head = FlexFusion(layout=layout, backend=backend, compile=compile_flex)
            diff = (dec.prefill(head.build_batch(dec, prompts, data)) - truth).abs()
            errors[backend] = (diff.max().item(), diff.mean().item())
        ok = all(errors["flex"][i] <= FLEX_ERROR_FACTOR * errors["dense"][i] for i in (0, 1))
        failures += not ok
        print(f"  vs float32  {layout:<14} max/mean |err|: dense {errors['dense'][0]:.3f}/{errors['dense'][1]:.4f}  "
              f"flex {errors['flex'][0]:.3f}/{errors['flex'][1]:.4f}  (flex <= {FLEX_ERROR_FACTOR:g} x dense)  "
              f"{'OK' if ok else 'FAIL'}", flush=True)
    del ref_model
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="eager flex_attention (the CPU reference)")
    ap.add_argument("--skip-decode", action="store_true", help="skip check 2 (compiled vs eager decoding)")
    ap.add_argument("--skip-3b", action="store_true", help="skip check 3 (the 3B shape)")
    ap.add_argument("--big-shape", default="llama3.2_3b", choices=sorted(SHAPES), help="the model shape of check 3")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    template = PromptTemplate(WEBQA_INSTRUCTION, demo_few_shot())
    data = groups(5, 3)
    for g, k in zip(data, [3, 3, 2, 3, 1]):  # ragged sizes, with confidences for the weighted rules
        g["paraphrases"], g["confidences"] = g["paraphrases"][:k], [0.7, 0.2, 0.5][:k]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        model, tok = load_model_and_tokenizer(build_tiny_model(tmp), dtype=torch.float32)
    model.to(args.device)
    prompts = PromptTokenizer(tok, template)
    print(f"1. tiny llama, float32, {args.device}: flex (compile={not args.no_compile}) vs dense", flush=True)
    decoder = GreedyDecoder(model, tok, max_new_tokens=12, stop=None, compile=False)
    for layout in ("concat", "shared_prefix"):
        for positions in ("aligned", "sequential"):
            failures += flex_vs_dense(decoder, prompts, data, layout, positions, not args.no_compile)
    if not args.skip_decode:
        print(f"2. tiny llama, float32, {args.device}: compiled decoding vs eager, every head", flush=True)
        failures += compiled_vs_eager(model, tok, prompts, data)
    if not args.skip_3b:
        from transformers import LlamaConfig, LlamaForCausalLM

        from selfens_pl.engine.attention import ATTN_IMPLEMENTATION

        config = LlamaConfig(**SHAPES[args.big_shape], bos_token_id=1, eos_token_id=2)
        config._attn_implementation = ATTN_IMPLEMENTATION
        torch.manual_seed(0)
        with torch.device(args.device):
            big = LlamaForCausalLM(config).to(torch.bfloat16).eval()
        print(f"3. random {args.big_shape} shape, bfloat16, {args.device}: flex and dense vs a float32 reference",
              flush=True)
        failures += reference_check(big, tok, prompts, groups(4, 5), not args.no_compile)
        del big
    print("gpu_check:", "PASS" if not failures else f"{failures} FAILURES", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
