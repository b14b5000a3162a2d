"""The multiple-choice study's table (markdown on stdout): each ensemble run under every fusion rule against one prompt.

    python studies/multiple_choice/table.py ORIGIN_RUN ENSEMBLE_RUN [ENSEMBLE_RUN ...]

Every run is a ``predict`` output directory of :class:`~selfens_pl.heads.choice.ChoiceHead`; its records keep every
member's option log-likelihoods (``member_scores [N][O]``, ``option_lengths [O]``; a ``fuse: attention`` run: its
one fused sequence's, read under its two rules), so each rule of
:data:`~selfens_pl.scoring.choice.CHOICE_RULES` is applied to the same scores here
(:func:`~selfens_pl.scoring.choice.fuse_option_scores`, the head's own function) instead of scoring every option
again per rule; the rule a run was made with must give back every record's own ``choice`` (checked, else an error).
The one-prompt control (``members: origin``) picks its own most likely option (per token for ``mean_token``, the
control that rule is compared with). Gains: paired bootstrap 95% interval over the facts
(:func:`~selfens_pl.scoring.stats.paired_bootstrap`, 2,000 resamples, seed 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from selfens_pl.scoring.choice import CHOICE_RULES, fuse_option_scores
from selfens_pl.scoring.rescoring import best
from selfens_pl.scoring.stats import aligned, paired_bootstrap


def records(run: Path) -> dict[str, dict]:
    """``{id: record}`` of a run. A ``fuse: attention`` run (``choice_attention``: one fused sequence scored each
    option, no member on its own) gets that sequence's scores as its one row of ``member_scores``."""
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    for r in rows:
        if r["member_scores"] is None:
            if r["method"] != "choice_attention":
                raise SystemExit(f"{run}: record {r['id']!r} has no member scores (a choice_attention run's with the "
                                 "sequence rule, mixture, is read)")
            r["member_scores"] = [r["option_scores"]]
    return {str(r["id"]): r for r in rows}


def right(recs: dict[str, dict], rule: str) -> dict[str, float]:
    """``{id: 1.0 if the option ``rule`` picks from the record's member scores is the gold one}``."""
    return {i: float(best(fuse_option_scores(r["member_scores"], r["option_lengths"], rule)) == r["gold"])
            for i, r in recs.items()}


def check_own_rule(run: Path, recs: dict[str, dict]) -> str:
    """The rule the run was made with (its method), after checking it gives back every record's choice."""
    method = next(iter(recs.values()))["method"]
    rule = "mixture" if method == "choice_attention" else method.removeprefix("choice_")
    for i, r in recs.items():
        if best(fuse_option_scores(r["member_scores"], r["option_lengths"], rule)) != r["choice"]:
            raise SystemExit(f"{run}: record {i!r}: rule {rule!r} over its member scores does not give its choice")
    return rule


def member_mean(recs: dict[str, dict]) -> dict[str, float]:
    """``{id: share of members whose own most likely option is the gold one}``: the mean single member."""
    return {i: r["member_choices"].count(r["gold"]) / len(r["member_choices"]) for i, r in recs.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("origin", type=Path, help="the one-prompt run (ChoiceHead members: origin)")
    p.add_argument("runs", type=Path, nargs="+", help="ensemble runs (ChoiceHead members: all)")
    args = p.parse_args(argv)
    base_recs = records(args.origin)
    control = {"sequence": right(base_recs, "mixture"), "per token": right(base_recs, "mean_token")}
    n = len(base_recs)
    print(f"Facts: {n}. One prompt (`{args.origin.name}`): {100 * sum(control['sequence'].values()) / n:.1f}% "
          f"(most likely option), {100 * sum(control['per token'].values()) / n:.1f}% (per token).\n")
    print("| run | members | rule | accuracy | one prompt | gain over one prompt [95% CI] |")
    print("| --- | --- | --- | --- | --- | --- |")
    extras = []
    for run in args.runs:
        recs = records(run)
        own_rule = check_own_rule(run, recs)
        attention = next(iter(recs.values()))["method"] == "choice_attention"
        blocks = (yaml.safe_load((run / "config.yaml").read_text())["data"].get("demo_blocks") or 1) if attention else 1
        members = {len(r["paraphrases"]) * blocks if attention else len(r["member_scores"]) for r in recs.values()}
        # one fused sequence per option: its log-likelihood (mixture) or per token; the other rules need members
        for rule in ("mixture", "mean_token") if attention else CHOICE_RULES:
            base = control["per token" if rule == "mean_token" else "sequence"]
            ids, a, b = aligned(right(recs, rule), base, (str(run), str(args.origin)))
            gain = paired_bootstrap(a, b, 2000, 0)
            mark = " (run's own)" if rule == own_rule else ""
            mark += ", attention" if attention else ""
            print(f"| {run.name} | {'/'.join(map(str, sorted(members)))} | {rule}{mark} | "
                  f"{100 * sum(a) / len(ids):.1f} | {100 * sum(b) / len(ids):.1f} | {gain.format()} |")
        if attention:
            continue
        single = member_mean(recs)
        oracle = sum(r["gold"] in r["member_choices"] for r in recs.values()) / len(recs)
        extras.append(f"- `{run.name}`: mean single member {100 * sum(single.values()) / len(single):.1f}%, "
                      f"member oracle (some member's own choice right) {100 * oracle:.1f}%.")
    print("\n" + "\n".join(extras))


if __name__ == "__main__":
    main()
