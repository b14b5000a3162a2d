"""The Python face of the package: load a model once, answer questions with any head.

    from selfens_pl import SelfEnsemble, LogitFusion, RerankHead

    se = SelfEnsemble.load("smollm2-135m-instruct")               # alias, local directory or hub id
    out = se.answer(["what currency do they use in qatar?"],
                    head=RerankHead(rule="mixture", demo_answers=True),
                    demo_blocks=3, pool="webquestions-train")
    out[0].prediction, out[0].members, out[0].confidence

:class:`SelfEnsemble` wraps the same :class:`~selfens_pl.lit.module.SelfEnsembleLM` that ``predict`` runs under a
Trainer, so an answer here is the answer ``predict`` writes for the same group, prompt and head, token for token
(tests/test_api.py). Groups go in as :class:`Group` (or a plain question string) and come back as :class:`Answer`.
An error names the argument the caller passed (``answer(demo_blocks=...)``), never a command-line flag.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from selfens_pl.data.datamodule import demo_few_shot
from selfens_pl.data.demos import attach_blocks, check_demo_selection, load_pool
from selfens_pl.data.prompts import (MYRIADLAMA_FEW_SHOT, MYRIADLAMA_INSTRUCTION, WEBQA_INSTRUCTION, ChatTemplate,
                                     PromptTemplate, check_chat_template)
from selfens_pl.engine.kv_cache import CACHE_LENGTHS
from selfens_pl.engine.models import DEFAULT_MAX_NEW_TOKENS, EMBEDDED_MODEL, pick_device, pick_dtype
from selfens_pl.errors import UserError
from selfens_pl.heads import FusionHead, OriginHead
from selfens_pl.lit.module import SelfEnsembleLM
from selfens_pl.scoring.metrics import is_match
from selfens_pl.scoring.paraphrasing import DEFAULT_SEED, checked_paraphrases

Task = Literal["webqa", "myriadlama"]


@dataclass
class Group:
    """One question and its other phrasings: what every head answers.

    Args:
        question: The question as asked (paraphrase 0: what ``OriginHead`` answers).
        paraphrases: Other phrasings of it (members 1..N-1).
        answers: Gold answers (any alias counts); empty: the answers are not scored.
        id: A name for the group (default: its position, ``"0"``, ``"1"``, ...).
        confidences: One weight in [0, 1] per paraphrase, question first (``LogitFusion("weighted_avg")``).
        paraphraser: The model that generated ``paraphrases``, if one did (the heads' ``origin_share="auto"`` then
            gives the question most of the weight); ``None`` for hand-written ones.
    """

    question: str
    paraphrases: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    id: str | None = None
    confidences: list[float] | None = None
    paraphraser: str | None = None

    def record(self, index: int) -> dict:
        """The group as the heads read it (``{id, paraphrases, answers, confidences, paraphraser?}``)."""
        rec = {"id": str(self.id if self.id is not None else index),
               "paraphrases": [self.question, *self.paraphrases], "answers": list(self.answers),
               "confidences": None if self.confidences is None else [float(c) for c in self.confidences]}
        if self.paraphraser:
            rec["paraphraser"] = self.paraphraser
        return rec


@dataclass
class Answer:
    """One answer of a head (most heads: one per group; ``PerPromptHead``: one per paraphrase).

    Attributes:
        id: The group's id.
        method: The head's method (``avg``, ``rerank_mixture``, ``vote``, ...).
        prediction: The answer, normalised as it is scored (the generation's first line, stripped).
        generation: The raw generated text.
        confidence: Mean probability of the answer's tokens under the distribution they were picked from (fused
            for fused heads; ``None`` for an empty answer).
        members: Each member's own answer (members: the paraphrases, times the few-shot blocks), where the head
            computed them (vote, rerank, cascade; a fused head with ``agreement=True``); else ``None``.
        agreement: Share of the members whose own answer agrees with ``prediction`` (where ``members`` is known).
        candidates: The candidates a rescoring head chose among (``{prediction, support, score, ...}``), else ``None``.
        correct: Lemma match against the group's answers; ``None`` when the group has none.
        paraphrase_index: Which paraphrase answered (``PerPromptHead``, ``OriginHead``: 0); ``None`` when fused.
        seconds: Wall time of the call that produced it, shared evenly among its answers.
        record: The full record, as ``predict`` writes it to ``predictions.jsonl``.
    """

    id: str
    method: str
    prediction: str
    generation: str
    confidence: float | None
    members: list[str] | None
    agreement: float | None
    candidates: list[dict] | None
    correct: bool | None
    paraphrase_index: int | None
    seconds: float
    record: dict


class SelfEnsemble:
    """A loaded causal LM that answers groups of paraphrases with a fusion head. Build it with :meth:`load`."""

    def __init__(self, module: SelfEnsembleLM, device: torch.device):
        self.module = module
        self.device = device

    @classmethod
    def load(cls, model: str = EMBEDDED_MODEL, *, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None, compile: bool | Literal["auto"] = "auto",
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, stop: str | None = "\n",
             trust_remote_code: bool = False, share_prefix: bool = True,
             cache_lengths: int = CACHE_LENGTHS) -> SelfEnsemble:
        """Load ``model`` once.

        Args:
            model: ``smollm2-135m-instruct`` (embedded, the default), an alias (``llama3.2_3b_it``, ...), a local
                directory or a hub id.
            device: ``cpu``, ``cuda``, ``cuda:1``, ... (default: cuda when present).
            dtype: ``float32``, ``bfloat16``, ``float16`` or a torch dtype (default: torch's default dtype).
            compile: Compile the decode step (``auto``: on CUDA only), as ``--model.compile``.
            max_new_tokens: Most tokens generated per answer.
            stop: Stop string ending an answer once it has started (default: a newline).
            trust_remote_code: Passed to ``from_pretrained``.
            share_prefix: Encode the shared instruction + few-shot prefix once per batch.
            cache_lengths: Compiled decoding keeps this many KV-cache lengths (``--model.cache_lengths``).
        """
        if max_new_tokens < 1:
            raise UserError(f"SelfEnsemble.load(max_new_tokens={max_new_tokens}): must be >= 1")
        device = _argument("device", device, pick_device)
        dtype = _argument("dtype", dtype, pick_dtype)
        module = SelfEnsembleLM(model=model, max_new_tokens=max_new_tokens, stop=stop, compile=compile,
                                trust_remote_code=trust_remote_code, share_prefix=share_prefix,
                                cache_lengths=cache_lengths)
        module.configure_model(dtype=dtype)
        module.to(device)
        module.eval()
        return cls(module, device)

    @property
    def decoder(self):
        """The :class:`~selfens_pl.engine.decoding.GreedyDecoder` every head decodes with."""
        return self.module.decoder

    def template(self, task: Task = "webqa", few_shot: Sequence[dict] | None = None,
                 instruction: str | None = None, chat_template: ChatTemplate = "none") -> PromptTemplate:
        """The prompt every member shares: ``instruction`` (default: the task's) and the ``few_shot`` examples
        ``[{question, answer}]`` (default: the task's standard five; ``[]`` for zero-shot), rendered as
        ``chat_template`` says (``none``: the ``Q:``/``A:`` text; ``model``: this model's chat template)."""
        check_chat_template(chat_template, self.module.tokenizer, flag="chat_template")
        if task not in ("webqa", "myriadlama"):
            raise UserError(f"answer(task={task!r}): choose webqa or myriadlama")
        if instruction is None:
            instruction = MYRIADLAMA_INSTRUCTION if task == "myriadlama" else WEBQA_INSTRUCTION
        if few_shot is None:
            few_shot = MYRIADLAMA_FEW_SHOT if task == "myriadlama" else demo_few_shot()
        for i, example in enumerate(few_shot):
            if not isinstance(example, dict) or not {"question", "answer"} <= set(example):
                raise UserError(f"answer(few_shot=...): example {i} is not a {{question, answer}} dict")
        return PromptTemplate(instruction=instruction,
                              few_shot=[{"question": e["question"], "answer": e["answer"]} for e in few_shot],
                              chat_template=chat_template)

    def paraphrase(self, questions: Sequence[str | Group], k: int = 4, seed: int = DEFAULT_SEED,
                   chat_template: ChatTemplate = "none", **sampling) -> list[list[str]]:
        """Up to ``k`` checked paraphrases of each question, by this model (the ``paraphrase`` verb's method and
        defaults: :func:`~selfens_pl.scoring.paraphrasing.checked_paraphrases`; ``sampling`` overrides
        ``temperature``, ``top_p``, ``max_new_tokens``, ``max_retries``). A question whose candidates all fail the
        checks gets fewer (possibly none): a bad paraphrase never pads a group. ``chat_template``: the paraphrasing
        prompt as text (``none``) or through this model's chat template (``model``)."""
        if k < 1:
            raise UserError(f"paraphrase(k={k}): must be >= 1")
        check_chat_template(chat_template, self.module.tokenizer, flag="chat_template")
        groups = self.groups(questions)
        with torch.inference_mode():
            records = checked_paraphrases(self.decoder, groups, k, seed, chat_template=chat_template,
                                          flag="chat_template", **sampling)
        return [rec["paraphrases"][1:] for rec in records]

    def groups(self, questions: Sequence[str | Group | dict], paraphrases: Sequence[Sequence[str]] | None = None
               ) -> list[dict]:
        """``questions`` as the heads' group records; ``paraphrases[i]`` adds phrasings to question ``i``."""
        if isinstance(questions, (str, Group)):
            raise UserError("answer(questions=...): give a list of questions (a single one in a list)")
        if paraphrases is not None and len(paraphrases) != len(questions):
            raise UserError(f"answer(paraphrases=...): {len(paraphrases)} lists for {len(questions)} questions")
        out, seen = [], set()
        for i, q in enumerate(questions):
            group = Group(q) if isinstance(q, str) else Group(**q) if isinstance(q, dict) else q
            if not isinstance(group, Group) or not isinstance(group.question, str):
                raise UserError(f"answer(questions=...): item {i} is neither a question string nor a Group")
            rec = group.record(i)
            if paraphrases is not None:
                rec["paraphrases"] += list(paraphrases[i])
            if any(not isinstance(p, str) or not p.strip() for p in rec["paraphrases"]):
                raise UserError(f"answer(questions=...): group {rec['id']!r} has an empty question or paraphrase")
            if rec["id"] in seen:
                raise UserError(f"answer(questions=...): id {rec['id']!r} repeats")
            seen.add(rec["id"])
            out.append(rec)
        return out

    def answer(self, questions: Sequence[str | Group | dict], head: FusionHead | None = None, *,
               paraphrases: Sequence[Sequence[str]] | Literal["generate"] | None = None, num_paraphrases: int = 4,
               demo_blocks: int = 1, pool: str | list[str] | None = None,
               demo_selection: Literal["random", "similar"] = "similar", task: Task = "webqa",
               few_shot: Sequence[dict] | None = None, instruction: str | None = None,
               chat_template: ChatTemplate = "none", batch_size: int = 8) -> list[Answer]:
        """Answer every question with ``head`` (default: ``OriginHead``, the question alone).

        Args:
            questions: Question strings or :class:`Group` s (a group brings its own paraphrases and answers).
            head: Any fusion head: ``LogitFusion("avg")``, ``FlexFusion()``, ``VoteHead()``,
                ``RerankHead(rule="mixture")``, ...
            paraphrases: Extra phrasings per question (a list per question), or ``"generate"``: up to
                ``num_paraphrases`` checked paraphrases written by this model (:meth:`paraphrase`).
            demo_blocks: ``M``: ask every paraphrase with ``M`` five-shot blocks (block 0 ``few_shot``, the others
                drawn from ``pool``), so a group has paraphrases x ``M`` members.
            pool: Demonstrations for blocks 1..M-1: ``webquestions-train`` (shipped) or a file in the task's schema.
            demo_selection: ``similar`` (BM25 nearest to the question) or ``random``.
            task: ``webqa`` or ``myriadlama``: the default instruction and few-shot block, and the pool's schema.
            few_shot: Block 0's examples ``[{question, answer}]`` (default: the task's standard five).
            instruction: The instruction line (default: the task's).
            chat_template: How every prompt is rendered (every member and block, and the paraphrasing prompt with
                ``paraphrases="generate"``): ``none`` (default), the ``Q:``/``A:`` text; ``model``, this model's chat
                template (the instruction as the system message, each few-shot example a user/assistant turn pair,
                the question the last user turn; :mod:`selfens_pl.data.prompts`). A model without one is refused.
            batch_size: Groups decoded together.
        """
        head = head if head is not None else OriginHead()
        if not isinstance(head, FusionHead):
            raise UserError(f"answer(head={head!r}): give a fusion head, e.g. LogitFusion('avg')")
        if batch_size < 1:
            raise UserError(f"answer(batch_size={batch_size}): must be >= 1")
        if demo_blocks < 1:
            raise UserError(f"answer(demo_blocks={demo_blocks}): must be >= 1")
        _argument("demo_selection", demo_selection, check_demo_selection)
        template = self.template(task, few_shot, instruction, chat_template)
        if paraphrases == "generate":
            groups = self.groups(questions)
            for group, extra in zip(groups, self.paraphrase(questions, num_paraphrases,
                                                            chat_template=chat_template)):
                group["paraphrases"] += extra
                group["paraphraser"] = self.module.hparams.model
        elif isinstance(paraphrases, str):
            raise UserError(f"answer(paraphrases={paraphrases!r}): give a list per question or 'generate'")
        else:
            groups = self.groups(questions, paraphrases)
        if demo_blocks > 1:
            if pool is None:
                raise UserError(f"answer(demo_blocks={demo_blocks}) needs pool= (demonstrations for the extra "
                                "blocks: 'webquestions-train', or a file in the task's schema)")
            entries = _argument("pool", pool, lambda p: load_pool(p, task))
            attach_blocks(groups, entries, demo_blocks, len(template.few_shot) or 5, demo_selection)
        self.module.head = head
        answers = []
        with torch.inference_mode():
            for first in range(0, len(groups), batch_size):
                batch = groups[first:first + batch_size]
                start = time.perf_counter()
                records = self.module.answer(batch, template)
                seconds = (time.perf_counter() - start) / max(1, len(records))
                answers += [_answer(rec, seconds) for rec in records]
        return answers


def _answer(rec: dict, seconds: float) -> Answer:
    gold = rec.get("answers") or []
    return Answer(id=rec["id"], method=rec["method"], prediction=rec["prediction"], generation=rec["generation"],
                  confidence=rec.get("mean_prob"), members=rec.get("paraphrase_predictions"),
                  agreement=rec.get("agreement"), candidates=rec.get("candidates"),
                  correct=is_match(rec["prediction"], gold) if gold else None,
                  paraphrase_index=rec.get("paraphrase_index"), seconds=seconds, record=rec)


def _argument(name: str, value, check):
    """``check(value)``, its error restated with the API argument's name instead of a command-line flag's."""
    try:
        return check(value)
    except UserError as exc:
        message = str(exc)
        if message.startswith(f"{name} "):  # already names the argument
            raise
        if message.startswith("--"):
            message = message.split(" ", 1)[1] if " " in message else message
        raise UserError(f"{name}={value!r}: {message}") from None
