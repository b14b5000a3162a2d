"""Accuracy and cost against K (paraphrases) and M (few-shot blocks) for every method: tables with paired intervals,
charts, and every run on disk.

    python -m selfens_pl sweep --config studies/myriadlama_sweep/sweep_myriadlama.yaml
    python -m selfens_pl sweep --config studies/myriadlama_sweep/sweep_myriadlama.yaml --ks 1,3 --ms 1 --data.limit 50

The groups come from ``--data.*`` exactly as ``predict`` reads them (``--data.path`` may list several files). For
every ``K`` in ``--ks`` and ``M`` in ``--ms`` a group is asked with its first ``K`` paraphrases x its first ``M``
few-shot blocks (block 0 the configured prompt, the others drawn from ``--data.few_shot_pool``; the sweep sets
``--data.demo_blocks`` to the largest ``M``).

Work is reused, never repeated (:mod:`selfens_pl.sweep.engine`): per batch of facts, the prompts of all members at
the largest ``(K, M)`` are encoded once; every member's own answer, every candidate answer's score under every
member and every LogitFusion rule at every ``(K, M)`` come from that one encoding. How a head is swept is the
sweep's plan for it (:func:`selfens_pl.sweep.plan.plan_for`): an uncalibrated LogitFusion rule is decoded by that
pass; VoteHead, RerankHead without a fused candidate and a cascade escalating to either are derived for every
``(K, M)`` without decoding, by the head's own ``decide`` on the pass's answers (:mod:`selfens_pl.sweep.derive`; a
cascade with its curve over thresholds), as are origin, per_prompt and vote, and the controls ``knn_prompt`` and
the copies (:mod:`selfens_pl.heads.controls`). Any other head (FlexFusion, calibrated or weighted LogitFusion,
RerankHead with a fused candidate, ``knn_prompt_all``, self-consistency) runs on its own per ``(K, M)`` through
``head.generate``.

Every gain is given against origin (paraphrase 0, standard prompt) and against the mean single paraphrase
(paraphrases ``< K``, standard prompt) with a paired bootstrap 95% interval over facts (:mod:`selfens_pl.scoring.gains`),
and, where controls were swept, against the strongest control at its ``(K, M)`` (:func:`selfens_pl.sweep.report.gains`);
every run states its cost per question. Outputs under ``--output_dir``: ``facts.jsonl`` (the engine's rows,
resumable fact by fact), ``runs/<method>_k<K>_m<M>/`` (``predictions.jsonl`` + ``summary.json``, readable by
``python -m selfens_pl report``), ``sweep.md``, ``sweep.png`` (accuracy against K, a panel per M),
``sweep_cost.png`` (accuracy against decoded rows per question, cascade curves included) and ``sweep.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from selfens_pl.data import origin_share
from selfens_pl.data.demos import cut_blocks
from selfens_pl.data.group import Group
from selfens_pl.engine.fusion import split_rule_key
from selfens_pl.errors import UserError
from selfens_pl.jsonl import read_jsonl, write_records
from selfens_pl.progress import ProgressBar
from selfens_pl.scoring.metrics import is_match
from selfens_pl.scoring.summaries import record_scores
from selfens_pl.sweep.derive import Run
from selfens_pl.sweep.engine import engine_pass
from selfens_pl.sweep.facts import FactsFile

SINGLE = "mean single paraphrase"
MEMBER = "mean single member"
ORACLE = "oracle (any member)"
CANDIDATES = "oracle (any candidate, {})"


def candidates_row(first_tokens: int, demo_answers: bool) -> str:
    """The report's candidate-oracle row of rescoring runs with these wider candidates."""
    what = ([f"top{first_tokens}"] if first_tokens > 1 else []) + (["+ demo answers"] if demo_answers else [])
    return CANDIDATES.format(" ".join(what))
BUILT_IN = ("origin", "per_prompt", "vote")


