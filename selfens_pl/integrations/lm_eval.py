"""``selfens_pl`` as an lm-evaluation-harness model: any lm_eval task answered by a self-ensemble head.

    python -m selfens_pl.integrations.lm_eval --model selfens_pl \\
        --model_args pretrained=smollm2-135m-instruct,head=avg,paraphrases=4,demo_blocks=3,pool=webquestions-train \\
        --tasks selfens_webqa_demo --batch_size 8

lm_eval (0.4.10 .. 0.4.13) finds models only in its registry (``lm_eval.api.registry.register_model``) and loads no plugin
(it reads no entry point group): importing this module registers ``selfens_pl``, and ``python -m selfens_pl.integrations.lm_eval``
(or the ``selfens-pl-lm-eval`` script) registers it, then runs lm_eval's own command line unchanged. From Python:
``import selfens_pl.integrations.lm_eval`` before ``lm_eval.simple_evaluate(model="selfens_pl", ...)``, or pass a
:class:`SelfEnsembleEvalLM` itself.

* ``generate_until``: each request is a group (:mod:`selfens_pl.integrations.lm_eval_requests`): member 0 the
  task's prompt as lm_eval built it, then paraphrases of its question x extra few-shot blocks; the head answers
  every group of a batch in one batched, KV-cached decode, greedy, to the request's ``max_gen_toks``, cut at the
  first of its ``until`` strings.
* ``loglikelihood``: every (context, continuation) scored under every member of the context's group (one encoding
  of the members, their KV caches reused for every continuation), fused per option by ``choice_rule``
  (:func:`selfens_pl.scoring.choice.fuse_option_scores`); ``is_greedy``: the continuation is the task prompt's own
  greedy continuation. ``head=flex``: scored once on the members' fused sequence instead (attention-level fusion).
* ``loglikelihood_rolling`` (perplexity) is refused.

Every model_arg is in ``docs/lm-eval.md``.
"""

from __future__ import annotations

import sys
from importlib import resources
from itertools import groupby

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import MODEL_REGISTRY, register_model

from selfens_pl.api import SelfEnsemble
from selfens_pl.data.demos import attach_blocks, check_demo_selection, load_pool
from selfens_pl.engine.decoding import GreedyDecoder, no_fusion
from selfens_pl.engine.fusion import RULES
from selfens_pl.engine.members import score_members
from selfens_pl.engine.models import EMBEDDED_MODEL
from selfens_pl.errors import UserError, user_error_message
from selfens_pl.heads import FlexFusion, LogitFusion, OriginHead, RerankHead, VoteHead
from selfens_pl.integrations.lm_eval_requests import (attach_templates, file_paraphrases, generated_paraphrases,
                                                      prompts_for, read_paraphrase_file, request_group, split_context,
                                                      task_pool)
from selfens_pl.scoring.choice import CHOICE_RULES, check_choice_rule, fuse_option_scores
from selfens_pl.scoring.paraphrasing import DEFAULT_SEED

MODEL_NAME = "selfens_pl"
#: LogitFusion rules a model_arg ``head=`` names directly (the ``weighted_*`` rules need sampled confidences).
LOGIT_RULES = tuple(rule for rule in RULES if not rule.startswith("weighted_"))
HEADS = ("origin", *LOGIT_RULES, "flex", "vote", "rerank")
LM_EVAL_DEFAULT_DEVICE = "cuda:0"  #: what lm_eval's command line passes as the device without --device
TASK_POOL = "task"  #: ``pool=task``: the extra blocks' demonstrations from the task's own training docs
DEFAULT_BATCH_SIZE = 8  #: groups per batch for ``--batch_size auto``
#: generation kwargs of lm_eval tasks that greedy decoding reads (``until``, ``max_gen_toks``) or that only
#: restate it (``do_sample: false``, ``temperature: 0``, and nucleus / top-k settings, which greedy ignores)
GREEDY_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k"}


def task_dir() -> str:
    """The folder of the shipped offline tasks (``--include_path``): ``selfens_webqa_demo``, ``selfens_webqa_choice``."""
    return str(resources.files("selfens_pl.integrations") / "lm_eval_tasks")


