"""Generate paraphrases of WebQuestions questions with the model itself (the seed's method), as a groups file.

    python -m selfens_pl paraphrase --config configs/paraphrase_webqa.yaml
    python -m selfens_pl paraphrase --source stanfordnlp/web_questions --split test --limit 100 --batch_size 16

Method: a paraphrasing instruction plus five worked examples in the package's ``Q:``/``A:`` few-shot format
(:data:`PARAPHRASE_INSTRUCTION`, :data:`PARAPHRASE_FEW_SHOT`); ``num_paraphrases`` sampling rounds per question,
round ``r`` with its own seed ``seed + r`` (temperature 1.5, top-p 0.9 by default), first line of the generation
kept. All rounds of a question share one prefill (its KV cache is copied once per round). A paraphrase that is
empty or repeats the original question or an earlier paraphrase (case- and whitespace-insensitive) is regenerated
with a new seed (``seed + attempt * num_paraphrases + r``), up to ``max_retries`` times; what is still bad then is
printed and listed in the record's ``issues`` (an empty one is replaced by the original question, so the file
stays loadable).

Output: JSONL ``{id, question, answers, paraphrases: [original, p1..pK], issues: [...]}`` with ids
``webqa-<split>-<index>`` (as :func:`selfens_pl.sources.webqa_groups` numbers them), appended and flushed per
batch. A rerun skips the ids already written (a half-written last line is dropped first); a complete file is reused
without loading the model. The file is a groups file: ``predict --data.path <file>``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from selfens_pl.models import EMBEDDED_MODEL

PARAPHRASE_INSTRUCTION = (
    "Paraphrase the question: ask for exactly the same information using different words and a different "
    "sentence structure, so that it has the same answer. Write only the rewritten question, on one line."
)

#: Worked examples ``{question, answer}``: the answer is a paraphrase of the question.
PARAPHRASE_FEW_SHOT: list[dict[str, str]] = [
    {"question": "who wrote the novel pride and prejudice?",
     "answer": "which author is responsible for writing pride and prejudice?"},
    {"question": "what currency is used in japan?",
     "answer": "what is the name of the money people pay with in japan?"},
    {"question": "where was albert einstein born?",
     "answer": "in which city did albert einstein come into the world?"},
    {"question": "what language do they speak in brazil?",
     "answer": "which language is spoken by the people of brazil?"},
    {"question": "when did the titanic sink?",
     "answer": "in what year did the titanic go down?"},
]

#: ``sample(items, seeds) -> texts``: ``items`` are ``(group, question)`` prompts, ``seeds[i]`` the seeds of the
#: samples of prompt ``i`` (every list the same length); ``texts[i][j]`` is sample ``j`` of prompt ``i``.
SampleFn = Callable[[list[tuple[dict, str]], list[list[int]]], list[list[str]]]


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive key used to detect duplicates."""
    return " ".join(text.lower().split())


def first_line(text: str) -> str:
    """The kept part of a generation: its first non-empty line, stripped."""
    return text.strip().split("\n")[0].strip()


def find_bad(original: str, paraphrases: list[str]) -> list[int]:
    """Indices of ``paraphrases`` that are empty or repeat the original or an earlier paraphrase."""
    seen, bad = {normalize(original)}, []
    for i, p in enumerate(paraphrases):
        key = normalize(p)
        if not key or key in seen:
            bad.append(i)
        else:
            seen.add(key)
    return bad