def int_list(value, flag: str) -> list[int]:
    """``"1,3,6"``, ``[1, 3, 6]`` or ``3`` -> sorted distinct positive ints, or a ValueError naming ``flag``."""
    items = value if isinstance(value, list) else str(value).replace(" ", "").split(",")
    try:
        out = sorted({int(v) for v in items if str(v) != ""})
    except ValueError:
        raise UserError(f"{flag}={value!r}: give whole numbers separated by commas, e.g. 1,3,6") from None
    if not out or out[0] < 1:
        raise UserError(f"{flag}={value!r}: give whole numbers >= 1, e.g. 1,3,6")
    return out


def head_spec(head) -> dict:
    """What defines a head's answers (for reuse checks): its class and public settings."""
    spec = {"class": type(head).__name__}
    for key, value in sorted(vars(head).items()):
        if not key.startswith("_") and key != "training" and isinstance(value, (str, int, float, bool, type(None))):
            spec[key] = value
    ensemble = getattr(head, "ensemble", None)
    if ensemble is not None:
        spec["ensemble"] = head_spec(ensemble)
    return spec


class Sweep:
    """State of one sweep: settings, decoder, groups (cut to the largest K and M), output folder, runs."""

    def __init__(self, cfg, grid, groups: list[Group], decoder, prompts):
        self.cfg, self.grid, self.groups, self.decoder, self.prompts = cfg, grid, groups, decoder, prompts
        self.out = Path(cfg.output_dir)
        self._matches: dict[tuple, bool] = {}
        data = {k: v for k, v in vars(cfg.data).items() if k not in ("batch_size", "num_workers")}
        self.base = {"model": cfg.model, "max_new_tokens": cfg.max_new_tokens, "stop": cfg.stop, "data": data,
                     "ids": hashlib.sha256("\n".join(g["id"] for g in groups).encode()).hexdigest()}

    def is_match(self, prediction: str, answers: list[str]) -> bool:
        """The lemma rule, memoised: the derived methods match the same few answers of a fact many times."""
        key = (prediction, tuple(answers))
        if key not in self._matches:
            self._matches[key] = is_match(prediction, answers, bidirectional=self.cfg.bidirectional)
        return self._matches[key]

    def batches(self, groups: list[Group]):
        """``groups`` in order of their longest question (fewer pad tokens), ``batch_rows // rows`` per batch."""
        rows = max((len(g["paraphrases"]) * (1 + len(g.get("blocks") or ())) for g in groups), default=1)
        size = max(1, self.cfg.batch_rows // rows)
        ordered = sorted(groups, key=lambda g: max(len(p) for p in g["paraphrases"]))
        for start in range(0, len(ordered), size):
            yield ordered[start:start + size]

    # -- the engine pass ------------------------------------------------------------------------------------------
    def engine(self, rules: list[str], rescore: bool, first_tokens: int = 1,
               demo_answers: bool = False) -> tuple[dict[str, dict], float]:
        """Every fact's engine row, from ``facts.jsonl`` where already there; the seconds it took now.
        ``first_tokens > 1``: with each member's alternatives (the most any rescoring head takes);
        ``demo_answers``: with the demonstrations' answers scored too."""
        settings = {**self.base, "ks": list(self.grid.ks), "ms": list(self.grid.ms), "rules": rules,
                    "rescore": rescore}
        if any(split_rule_key(rule)[1] == origin_share.AUTO for rule in rules):
            # what "auto" resolves to for generated paraphrases: rows fused under another default are not reused
            settings["generated_share"] = origin_share.GENERATED_SHARE
        if first_tokens > 1:  # (rows without alternatives keep the settings they were written with)
            settings["first_tokens"] = first_tokens
        if demo_answers:
            settings["demo_answers"] = True
        store = FactsFile(self.out, settings)
        done = store.load()
        ids = {g["id"] for g in self.groups}
        done = {i: row for i, row in done.items() if i in ids}
        store.start(done)
        todo = [g for g in self.groups if g["id"] not in done]
        start = time.perf_counter()
        if todo:
            print(f"[sweep] {len(todo)} facts x {self.grid.k_max * self.grid.m_max} members (K={self.grid.k_max}, "
                  f"M={self.grid.m_max}): answers, "
                  + (f"{first_tokens - 1} alternatives each, " if first_tokens > 1 else "")
                  + ("the demonstrations' answers, " if demo_answers else "")
                  + f"{'rescoring, ' if rescore else ''}"
                  f"{len(rules)} fused rules at every (K, M)"
                  + (f"; {len(done)} facts reused from {store.path}" if done else ""), flush=True)
            with ProgressBar(len(todo), "sweep: facts", unit="facts") as bar:
                for chunk in self.batches(todo):
                    rows = engine_pass(self.decoder, self.prompts, chunk, self.grid, rules, rescore, first_tokens,
                                       demo_answers)
                    store.append(rows)
                    done.update({row["id"]: row for row in rows})
                    bar.advance(len(chunk))
        elif done:
            print(f"[sweep] every fact reused from {store.path}", flush=True)
        return done, time.perf_counter() - start

    # -- runs on disk ---------------------------------------------------------------------------------------------
    def settings(self, spec: dict, k: int, m: int) -> dict:
        own = {**self.base, "head": spec, "k": k, "m": m}
        if origin_share.AUTO in (spec.get("origin_share"), spec.get("ensemble", {}).get("origin_share")):
            own["generated_share"] = origin_share.GENERATED_SHARE  # what "auto" meant when the run was made
        return own

    def reuse(self, name: str, settings: dict):
        """``(records, seconds, prompt tokens)`` of ``runs/<name>`` if it finished with exactly ``settings``."""
        folder = self.out / "runs" / name
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if summary.get("sweep_settings") != json.loads(json.dumps(settings)):
            return None
        records = read_jsonl(folder / "predictions.jsonl")
        if len(records) != summary.get("records"):
            return None
        print(f"[sweep] {name}: reused ({len(records)} records)", flush=True)
        return records, float(summary.get("seconds") or 0.0), summary.get("cost", {})

    def save(self, run, settings: dict | None, derived: str | None) -> None:
        folder = self.out / "runs" / run.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").unlink(missing_ok=True)  # never a summary beside half-written predictions
        records = write_records(folder / "predictions.jsonl", run.records)
        n = len({r["id"] for r in records})
        summary = {"method": run.method, "model": self.cfg.model, "n": n, "records": len(records), "k": run.k,
                   "m": run.m, **record_scores(records), "seconds": round(run.seconds, 3),
                   "questions_per_s": round(n / run.seconds, 3) if run.seconds else None,
                   "cost": {"decoded_rows": run.rows, "prompt_tokens": round(run.prompt_tokens, 1),
                            "scored_tokens": None if run.scored_tokens is None else round(run.scored_tokens, 1)},
                   "derived_from": derived, "sweep_settings": settings}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def generic(self, head, label: str, k: int, m: int):
        """``head`` on every group cut to ``k`` paraphrases and ``m`` blocks (its own decoding)."""
        settings = self.settings(head_spec(head), k, m)
        name = f"{label}_k{k}_m{m}"
        reused = self.reuse(name, settings)
        groups = [cut_blocks(dict(g, paraphrases=g["paraphrases"][:k]), m) for g in self.groups]
        if reused is not None:
            records, seconds, cost = reused
            return Run(label, k, m, records, cost.get("decoded_rows", 0), cost.get("prompt_tokens", 0),
                       cost.get("scored_tokens"), seconds)
        start, before, records = time.perf_counter(), self.decoder.stats.prompt_tokens, []
        with ProgressBar(len(groups), f"sweep: {name}", unit="groups") as bar:
            for chunk in self.batches(groups):
                for rec in head.generate(self.decoder, self.prompts, chunk):
                    rec["correct"] = self.is_match(rec["prediction"], rec["answers"])
                    rec.update(k=k, m=m)
                    records.append(rec)
                bar.advance(len(chunk))
        members = {g["id"]: len(g["paraphrases"]) * m for g in groups}  # fewer in a short group
        rows = sum(r.get("decoded_rows", head.decoded_rows(members[r["id"]])) for r in records) / len(records)
        run = Run(label, k, m, records, rows, (self.decoder.stats.prompt_tokens - before) / len(groups),
                  seconds=time.perf_counter() - start)
        self.save(run, settings, None)
        return run

