"""Ask one question with every method side by side.

    python -m selfens_pl ask "what is the capital of france?" \\
        --paraphrases "which city is the capital of france?" "what city is france's capital?"

The question is paraphrase 0 (what ``origin`` answers); ``--paraphrases`` adds the others, and without it the model
writes up to ``--num_paraphrases`` itself with the ``paraphrase`` verb's checked method and defaults (a candidate
that fails the checks is sampled again, then left out: a bad paraphrase never pads the group). The model is loaded
once (:class:`selfens_pl.api.SelfEnsemble`) and the group is answered by ``origin``, ``per_prompt`` (each
paraphrase on its own), LogitFusion ``avg`` and ``max``, FlexFusion ``concat`` and ``shared_prefix`` (the dense
attention backend on CPU, ``auto`` otherwise), the ``vote`` and the ``rerank_mixture`` rule (with
``--data.demo_blocks`` > 1 also ``rerank_mixture_demos``, with the demonstrations' answers among the candidates;
``per_prompt [j]`` is member ``j``: paraphrase ``j % K`` with block ``j // K``). Each method runs twice and its
second run is timed, so no row pays the model's warm-up. Flags name what predict's do (``--model.model``,
``--trainer.accelerator``, ``--data.few_shot``, ``--data.chat_template``, ...).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from selfens_pl.api import Group, SelfEnsemble
from selfens_pl.commands import RENAMED, add_device_flags, add_model_flags, device_and_dtype, rename_flags
from selfens_pl.data.prompts import check_chat_template
from selfens_pl.engine.models import DEFAULT_MAX_NEW_TOKENS
from selfens_pl.errors import UserError
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, PerPromptHead, RerankHead, VoteHead
from selfens_pl.scoring.paraphrasing import DEFAULT_SEED, DEFAULT_TEMPERATURE, DEFAULT_TOP_P

#: Earlier flag names, still accepted (CHANGELOG.md): every model verb's, and ask's own --instruction.
OLD_FLAGS = {**RENAMED, "--instruction": "--data.instruction"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m selfens_pl ask", allow_abbrev=False,
        description="Answer one question with every self-ensemble method side by side.")
    parser.add_argument("question", help="The question (paraphrase 0, the one origin answers)")
    parser.add_argument("--paraphrases", nargs="*", default=None, metavar="P",
                        help="Other phrasings of the question (given with no values: the question alone; "
                             "left out: the model writes up to --num_paraphrases checked ones)")
    parser.add_argument("--num_paraphrases", type=int, default=4,
                        help="Paraphrases to generate when --paraphrases is left out (default 4)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Seed of the paraphrase sampling")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help=f"Paraphrase sampling temperature (default {DEFAULT_TEMPERATURE}, as paraphrase's)")
    parser.add_argument("--top_p", type=float, default=DEFAULT_TOP_P, help="Paraphrase nucleus sampling mass")
    add_model_flags(parser, DEFAULT_MAX_NEW_TOKENS, with_stop=False)
    add_device_flags(parser)
    parser.add_argument("--data.instruction", dest="instruction", default=None,
                        help="Instruction line (default: the task's)")
    parser.add_argument("--data.task", dest="task", default="webqa", choices=("webqa", "myriadlama"),
                        help="Picks the default instruction and few-shot block")
    parser.add_argument("--data.few_shot", dest="few_shot", type=yaml.safe_load, default=None,
                        help="Few-shot examples as YAML/JSON, [{question, answer}, ...]; [] for zero-shot "
                             "(default: the task's standard five)")
    parser.add_argument("--zero_shot", action="store_true", help="Same as --data.few_shot []")
    parser.add_argument("--data.demo_blocks", dest="demo_blocks", type=int, default=1,
                        help="Ask every paraphrase with this many five-shot blocks (blocks 1.. from the pool)")
    parser.add_argument("--data.few_shot_pool", dest="pool", default=None,
                        help="Demonstrations for the extra blocks (webquestions-train, or a file)")
    parser.add_argument("--data.demo_selection", dest="demo_selection", default="similar",
                        choices=("similar", "random"), help="How the extra blocks are filled (default similar)")
    parser.add_argument("--data.chat_template", dest="chat_template", default="none", choices=("none", "model"),
                        help="Render every prompt (and the paraphrasing prompt) as the Q:/A: text (none, default) or "
                             "through the model's chat template (model)")
    return parser.parse_args(rename_flags(argv, OLD_FLAGS))


def build_heads(device_type: str, demo_answers: bool) -> list:
    """Every method, in display order (FlexFusion uses the dense backend on CPU, ``auto`` otherwise)."""
    backend = "dense" if device_type == "cpu" else "auto"
    heads = [OriginHead(), PerPromptHead(), LogitFusion("avg"), LogitFusion("max"),
             FlexFusion(layout="concat", backend=backend), FlexFusion(layout="shared_prefix", backend=backend),
             VoteHead(), RerankHead(rule="mixture")]
    if demo_answers:
        heads.append(RerankHead(rule="mixture", demo_answers=True))
    return heads


def row_names(answers) -> list[str]:
    """A row name per answer: the method; ``per_prompt`` answers name their member (paraphrase, then block)."""
    return [f"per_prompt [{j}]" if a.method == "per_prompt" else a.method for j, a in enumerate(answers)]


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
    model, max_new_tokens = getattr(args, "model.model"), getattr(args, "model.max_new_tokens")
    if max_new_tokens < 1:
        raise UserError(f"ask: --model.max_new_tokens={max_new_tokens} must be >= 1")
    few_shot = [] if args.zero_shot else args.few_shot
    if few_shot is not None and not isinstance(few_shot, list):
        raise UserError(f"ask: --data.few_shot must be a list of {{question, answer}} (got {few_shot!r})")
    if args.demo_blocks > 1 and args.pool is None:
        raise UserError(f"ask: --data.demo_blocks={args.demo_blocks} needs --data.few_shot_pool (e.g. "
                        "webquestions-train)")

    device, dtype = device_and_dtype(args)
    se = SelfEnsemble.load(model, device=device, dtype=dtype, max_new_tokens=max_new_tokens,
                           trust_remote_code=getattr(args, "model.trust_remote_code"))
    check_chat_template(args.chat_template, se.module.tokenizer)  # named by its flag, before any answer
    issues = []
    if paraphrases is None:
        [paraphrases] = se.paraphrase([question], args.num_paraphrases, args.seed, chat_template=args.chat_template,
                                      temperature=args.temperature, top_p=args.top_p)
        if len(paraphrases) < args.num_paraphrases:
            issues.append(f"{args.num_paraphrases - len(paraphrases)} of {args.num_paraphrases} paraphrases failed "
                          "the checks on every try: left out")
    group = Group(question, paraphrases, id="ask",
                  paraphraser=se.module.hparams.model if args.paraphrases is None else None)

    options = dict(task=args.task, few_shot=few_shot, instruction=args.instruction, demo_blocks=args.demo_blocks,
                   pool=args.pool, demo_selection=args.demo_selection, chat_template=args.chat_template)
    rows = []
    for head in build_heads(se.device.type, demo_answers=args.demo_blocks > 1):
        se.answer([group], head, **options)  # warm-up: the timed run below pays no first-call cost
        answers = se.answer([group], head, **options)
        for name, answer in zip(row_names(answers), answers):
            rows.append({"method": name, "answer": answer.prediction, "generation": answer.generation,
                         "seconds": answer.seconds})

    shots = len(se.template(args.task, few_shot, args.instruction).few_shot)
    print(f"model: {model} on {se.device}; {f'{shots}-shot' if shots else 'zero-shot'}"
          + (f", {args.demo_blocks} blocks ({args.demo_selection} from {args.pool})" if args.demo_blocks > 1 else ""))
    if args.paraphrases is None:
        print(f"paraphrases written by the model and checked (seed {args.seed}):")
    for i, p in enumerate([question, *paraphrases]):
        print(f"  [{i}] {p}{'  (question)' if i == 0 else ''}")
    for issue in issues:
        print(f"  warning: {issue}")
    print(format_rows(rows))
    print("seconds: the second of two runs of each method (the first warms up)")
    return rows


if __name__ == "__main__":
    main()