def paraphrase_groups(sample: SampleFn, groups: list[dict], k: int, seed: int, max_retries: int) -> list[dict]:
    """``k`` good paraphrases per group (``{id, paraphrases[0] = question, answers}``), regenerating bad ones.

    Slot ``r`` of attempt ``a`` (``a = 0`` first) is sampled with seed ``seed + a * k + r``: every (slot, attempt)
    pair has its own seed, the same for every question and independent of the batch. A candidate is accepted when
    it is non-empty and differs from the original and from the paraphrases already accepted. Returns records
    ``{id, question, answers, paraphrases: [original, p1..pk], issues}``.
    """
    questions = [g["paraphrases"][0] for g in groups]
    texts = sample([(g, q) for g, q in zip(groups, questions)], [[seed + r for r in range(k)] for _ in groups])
    kept: list[list[str | None]] = [[None] * k for _ in groups]
    last: list[list[str]] = [[""] * k for _ in groups]
    seen = [{normalize(q)} for q in questions]

    def offer(q: int, r: int, text: str) -> None:
        candidate = first_line(text)
        key = normalize(candidate)
        if key and key not in seen[q]:
            kept[q][r] = candidate
            seen[q].add(key)
        else:
            last[q][r] = candidate

    for q in range(len(groups)):
        for r in range(k):
            offer(q, r, texts[q][r])
    for attempt in range(1, max_retries + 1):
        bad = [(q, r) for q in range(len(groups)) for r in range(k) if kept[q][r] is None]
        if not bad:
            break
        texts = sample([(groups[q], questions[q]) for q, _ in bad], [[seed + attempt * k + r] for _, r in bad])
        for (q, r), t in zip(bad, texts):
            offer(q, r, t[0])

    records = []
    for q, group in enumerate(groups):
        paraphrases, issues = [questions[q]], []
        for r in range(k):
            if kept[q][r] is not None:
                paraphrases.append(kept[q][r])
                continue
            if not normalize(last[q][r]):
                issues.append(f"paraphrases[{r + 1}]: empty after {max_retries} retries; the original question "
                              "stands in")
                paraphrases.append(questions[q])
            else:
                issues.append(f"paraphrases[{r + 1}]: {last[q][r]!r} is a duplicate after {max_retries} retries")
                paraphrases.append(last[q][r])
        records.append({"id": group["id"], "question": questions[q], "answers": list(group.get("answers") or []),
                        "paraphrases": paraphrases, "issues": issues})
    return records


# -- resumable JSONL output ---------------------------------------------------------------------------------------
def resume_jsonl(path: str | Path, check: Callable[[int, dict], None], tool: str = "selfens_pl") -> dict[str, dict]:
    """Records already in ``path`` by id, after dropping a half-written last line (one without its newline, as
    an interrupted append leaves it). ``check(line_number, record)`` raises for a record this run cannot extend.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # everything after the last newline is a half-written line
    if end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(end)
        print(f"[{tool}] {path}: dropped a half-written last line ({len(data) - end} bytes)")
    records: dict[str, dict] = {}
    for number, line in enumerate(data[:end].decode("utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number}: invalid JSON ({exc.msg}); fix or delete the file") from None
        if not isinstance(rec, dict) or not rec.get("id"):
            raise ValueError(f"{path}: line {number}: expected an object with an 'id'")
        if str(rec["id"]) in records:
            raise ValueError(f"{path}: line {number}: id {rec['id']!r} is written twice")
        check(number, rec)
        records[str(rec["id"])] = rec
    return records


def pending_groups(path: Path, groups: list[dict], check: Callable[[int, dict], None], tool: str) -> list[dict]:
    """The groups ``path`` does not hold yet (after :func:`resume_jsonl`), announcing reuse or resumption; the
    output folder exists afterwards."""
    done = resume_jsonl(path, check, tool)
    todo = [g for g in groups if g["id"] not in done]
    if not todo:
        print(f"[{tool}] reused {path}: all {len(groups)} records already complete")
    elif done:
        print(f"[{tool}] resuming {path}: {len(groups) - len(todo)} of {len(groups)} records done")
    path.parent.mkdir(parents=True, exist_ok=True)
    return todo


def append_jsonl(path: str | Path, records: list[dict]) -> None:
    """Append ``records``, one JSON line each, in a single write, then flush to disk."""
    if not records:
        return
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        fh.flush()
        os.fsync(fh.fileno())


def model_tag(name: str) -> str:
    """A file-system friendly name for a model: a local directory's name, or the hub id with ``/`` -> ``--``."""
    local = Path(name).expanduser()
    return local.name if local.is_dir() else name.replace("/", "--")


def source_tag(source: str, split: str) -> str:
    """``web_questions`` for a hub id; for a local file its stem, or its folder's name when the stem is the
    split (``../shared/data/webquestions/train.jsonl`` -> ``webquestions``)."""
    local = Path(source).expanduser()
    if local.suffix or local.exists():
        return local.parent.name if local.stem == split and local.parent.name else local.stem
    return source.rstrip("/").split("/")[-1]