class SelfEnsembleEvalLM(LM):
    """An lm_eval ``LM`` answering with a self-ensemble head (model_args: ``docs/lm-eval.md``)."""

    def __init__(self, pretrained: str = EMBEDDED_MODEL, head: str = "origin", paraphrases: int | str = 0,
                 demo_blocks: int = 1, demo_selection: str = "similar", pool: str | None = None, demo_shots: int = 5,
                 question_field: str = "question", target_delimiter: str = " ", choice_rule: str | None = None,
                 rule: str = "mixture", origin_share: float | str = "auto", demo_answers: bool = False,
                 seed: int = DEFAULT_SEED, dtype: str | None = None, device: str | None = None,
                 batch_size: int | str = DEFAULT_BATCH_SIZE, max_batch_size: int | None = None,
                 compile: bool | str = "auto", trust_remote_code: bool = False, **unknown):
        super().__init__()
        if unknown:
            raise UserError(f"--model_args {next(iter(unknown))}=...: not a selfens_pl model_arg (docs/lm-eval.md)")
        if not (isinstance(paraphrases, int) and paraphrases >= 0) and not isinstance(paraphrases, str):
            raise UserError(f"--model_args paraphrases={paraphrases!r}: give a number (>= 0) or a JSON Lines file")
        if not isinstance(demo_blocks, int) or demo_blocks < 1:
            raise UserError(f"--model_args demo_blocks={demo_blocks!r}: must be an integer >= 1")
        if demo_blocks > 1 and pool is None:
            raise UserError(f"--model_args demo_blocks={demo_blocks} needs pool= (demonstrations for the extra "
                            "blocks: task (the task's own training docs), webquestions-train, or a file in the "
                            "WebQuestions schema)")
        self.head = build_head(head, rule, origin_share, demo_answers)
        if choice_rule is not None and isinstance(self.head, FlexFusion):
            raise UserError(f"--model_args choice_rule={choice_rule}: head=flex scores each continuation once, on the "
                            "members' fused sequence; choice_rule fuses members' own scores (any other head)")
        self.choice_rule = check_choice_rule(choice_rule or "mixture", "--model_args choice_rule")
        self.paraphrase_table = read_paraphrase_file(paraphrases) if isinstance(paraphrases, str) else None
        self.paraphrases, self.demo_blocks, self.demo_shots = paraphrases, demo_blocks, demo_shots
        self.demo_selection = _model_arg("demo_selection", demo_selection, check_demo_selection)
        # pool=task: each task's own training docs, read when its first requests arrive (one pool per task)
        self.pool = _model_arg("pool", pool, lambda p: load_pool(p, "webqa")) \
            if demo_blocks > 1 and pool != TASK_POOL else None
        self.task_pools: dict[str, list[dict]] | None = {} if demo_blocks > 1 and pool == TASK_POOL else None
        self.question_field, self.target_delimiter, self.seed = question_field, target_delimiter, seed
        self.batch_size = _batch_size(batch_size, max_batch_size)
        self.ensemble = SelfEnsemble.load(pretrained, device=requested_device(device), dtype=dtype, compile=compile,
                                          trust_remote_code=trust_remote_code)
        self.model_name = pretrained
        self._decoders: dict[tuple[int, str | None], GreedyDecoder] = {}

    # -- requests as groups ----------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.ensemble.module.tokenizer

    def decoder(self, max_new_tokens: int, stop: str | None) -> GreedyDecoder:
        """A decoder over the loaded model with its own answer length and stop string (one per pair: no weights
        copied), the module's own when they are its."""
        key = (max_new_tokens, stop)
        if key not in self._decoders:
            base = self.ensemble.decoder
            self._decoders[key] = base if (base.max_new_tokens, base.stop) == key else GreedyDecoder(
                base.model, base.tokenizer, max_new_tokens, stop, base.share_prefix, base.compile,
                cache_lengths=base.pool.max_lengths)
        return self._decoders[key]

    def groups(self, contexts: list[str], requests) -> list[dict]:
        """One group per context (its request's doc gives the question): paraphrases, extra blocks, templates."""
        ensemble = self.paraphrases != 0 or self.demo_blocks > 1
        splits, ids = [], []
        for context, req in zip(contexts, requests):
            where = f"request {req.idx} of task {req.task_name!r} (doc {req.doc_id})"
            split = split_context(context, req.doc, self.question_field, where)
            if ensemble and not split.at_question:
                raise UserError(f"{where}: paraphrases= and demo_blocks= need the request's question: its doc has no "
                                f"field {self.question_field!r} (set question_field= to the doc field the prompt "
                                "shows verbatim)")
            if self.demo_blocks > 1 and not split.before:
                raise UserError(f"{where}: demo_blocks={self.demo_blocks} needs text before the question in its "
                                "segment (e.g. 'Q: ') to write demonstrations in the task's format")
            splits.append(split)
            ids.append(f"{req.task_name}/{req.doc_id}")
        questions = list(dict.fromkeys(s.question for s in splits))
        table = {q: [] for q in questions}
        paraphraser = None
        if self.paraphrase_table is not None:
            table = file_paraphrases(self.paraphrase_table, questions, self.paraphrases)
        elif self.paraphrases:
            with torch.inference_mode():
                table = generated_paraphrases(self.ensemble.decoder, questions, self.paraphrases, self.seed)
            paraphraser = self.model_name
        groups = [request_group(s, gid, table[s.question], paraphraser) for s, gid in zip(splits, ids)]
        if self.demo_blocks > 1:
            for task_name in dict.fromkeys(req.task_name for req in requests):
                own = [g for g, req in zip(groups, requests) if req.task_name == task_name]
                attach_blocks(own, self.demo_pool(task_name), self.demo_blocks, self.demo_shots, self.demo_selection)
        attach_templates(groups, self.target_delimiter)
        return groups

    def demo_pool(self, task_name: str) -> list[dict]:
        """The pool the extra blocks of ``task_name``'s requests are drawn from: ``pool=``'s, or (``pool=task``)
        the task's own training docs (:func:`~selfens_pl.integrations.lm_eval_requests.task_pool`), read once."""
        if self.task_pools is None:
            return self.pool  # type: ignore[return-value]
        if task_name not in self.task_pools:
            self.task_pools[task_name] = task_pool(task_name, self.question_field, task_dir())
        return self.task_pools[task_name]

    # -- lm_eval's request types -----------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Each request's group answered by the head, batched across requests of the same stop settings."""
        settings = [greedy_settings(req) for req in requests]
        groups = self.groups([req.args[0] for req in requests], requests)
        out: list[str | None] = [None] * len(requests)
        shared: dict = {}
        # same settings in one decoder; within them, the same prefix side by side (its KV cache shared in a batch)
        order = sorted(range(len(requests)), key=lambda i: (settings[i], groups[i]["templates"][0].key))
        for (max_tokens, until), members in groupby(order, key=lambda i: settings[i]):
            decoder = self.decoder(max_tokens, until[0] if until else None)
            members = list(members)
            for first in range(0, len(members), self.batch_size):
                chunk = members[first:first + self.batch_size]
                batch = [groups[i] for i in chunk]
                with torch.inference_mode():
                    records = self.head.generate(decoder, prompts_for(self.tokenizer, batch[0]["templates"][0],
                                                                      shared), batch)
                for i, rec in zip(chunk, records, strict=True):
                    out[i] = cut_at(rec["generation"], until)
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(fused log-likelihood, is_greedy)`` per request: the members of the context's group score every one of
        its continuations from one encoding, fused per option by ``choice_rule``."""
        pairs = [move_trailing_space(*req.args) for req in requests]
        contexts = list(dict.fromkeys(context for context, _ in pairs))
        first = {}
        for context, req in zip((c for c, _ in pairs), requests):
            first.setdefault(context, req)
        groups = dict(zip(contexts, self.groups(contexts, [first[c] for c in contexts])))
        options: dict[str, list[str]] = {c: [] for c in contexts}
        for context, continuation in pairs:
            if continuation not in options[context]:
                options[context].append(continuation)
        tokens = {c: self.tokenizer(c, add_special_tokens=False)["input_ids"] for _, c in pairs}
        for (context, continuation), req in zip(pairs, requests):
            if not tokens[continuation]:
                raise UserError(f"request {req.idx} of task {req.task_name!r}: empty continuation {continuation!r}")
        scores: dict[tuple[str, str], tuple[float, bool]] = {}
        shared: dict = {}
        for start in range(0, len(contexts), self.batch_size):
            chunk = contexts[start:start + self.batch_size]
            batch = [groups[c] for c in chunk]
            conts = [[tokens[o] for o in options[c]] for c in chunk]
            # prompts checked against the context window with the longest continuation as the "answer"
            decoder = self.decoder(max(len(t) for own in conts for t in own), None)
            prompts = prompts_for(self.tokenizer, batch[0]["templates"][0], shared)
            with torch.inference_mode():
                fused_all, greedy = self.score_and_greedy(decoder, prompts, batch, conts)
            for context, fused, own, gen in zip(chunk, fused_all, conts, greedy, strict=True):
                for option, score, toks in zip(options[context], fused, own, strict=True):
                    scores[(context, option)] = (float(score), gen.continuation[:len(toks)] == toks)
        out = [scores[pair] for pair in pairs]
        for req, result in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", req.args, result)
        return out

    def score_and_greedy(self, decoder, prompts, batch: list[dict], conts: list[list[list[int]]]):
        """``(fused [g][O], greedy [g])``: each group's continuations scored, and the greedy answer they are
        checked against (``is_greedy``). ``head=flex``: each continuation scored once on the members' fused sequence
        (:meth:`~selfens_pl.heads.flex.FlexFusion.score_options`), against the fused sequence's greedy answer. Any
        other head: the members' scores (the pass ChoiceHead runs), fused by ``choice_rule``, against the task
        prompt's (member 0's) greedy answer. Either way both come from one encoding of the prompts."""
        if isinstance(self.head, FlexFusion):
            encoded = self.head.encode_fused(decoder, prompts, batch)
            rows = list(range(len(batch)))
            fused = [[sum(lp) for lp in own] for own in decoder.score_continuations(encoded, rows, conts)]
            return fused, decoder.decode_n_tokens(encoded.batch(torch.tensor(rows, device=decoder.device)),
                                                  no_fusion, no_fusion)
        tables, encoded, rows = score_members(decoder, prompts, batch, conts)  # [g][N][O]
        fused = [fuse_option_scores(table, [len(t) for t in own], self.choice_rule)
                 for table, own in zip(tables, conts)]
        first_members = torch.tensor([own[0] for own in rows], device=decoder.device)
        return fused, decoder.decode_n_tokens(encoded.batch(first_members), no_fusion, no_fusion)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise UserError("selfens_pl answers and scores questions; loglikelihood_rolling (perplexity tasks) is not "
                        "supported: evaluate those with --model hf")

    # -- lm_eval's --apply_chat_template: lm_eval renders each request's conversation with these, and the model
    # answers the rendered text as any other prompt (member 0 is it; paraphrases replace the question inside it)
    @property
    def tokenizer_name(self) -> str:
        return self.model_name.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The tokenizer's chat template when lm_eval asks for one (``--apply_chat_template``), else ``""``."""
        if not chat_template:
            return ""
        template = getattr(self.tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template:
            raise UserError(f"--apply_chat_template: the tokenizer of {self.model_name!r} has no chat template (it "
                            "has none, or several by name, which this model does not choose among)")
        if isinstance(chat_template, str):
            raise UserError(f"--apply_chat_template {chat_template}: a named template is not supported; give the "
                            "flag alone for the tokenizer's own")
        return template

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as text through the tokenizer's chat template, as lm_eval's ``hf`` model renders it."""
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"model_name": self.model_name, "head": self.head.method}


def register() -> None:
    """Register :class:`SelfEnsembleEvalLM` as lm_eval's model ``selfens_pl`` (once: lm_eval refuses a name twice)."""
    import lm_eval.models  # noqa: F401  (lm_eval fills its own models in only while its registry is empty)

    if MODEL_NAME not in MODEL_REGISTRY:
        register_model(MODEL_NAME)(SelfEnsembleEvalLM)


def requested_device(device: str | None, argv: list[str] | None = None) -> str | None:
    """The device the user asked for, ``None`` for none (then CUDA when present, else the CPU). lm_eval's command
    line hands every model ``cuda:0`` when ``--device`` is not given (its config's default, CUDA or not); that is no
    request, as lm_eval's ``hf`` model reads it too. A ``--device`` typed on the command line (``argv``: default
    ``sys.argv``) is a request, refused when it cannot run."""
    argv = sys.argv if argv is None else argv
    typed = any(a == "--device" or a.startswith("--device=") for a in argv)
    return None if device == LM_EVAL_DEFAULT_DEVICE and not typed else device


def build_head(name: str, rule: str, origin_share, demo_answers: bool):
    """The head a model_arg ``head=`` names (``rule``, ``origin_share``, ``demo_answers`` its settings)."""
    share = None if isinstance(origin_share, str) and origin_share.lower() == "none" else origin_share
    if demo_answers and name != "rerank":
        raise UserError(f"--model_args demo_answers=true is a setting of head=rerank, not head={name}")
    if name == "origin":
        return OriginHead()
    if name in LOGIT_RULES:
        return _model_arg("origin_share", share, lambda s: LogitFusion(name, origin_share=s))
    if name == "flex":
        return FlexFusion(backend="dense" if not torch.cuda.is_available() else "auto")
    if name == "vote":
        return _model_arg("origin_share", share, lambda s: VoteHead(origin_share=s))
    if name == "rerank":
        return _model_arg("rule", rule, lambda r: RerankHead(rule=r, demo_answers=demo_answers, origin_share=share))
    raise UserError(f"--model_args head={name!r}: choose one of {', '.join(HEADS)}")


def greedy_settings(request) -> tuple[int, tuple[str, ...]]:
    """``(max_gen_toks, until)`` of a generate_until request; a request that asks for sampling, or for a setting
    greedy decoding cannot honour, is refused naming it."""
    kwargs = dict(request.args[1]) if len(request.args) > 1 and request.args[1] else {}
    where = f"request {request.idx} of task {request.task_name!r}"
    if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
        raise UserError(f"{where}: generation_kwargs ask for sampling (do_sample / temperature > 0): selfens_pl "
                        "decodes greedily")
    other = sorted(set(kwargs) - GREEDY_KWARGS)
    if other:
        raise UserError(f"{where}: generation_kwargs {', '.join(other)}: not supported (greedy decoding reads "
                        "until and max_gen_toks)")
    until = kwargs.get("until") or []
    until = (until,) if isinstance(until, str) else tuple(until)
    max_tokens = int(kwargs.get("max_gen_toks", 256))  # lm_eval's HF model's default
    if max_tokens < 1:
        raise UserError(f"{where}: max_gen_toks={max_tokens}: must be >= 1")
    return max_tokens, until


def cut_at(text: str, until: tuple[str, ...]) -> str:
    """``text`` up to the first occurrence of any ``until`` string (lm_eval's rule). The decoder stops at the first
    of them only once the answer has started, never earlier, so the cut is lm_eval's answer."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def move_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    """lm_eval's HF model's pair rule: the context's trailing whitespace starts the continuation instead."""
    if not context:
        raise UserError("loglikelihood with an empty context (perplexity-style scoring) is not supported")
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def _batch_size(batch_size, max_batch_size) -> int:
    if isinstance(batch_size, str) and batch_size.startswith("auto"):
        return min(DEFAULT_BATCH_SIZE, max_batch_size or DEFAULT_BATCH_SIZE)
    try:
        size = int(batch_size)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise UserError(f"--batch_size {batch_size!r}: give a number of groups (>= 1) or auto")
    return size


def _model_arg(name: str, value, check):
    """``check(value)``, its error restated as the model_arg's (``--model_args name=value: ...``)."""
    try:
        return check(value)
    except UserError as exc:
        message = str(exc)
        message = message.split(" ", 1)[1] if message.startswith("--") and " " in message else message
        raise UserError(f"--model_args {name}={value!r}: {message}") from None


def cli(argv: list[str] | None = None) -> None:
    """lm_eval's command line with ``selfens_pl`` registered and, when no ``--include_path`` is given, the shipped
    tasks' folder included; a user error prints one line and exits 2."""
    register()
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in args and not any(a.startswith("--include_path=") for a in args):
        args += ["--include_path", task_dir()]
    sys.argv = [sys.argv[0], *args]
    try:
        cli_evaluate()
    except Exception as exc:
        message = user_error_message(exc, args)
        if message is None:
            raise
        print(f"selfens_pl: error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    from selfens_pl.integrations.lm_eval import cli as _cli  # the registered module, not this __main__ copy

    _cli()
else:
    register()
