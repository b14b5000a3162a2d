"""Accuracy against the number of paraphrases K: every method for K = 1..K_max, one table and one chart.

    python -m selfens_pl sweep --config configs/sweep_myriadlama.yaml
    python -m selfens_pl sweep --config configs/sweep_myriadlama.yaml --data.limit 20 --output_dir outputs/sweep_20

The groups come from ``--data.*`` exactly as ``predict`` reads them (MyriadLAMA: ``--data.num_manual`` manual then
``--data.num_auto`` automatic paraphrases per fact); K = k keeps the first k paraphrases of every group, so with
3 + 3 the curve adds the manual paraphrases first, then the automatic ones.

Work is reused, never re-decoded:

* one ``per_prompt`` pass over all K_max paraphrases answers every paraphrase on its own. From it, for every K:
  the **mean single-paraphrase** accuracy (the mean over paraphrases 0..K-1 of each one's accuracy), the
  **oracle** (any of the K right), the **vote** (:func:`selfens_pl.heads.vote.vote_records` over the first K
  answers: VoteHead's rule on the same decodes) and **origin** (paraphrase 0; K does not matter);
* each fused head (``--heads``) runs once per K >= 2; the LogitFusion heads (unweighted rules) of one calibration
  mode share one encoding of each fact's rows per K (:mod:`selfens_pl.commands.sweep_shared`: every paraphrase and content-free prompt is
  prefilled once and its KV cache copied to every rule's group). At K = 1 an uncalibrated fused head fuses one paraphrase,
  which is that paraphrase's own distribution at every step (tested token for token in tests/test_ragged.py), so
  its K = 1 point is the origin run; a calibrated head changes even one paraphrase and runs at K = 1 too;
* groups are batched in order of prompt length (less padding); records are written sorted by id;
* every fused record's ``agreement`` (the share of its K paraphrases whose own answer agrees with it) comes from
  the per_prompt answers at no cost.

Outputs under ``--output_dir``: ``runs/<method>_k<K>/`` (``predictions.jsonl`` + ``summary.json``, readable by
``python -m selfens_pl report``), ``sweep.md`` (the table), ``sweep.png`` (accuracy against K) and ``sweep.json``
(every number and time). A rerun reuses every run whose ``summary.json`` was written with the same settings, so an
interrupted sweep resumes run by run.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from selfens_pl.models import EMBEDDED_MODEL

SINGLE = "mean single paraphrase"
ORACLE = "oracle (any paraphrase)"


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from selfens_pl.data import ParaphraseDataModule
    from selfens_pl.heads import FusionHead

    parser = ArgumentParser(prog="python -m selfens_pl sweep",
                            description="Every method for K = 1..K_max paraphrases: one table and one chart.")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the flags below")
    parser.add_argument("--model", type=str, default=EMBEDDED_MODEL,
                        help="Alias, smollm2-135m-instruct (embedded), local directory or hub id")
    parser.add_class_arguments(ParaphraseDataModule, "data", help="The groups, exactly as predict's --data")
    parser.add_argument("--heads", type=list[FusionHead], default=[],
                        help="Fused heads to sweep over K (class_path + init_args each, as predict's --model.head); "
                             "origin, per_prompt, vote, the mean single paraphrase and the oracle always come "
                             "from one per_prompt pass")
    parser.add_argument("--k_max", type=int | None, default=None,
                        help="Largest K (default: the smallest group's size; a group with fewer is an error)")
    parser.add_argument("--max_new_tokens", type=int, default=10, help="Most tokens per answer")
    parser.add_argument("--stop", type=str | None, default="\n", help="Stop string ending an answer")
    parser.add_argument("--bidirectional", type=bool, default=False,
                        help="Lemma match also accepts the prediction inside a gold answer")
    parser.add_argument("--batch_rows", type=int, default=64,
                        help="Prompt rows encoded per batch: a batch takes max(1, batch_rows // rows per group) "
                             "groups (the shared LogitFusion run then decodes one copy of those rows per rule)")
    parser.add_argument("--device", type=str | None, default=None, help="cpu, cuda, ... (default: cuda if present)")
    parser.add_argument("--output_dir", type=str, default="outputs/sweep", help="Where runs, table and chart go")
    return parser


def head_label(head) -> str:
    """The method name of a run: the head's, plus a FlexFusion's first-token rule when it is not avg."""
    from selfens_pl.heads import FlexFusion

    if isinstance(head, FlexFusion) and head.fusion != "avg":
        return head.method.replace(f"flex_{head.layout}", f"flex_{head.layout}_{head.fusion}")
    return head.method


def head_spec(head) -> dict:
    """What defines a head's answers (for reuse checks): its class and public settings."""
    return {"class": type(head).__name__,
            **{k: v for k, v in sorted(vars(head).items()) if not k.startswith("_") and k != "training"
               and isinstance(v, (str, int, float, bool, type(None)))}}