def load_decoder(model: str, max_new_tokens: int, device: str | None):
    """The model, its tokenizer and a :class:`GreedyDecoder` (newline stop, shared prefix) on ``device``."""
    import torch

    from selfens_pl.decoding import GreedyDecoder
    from selfens_pl.models import load_model_and_tokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm, tokenizer = load_model_and_tokenizer(model)
    lm.to(device)
    return GreedyDecoder(lm, tokenizer, max_new_tokens=max_new_tokens, stop="\n", share_prefix=True)


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="python -m selfens_pl paraphrase",
                            description="Generate paraphrases of WebQuestions questions with the model itself.")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the flags below")
    parser.add_argument("--model", type=str, default=EMBEDDED_MODEL,
                        help="Alias, smollm2-135m-instruct (embedded), local directory or hub id")
    parser.add_argument("--source", type=str, default="stanfordnlp/web_questions",
                        help="WebQuestions hub id or local file ({question, answers, url} records)")
    parser.add_argument("--split", type=str, default="test", help="Split (hub sources); also names the ids")
    parser.add_argument("--limit", type=int | None, default=None, help="Only the first LIMIT questions")
    parser.add_argument("--num_paraphrases", type=int, default=4,
                        help="Generated paraphrases per question (the original is kept first: K + 1 in all)")
    parser.add_argument("--temperature", type=float, default=1.5, help="Sampling temperature")
    parser.add_argument("--top_p", type=float, default=0.9, help="Nucleus sampling mass")
    parser.add_argument("--max_new_tokens", type=int, default=30, help="Most tokens per paraphrase")
    parser.add_argument("--seed", type=int, default=42, help="Round r samples with seed + r")
    parser.add_argument("--batch_size", type=int, default=8, help="Questions per batch (written after each)")
    parser.add_argument("--max_retries", type=int, default=3,
                        help="Regenerations of an empty or duplicate paraphrase, each with a new seed")
    parser.add_argument("--output", type=str | None, default=None,
                        help="Output JSONL (default outputs/paraphrases/<model>/<source>-<split>.jsonl)")
    parser.add_argument("--device", type=str | None, default=None, help="cpu, cuda, ... (default: cuda if present)")
    return parser


def main(argv: list[str] | None = None) -> Path:
    cfg = build_parser().parse_args(argv)
    if cfg.num_paraphrases < 1:
        raise ValueError(f"--num_paraphrases must be >= 1, got {cfg.num_paraphrases}")
    if cfg.batch_size < 1 or cfg.max_retries < 0:
        raise ValueError("--batch_size must be >= 1 and --max_retries >= 0")
    from selfens_pl.sources import load_webqa, webqa_groups

    groups = webqa_groups(load_webqa(cfg.source, cfg.split), id_prefix=f"webqa-{cfg.split}")
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {cfg.limit}")
        groups = groups[: cfg.limit]
    k = cfg.num_paraphrases
    output = Path(cfg.output or Path("outputs/paraphrases") / model_tag(cfg.model)
                  / f"{source_tag(cfg.source, cfg.split)}-{cfg.split}.jsonl")

    def check(number: int, rec: dict) -> None:
        n = len(rec.get("paraphrases") or [])
        if n != k + 1:
            raise ValueError(f"{output}: line {number}: record {rec['id']!r} has {n} paraphrases but "
                             f"--num_paraphrases={k} writes {k + 1} (original + {k}); use another --output")

    todo = pending_groups(output, groups, check, "paraphrase")
    if not todo:
        return output

    from selfens_pl.heads.base import prompt_batch
    from selfens_pl.prompts import PromptTemplate, PromptTokenizer
    from selfens_pl.sampling import Sampler

    start = time.perf_counter()
    decoder = load_decoder(cfg.model, cfg.max_new_tokens, cfg.device)
    sampler = Sampler(decoder, cfg.temperature, cfg.top_p, cfg.max_new_tokens, stop="\n")
    prompts = PromptTokenizer(decoder.tokenizer, PromptTemplate(PARAPHRASE_INSTRUCTION, PARAPHRASE_FEW_SHOT))

    sampled = 0

    def sample(items: list[tuple[dict, str]], seeds: list[list[int]]) -> list[list[str]]:
        nonlocal sampled
        repeat = len(seeds[0])
        sampled += len(items) * repeat
        gens = sampler.sample(prompt_batch(decoder, prompts, items), [s for row in seeds for s in row], repeat)
        return [[g.text for g in gens[i * repeat:(i + 1) * repeat]] for i in range(len(items))]

    issues = 0
    for first in range(0, len(todo), cfg.batch_size):
        records = paraphrase_groups(sample, todo[first:first + cfg.batch_size], k, cfg.seed, cfg.max_retries)
        append_jsonl(output, records)
        for rec in records:
            for issue in rec["issues"]:
                print(f"[paraphrase] {rec['id']}: {issue}")
            issues += bool(rec["issues"])
        print(f"[paraphrase] {len(groups) - len(todo) + first + len(records)}/{len(groups)} records "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
    print(f"[paraphrase] wrote {len(todo)} records to {output} in {time.perf_counter() - start:.1f}s "
          f"({sampled - len(todo) * k} paraphrases regenerated, {issues} records with issues)")
    return output
