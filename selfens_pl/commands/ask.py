"""Ask one question with every method side by side.

    python -m selfens_pl ask "what is the capital of france?" \\
        --paraphrases "which city is the capital of france?" "what city is france's capital?"

The question is paraphrase 0 (what ``origin`` answers); ``--paraphrases`` adds the others. The model is loaded once
and the group is answered by ``origin``, ``per_prompt`` (each paraphrase on its own), LogitFusion ``avg`` and
``max``, and FlexFusion ``concat`` and ``shared_prefix`` (dense attention backend on CPU, ``auto`` otherwise), then
a table method -> answer is printed. ``--paraphrases`` with no values asks the question alone (every method then
answers as ``origin`` does). Without ``--paraphrases`` the model writes ``--num_paraphrases`` of them itself, with the
paraphrase tool's method (:func:`selfens_pl.scoring.paraphrasing.paraphrase_groups`: seeded sampling, empty or
duplicate paraphrases regenerated with new seeds).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from selfens_pl.data.datamodule import demo_few_shot
from selfens_pl.data.prompts import WEBQA_INSTRUCTION, PromptTemplate
from selfens_pl.engine.models import EMBEDDED_MODEL
from selfens_pl.errors import UserError
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead
from selfens_pl.lit.module import SelfEnsembleLM
from selfens_pl.scoring.paraphrasing import paraphrase_groups, paraphrase_sampler


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m selfens_pl ask", allow_abbrev=False,
        description="Answer one question with every self-ensemble method side by side.")
    parser.add_argument("question", help="The question (paraphrase 0, the one origin answers)")
    parser.add_argument("--paraphrases", nargs="*", default=None, metavar="P",
                        help="Other phrasings of the question (given with no values: the question alone; "
                             "left out: the model generates --num_paraphrases of them)")
    parser.add_argument("--num_paraphrases", type=int, default=4,
                        help="Paraphrases to generate when --paraphrases is left out (default 4)")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the paraphrase sampling (slot r: seed + r)")
    parser.add_argument("--temperature", type=float, default=1.5, help="Paraphrase sampling temperature")
    parser.add_argument("--top_p", type=float, default=0.9, help="Paraphrase nucleus sampling mass")
    parser.add_argument("--model", default=EMBEDDED_MODEL,
                        help=f"Alias, local directory or hub id (default: {EMBEDDED_MODEL}, embedded)")
    parser.add_argument("--max_new_tokens", type=int, default=20, help="Most tokens generated per answer")
    parser.add_argument("--instruction", default=WEBQA_INSTRUCTION, help="Instruction line (default: WebQA's)")
    parser.add_argument("--zero_shot", action="store_true",
                        help="No few-shot examples (default: the demo's five WebQuestions examples)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return parser.parse_args(argv)


def build_heads(device_type: str) -> list:
    """Every method, in display order (FlexFusion uses the dense backend on CPU, ``auto`` otherwise)."""
    backend = "dense" if device_type == "cpu" else "auto"
    return [OriginHead(), PerPromptHead(), LogitFusion("avg"), LogitFusion("max"),
            FlexFusion(layout="concat", backend=backend), FlexFusion(layout="shared_prefix", backend=backend)]


def generate_paraphrases(decoder, question: str, k: int, seed: int = 42, temperature: float = 1.5,
                         top_p: float = 0.9, max_new_tokens: int = 30, max_retries: int = 3) -> tuple[list[str], list[str]]:
    """``k`` paraphrases of ``question`` sampled with ``decoder``'s model (the paraphrase tool's prompt and retry
    rule); returns ``(paraphrases, issues)``, the question itself not included."""
    sample = paraphrase_sampler(decoder, temperature, top_p, max_new_tokens)
    [record] = paraphrase_groups(sample, [{"id": "ask", "paraphrases": [question], "answers": []}], k, seed,
                                 max_retries)
    issues = [f"{k - len(record['paraphrases']) + 1} of {k} paraphrases still empty or duplicate after "
              f"{max_retries} retries: left out"] if record["short"] else []
    return record["paraphrases"][1:], issues


def row_name(record: dict) -> str:
    if record["method"] == "per_prompt":
        return f"per_prompt [{record['paraphrase_index']}]"
    return record["method"]


def format_rows(rows: list[dict]) -> str:
    width = max(len("method"), *(len(r["method"]) for r in rows))
    head = f"{'method':<{width}}  {'seconds':>7}  answer"
    lines = [head, "-" * max(len(head), 40)]
    for r in rows:
        lines.append(f"{r['method']:<{width}}  {r['seconds']:7.2f}  {r['answer'] if r['answer'] else '(empty)'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Print (and return) one row ``{method, answer, generation, seconds}`` per method."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    question = args.question.strip()
    if not question:
        raise UserError("ask: the question is empty")
    if args.paraphrases is None and args.num_paraphrases < 1:
        raise UserError(f"ask: --num_paraphrases={args.num_paraphrases} must be >= 1 (or give --paraphrases)")
    paraphrases = None if args.paraphrases is None else [p.strip() for p in args.paraphrases]
    if paraphrases is not None and any(not p for p in paraphrases):
        raise UserError("ask: --paraphrases holds an empty paraphrase")
    if args.max_new_tokens < 1:
        raise UserError(f"ask: --max_new_tokens={args.max_new_tokens} must be >= 1")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    template = PromptTemplate(instruction=args.instruction, few_shot=[] if args.zero_shot else demo_few_shot())

    start = time.perf_counter()
    lm = SelfEnsembleLM(model=args.model, max_new_tokens=args.max_new_tokens, stop="\n")
    lm.configure_model()
    lm.to(device)
    load_seconds = time.perf_counter() - start

    generated, issues, paraphrase_seconds = paraphrases is None, [], 0.0
    if generated:
        start = time.perf_counter()
        paraphrases, issues = generate_paraphrases(lm.decoder, question, args.num_paraphrases, args.seed,
                                                   args.temperature, args.top_p)
        paraphrase_seconds = time.perf_counter() - start
    group = {"id": "ask", "paraphrases": [question, *paraphrases], "answers": [], "confidences": None}

    rows = []
    with torch.inference_mode():
        for head in build_heads(device.type):
            lm.head = head
            start = time.perf_counter()
            records = lm.answer([group], template)
            seconds = time.perf_counter() - start
            for rec in records:  # per_prompt: one record per paraphrase, sharing the batch's time
                rows.append({"method": row_name(rec), "answer": rec["prediction"], "generation": rec["generation"],
                             "seconds": seconds / len(records)})

    print(f"model: {args.model} on {device} (loaded in {load_seconds:.1f}s); "
          f"{'zero-shot' if args.zero_shot else f'{len(template.few_shot)}-shot'}")
    if generated:
        print(f"paraphrases generated by the model in {paraphrase_seconds:.1f}s (seed {args.seed}):")
    for i, p in enumerate(group["paraphrases"]):
        print(f"  [{i}] {p}{'  (question)' if i == 0 else ''}")
    for issue in issues:
        print(f"  warning: {issue}")
    print(format_rows(rows))
    return rows


if __name__ == "__main__":
    main()