def single_is_origin(head) -> bool:
    """An uncalibrated fused head with one paraphrase answers exactly as origin (tests/test_ragged.py)."""
    from selfens_pl.heads import FlexFusion, LogitFusion

    return isinstance(head, (LogitFusion, FlexFusion)) and getattr(head, "calibration", "none") == "none"


def rows_per_group(head, k: int) -> int:
    from selfens_pl.heads import FlexFusion, LogitFusion

    if isinstance(head, LogitFusion):
        return k + head.content_free_rows(k)
    if isinstance(head, FlexFusion):
        return 1
    return k


class Sweep:
    """State shared by the runs of one sweep: decoder, prompts, groups, output folder, settings, timings."""

    def __init__(self, cfg, groups: list[dict], template, decoder, prompts):
        from selfens_pl.agreement import Lemmas

        self.cfg, self.groups, self.template, self.decoder, self.prompts = cfg, groups, template, decoder, prompts
        self.out = Path(cfg.output_dir)
        self.lemmas = Lemmas()
        data = {k: v for k, v in vars(cfg.data).items() if k not in ("batch_size", "num_workers")}
        self.base_settings = {"model": cfg.model, "max_new_tokens": cfg.max_new_tokens, "stop": cfg.stop,
                              "bidirectional": cfg.bidirectional, "data": data,
                              "ids": hashlib.sha256("\n".join(g["id"] for g in groups).encode()).hexdigest()}
        self.seconds: dict[str, float] = {}
        self._lengths: dict[str, int] = {}
        self.shared_seconds: dict[int, dict[tuple, float]] = {}  # K -> {the rules decoded together: seconds}
        self.shared_names: set[str] = set()

    # -- runs on disk ---------------------------------------------------------------------------------------------
    def settings(self, spec: dict, k: int) -> dict:
        return {**self.base_settings, "head": spec, "k": k}

    def reuse(self, name: str, settings: dict) -> list[dict] | None:
        """The records of ``runs/<name>`` if it finished with exactly ``settings``."""
        from selfens_pl.commands.report import read_jsonl

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
        self.seconds[name] = float(summary.get("seconds") or 0.0)
        if summary.get("decoded_with"):
            self.shared_seconds.setdefault(int(summary["k"]), {})[tuple(summary["decoded_with"])] = self.seconds[name]
            self.shared_names.add(name)
        print(f"[sweep] {name}: reused ({len(records)} records)", flush=True)
        return records

    def save(self, name: str, method: str, k: int, records: list[dict], seconds: float, settings: dict,
             derived: str | None = None, shared: list[str] | None = None) -> None:
        from selfens_pl.writer import record_scores, write_records

        folder = self.out / "runs" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").unlink(missing_ok=True)  # never a summary beside half-written predictions
        records = write_records(folder / "predictions.jsonl", records)
        n = len({r["id"] for r in records})
        summary = {"method": method, "model": self.cfg.model, "n": n, "records": len(records), "k": k,
                   **record_scores(records), "seconds": round(seconds, 3),
                   "questions_per_s": round(n / seconds, 3) if seconds else None, "derived_from": derived,
                   "decoded_with": shared, "sweep_settings": settings}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.seconds[name] = seconds

    # -- decoding -------------------------------------------------------------------------------------------------
    def batches(self, groups: list[dict], rows: int):
        """``groups`` in order of their longest question (fewer pad tokens), ``batch_rows // rows`` per batch."""
        size = max(1, self.cfg.batch_rows // max(1, rows))
        ordered = sorted(groups, key=lambda g: max(self.length(p) for p in g["paraphrases"]))
        for start in range(0, len(ordered), size):
            yield ordered[start:start + size]

    def length(self, paraphrase: str) -> int:
        if paraphrase not in self._lengths:
            self._lengths[paraphrase] = len(self.prompts.question_ids(paraphrase))
        return self._lengths[paraphrase]

    def score(self, records: list[dict]) -> list[dict]:
        from selfens_pl.metrics import is_match

        for rec in records:
            rec["correct"] = is_match(rec["prediction"], rec["answers"], bidirectional=self.cfg.bidirectional)
        return records

    def per_prompt(self, k_max: int) -> list[dict]:
        """Every paraphrase of every group answered on its own, with its token log-probabilities (for votes)."""
        from selfens_pl.heads import PerPromptHead
        from selfens_pl.heads.base import paraphrase_generations
        from selfens_pl.heads.per_prompt import per_prompt_records

        head, name = PerPromptHead(), f"per_prompt_k{k_max}"
        settings = self.settings(head_spec(head), k_max)
        records = self.reuse(name, settings)
        if records is not None:
            return records
        print(f"[sweep] {name}: answering {len(self.groups) * k_max} paraphrases on their own", flush=True)
        start, records = time.perf_counter(), []
        for chunk in self.batches(self.groups, k_max):
            generations = paraphrase_generations(self.decoder, self.prompts, chunk)
            chunk_records = per_prompt_records(head, chunk, generations)
            for rec, gen in zip(chunk_records, [gen for gens in generations for gen in gens]):
                rec["logprobs"] = gen.logprobs
            records += chunk_records
        self.save(name, "per_prompt", k_max, self.score(records), time.perf_counter() - start, settings)
        return records

    def fused(self, head, label: str, k: int, answers: dict[str, list[str]]) -> list[dict]:
        """``head`` on every group cut to its first ``k`` paraphrases; ``agreement`` from the per_prompt answers."""
        name = f"{label}_k{k}"
        settings = self.settings(head_spec(head), k)
        records = self.reuse(name, settings)
        if records is not None:
            return records
        groups = [dict(g, paraphrases=g["paraphrases"][:k]) for g in self.groups]
        print(f"[sweep] {name}: {len(groups)} groups x {rows_per_group(head, k)} rows", flush=True)
        start, records = time.perf_counter(), []
        for chunk in self.batches(groups, rows_per_group(head, k)):
            records += head.generate(self.decoder, self.prompts, chunk)
        seconds = time.perf_counter() - start
        self.finish(records, answers, k)
        self.save(name, label, k, records, seconds, settings)
        print(f"[sweep] {name}: {seconds:.1f}s", flush=True)
        return records

    def finish(self, records: list[dict], answers: dict[str, list[str]], k: int) -> list[dict]:
        """Fill ``agreement`` from the per_prompt answers of the first ``k`` paraphrases, and score."""
        from selfens_pl.agreement import agreement_share

        for rec in records:
            rec["agreement"] = agreement_share(rec["prediction"], answers[str(rec["id"])][:k], self.lemmas)
        return self.score(records)

    def shared(self, heads: list, labels: list[str], k: int, answers: dict[str, list[str]]) -> list[list[dict]]:
        """Every head of ``heads`` (unweighted LogitFusion rules) at ``k`` from one encoding of each fact's rows;
        reused as a whole when every head's run at ``k`` is on disk with the same settings."""
        from selfens_pl.commands.sweep_shared import SharedLayout, shared_generate

        names = [f"{label}_k{k}" for label in labels]
        settings = [self.settings(head_spec(h), k) for h in heads]
        reused = [self.reuse(n, s) for n, s in zip(names, settings)]
        if all(r is not None for r in reused):
            return reused
        rows = SharedLayout(heads, k).rows
        print(f"[sweep] K={k}: {', '.join(labels)} from one encoding of {len(self.groups)} groups x {rows} rows "
              f"({len(heads) * rows} decoded rows per group)", flush=True)
        start, out = time.perf_counter(), [[] for _ in heads]
        for chunk in self.batches([dict(g, paraphrases=g["paraphrases"][:k]) for g in self.groups], rows):
            for h, recs in enumerate(shared_generate(self.decoder, self.prompts, heads, chunk, k)):
                out[h] += recs
        seconds = time.perf_counter() - start
        for name, label, recs, setting in zip(names, labels, out, settings):
            self.shared_names.add(name)
            self.finish(recs, answers, k)
            self.save(name, label, k, recs, seconds, setting, derived=None, shared=labels)
        self.shared_seconds.setdefault(k, {})[tuple(labels)] = seconds
        print(f"[sweep] K={k}: {seconds:.1f}s for {len(heads)} rules", flush=True)
        return out


def accuracy(records: list[dict]) -> float:
    return sum(bool(r["correct"]) for r in records) / len(records)


def derived_runs(sweep: Sweep, per_prompt: list[dict], k_max: int) -> tuple[dict, list[dict]]:
    """Origin, mean single paraphrase, oracle and vote for every K from the per_prompt records."""
    from selfens_pl.decoding import Generation
    from selfens_pl.heads import VoteHead
    from selfens_pl.heads.vote import vote_records
    from selfens_pl.scores import accuracy_by_paraphrase, oracle_accuracy

    by_id: dict[str, list[dict]] = {}
    for rec in per_prompt:
        by_id.setdefault(str(rec["id"]), []).append(rec)
    for recs in by_id.values():
        recs.sort(key=lambda r: r["paraphrase_index"])
    curves: dict[str, dict[int, float]] = {SINGLE: {}, ORACLE: {}, "vote": {}}
    for k in range(1, k_max + 1):
        first_k = [r for r in per_prompt if r["paraphrase_index"] < k]
        per_index, _ = accuracy_by_paraphrase(first_k)
        curves[SINGLE][k] = sum(per_index.values()) / k
        curves[ORACLE][k], _ = oracle_accuracy(first_k)
        gens = [[Generation(text=r["generation"], logprobs=r["logprobs"]) for r in by_id[g["id"]][:k]]
                for g in sweep.groups]
        cut = [dict(g, paraphrases=g["paraphrases"][:k]) for g in sweep.groups]
        votes = sweep.score(vote_records(VoteHead(), cut, gens))
        sweep.save(f"vote_k{k}", "vote", k, votes, sweep.seconds[f"per_prompt_k{k_max}"],
                   sweep.settings(head_spec(VoteHead()), k), derived=f"per_prompt_k{k_max}")
        curves["vote"][k] = accuracy(votes)
    origin = []
    for g in sweep.groups:
        rec = dict(by_id[g["id"]][0], method="origin")
        rec.pop("logprobs", None)
        origin.append(rec)
    sweep.save("origin", "origin", 1, origin, 0.0, sweep.settings({"class": "OriginHead"}, 1),
               derived=f"per_prompt_k{k_max} (paraphrase 0)")
    curves["origin"] = {k: accuracy(origin) for k in range(1, k_max + 1)}
    return curves, origin


def markdown(curves: dict[str, dict[int, float]], sweep: "Sweep", k_max: int, n: int, model: str,
             total: float, cpu: float, tokens: int) -> str:
    ks = list(range(1, k_max + 1))
    head = ["method"] + [f"K={k}" for k in ks] + ["best gain over mean single (K)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    single = curves[SINGLE]
    for method, curve in curves.items():
        cells = [f"{100 * curve[k]:.1f}" if k in curve else "–" for k in ks]
        k_best = max((k for k in curve if k >= 2), key=lambda k: (curve[k] - single[k], -k), default=None)
        gain = "" if method in (SINGLE, ORACLE, "origin") or k_best is None else \
            f"{100 * (curve[k_best] - single[k_best]):+.1f} (K={k_best})"
        lines.append("| " + " | ".join([method] + cells + [gain]) + " |")
    per_prompt = sweep.seconds.get(f"per_prompt_k{k_max}", 0.0)
    times = [f"per_prompt pass ({n} x {k_max} answers; origin, vote, oracle, mean single): {per_prompt:.0f} s"]
    if sweep.shared_seconds:
        times.append("LogitFusion rules, one shared encoding per K: " + ", ".join(
            f"K={k} {sum(s.values()):.0f} s" for k, s in sorted(sweep.shared_seconds.items())))
    for method in curves:
        runs = [sweep.seconds[f"{method}_k{k}"] for k in ks if f"{method}_k{k}" in sweep.seconds
                and f"{method}_k{k}" not in sweep.shared_names]
        if runs and method not in ("vote", "origin") and sum(runs) > 0:
            times.append(f"{method}: {sum(runs):.0f} s")
    return "\n".join(lines) + (
        f"\n\naccuracy (%, lemma match) on {n} groups, {model}, greedy. '{SINGLE}' at K: the mean accuracy of "
        f"paraphrases 0..K-1 each answered alone; origin (paraphrase 0), vote and the oracle come from the same "
        f"per_prompt answers. Gain: accuracy minus the mean single-paraphrase accuracy at the same K (the best "
        f"K >= 2). An uncalibrated fused rule at K=1 is the origin run.\n\nDecode time: " + "; ".join(times)
        + f". Sweep wall time {total / 60:.1f} min; CPU time of the process {cpu / 60:.1f} min (all its threads; "
        "on a machine shared with other jobs the wall time includes waiting for the CPU); "
        f"{tokens:,} tokens fed through the model (prompt tokens with padding, and decoded tokens; runs reused "
        "from disk count none).\n")


def draw(curves: dict[str, dict[int, float]], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    styles = {SINGLE: dict(color="black", linestyle="--", marker="o"), ORACLE: dict(color="grey", linestyle=":"),
              "origin": dict(color="black", linestyle="-.", marker=None)}
    # methods often tie at every K: distinct markers, sizes and a small sideways offset keep tied lines visible
    markers = "osD^vP*Xh<>"
    fused = [m for m in curves if m not in styles]
    for method, curve in curves.items():
        ks = sorted(curve)
        if method in styles:
            style, shift = styles[method], 0.0
        else:
            i = fused.index(method)
            style = dict(marker=markers[i % len(markers)], markersize=7 - (i % 3), alpha=0.9)
            shift = 0.04 * (i - (len(fused) - 1) / 2)
        ax.plot([k + shift for k in ks], [100 * curve[k] for k in ks], label=method, **style)
    ax.set_xlabel("K (paraphrases per question)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(sorted({k for c in curves.values() for k in c}))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    from selfens_pl.commands.report import save_figure

    return save_figure(fig, out)


def main(argv: list[str] | None = None) -> Path:
    start, cpu_start = time.perf_counter(), time.process_time()
    parser = build_parser()
    cfg = parser.parse_args(argv)
    if cfg.batch_rows < 1:
        raise ValueError(f"--batch_rows must be >= 1, got {cfg.batch_rows}")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    init = instantiate(cfg)
    heads = list(init.heads)
    labels = [head_label(h) for h in heads]
    for label in labels:
        if labels.count(label) > 1 or label in ("origin", "per_prompt", "vote"):
            raise ValueError(f"--heads: two heads (or a head and a built-in run) are both called {label!r}")
    data = init.data
    data.setup("predict")
    groups, template = data.groups, data.template
    sizes = {len(g["paraphrases"]) for g in groups}
    k_max = cfg.k_max or min(sizes)
    if k_max < 1:
        raise ValueError(f"--k_max must be >= 1, got {k_max}")
    for g in groups:
        if len(g["paraphrases"]) < k_max:
            raise ValueError(f"record {g['id']!r} has {len(g['paraphrases'])} paraphrases, fewer than "
                             f"--k_max={k_max}")
    groups = [dict(g, paraphrases=g["paraphrases"][:k_max]) for g in groups]

    from selfens_pl.commands.paraphrase import load_decoder
    from selfens_pl.commands.sweep_shared import SharedRowsDecoder, shares_rows
    from selfens_pl.prompts import PromptTokenizer

    # a SharedRowsDecoder: the LogitFusion rules of one K decode from one encoding of each fact's rows
    decoder = load_decoder(cfg.model, cfg.max_new_tokens, cfg.device, cfg.stop, SharedRowsDecoder)
    sweep = Sweep(cfg, groups, template, decoder, PromptTokenizer(decoder.tokenizer, template))
    per_prompt = sweep.per_prompt(k_max)
    curves, origin = derived_runs(sweep, per_prompt, k_max)
    answers: dict[str, list[str]] = {}
    for rec in sorted(per_prompt, key=lambda r: r["paraphrase_index"]):
        answers.setdefault(str(rec["id"]), []).append(rec["prediction"])
    for label in labels:
        curves[label] = {}
    shared = [i for i, h in enumerate(heads) if shares_rows(h)]
    for i, head in enumerate(heads):  # K = 1 of uncalibrated fused heads: the origin run
        if single_is_origin(head):
            records = [dict(r, method=labels[i], paraphrase_index=None) for r in origin]
            sweep.save(f"{labels[i]}_k1", labels[i], 1, records, 0.0, sweep.settings(head_spec(head), 1),
                       derived="origin (one paraphrase fuses to itself)")
            curves[labels[i]][1] = accuracy(records)
    for k in range(1, k_max + 1):
        todo = [i for i in shared if not (k == 1 and single_is_origin(heads[i]))]
        # one encoding per calibration mode: an uncalibrated rule would otherwise decode the content-free rows too
        for mode in dict.fromkeys(heads[i].calibration for i in todo):
            part = [i for i in todo if heads[i].calibration == mode]
            for i, records in zip(part, sweep.shared([heads[i] for i in part], [labels[i] for i in part], k, answers)):
                curves[labels[i]][k] = accuracy(records)
    for i, head in enumerate(heads):
        if i in shared:
            continue
        for k in range(1, k_max + 1):
            if not (k == 1 and single_is_origin(head)):
                curves[labels[i]][k] = accuracy(sweep.fused(head, labels[i], k, answers))
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    n, out = len(groups), sweep.out
    table = markdown(curves, sweep, k_max, n, cfg.model, total, cpu, decoder.stats.tokens_fed)
    (out / "sweep.md").write_text(f"# selfens_pl sweep\n\n{table}")
    draw(curves, out / "sweep.png", f"accuracy against K\nmodel: {cfg.model}; n = {n} groups")
    (out / "sweep.json").write_text(json.dumps({
        "model": cfg.model, "n": n, "k_max": k_max, "curves": {m: {str(k): v for k, v in c.items()}
                                                              for m, c in curves.items()},
        "decode_seconds": sweep.seconds, "wall_seconds": round(total, 1), "cpu_seconds": round(cpu, 1),
        "tokens_fed": decoder.stats.tokens_fed, "forward_calls": decoder.stats.forward_calls},
        indent=2) + "\n")
    print(table)
    print(f"[sweep] wrote {out / 'sweep.md'}, {out / 'sweep.png'} and {out / 'sweep.json'} in {total / 60:.1f} min")
    return out
