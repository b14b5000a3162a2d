"""The lm-evaluation-harness model ``selfens_pl`` (selfens_pl/integrations/lm_eval.py) on the tiny model and the
shipped offline tasks: ``head=origin`` is lm_eval's own ``hf`` model, token for token and log-likelihood for
log-likelihood; a fused head is the package's own run (the Python API) on the same groups; fused option scores are
the members' own log-likelihoods fused by the rule."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm_eval is not installed (pip install -e '.[lm_eval]')")

import torch  # noqa: E402

from selfens_pl.api import Group  # noqa: E402
from selfens_pl.data.datamodule import demo_path  # noqa: E402
from selfens_pl.data.demos import load_pool  # noqa: E402
from selfens_pl.errors import UserError  # noqa: E402
from selfens_pl.heads import LogitFusion  # noqa: E402
from selfens_pl.integrations.lm_eval import SelfEnsembleEvalLM, cli, cut_at, task_dir  # noqa: E402
from selfens_pl.integrations.lm_eval_requests import read_paraphrase_file, split_context, task_pool  # noqa: E402

GEN, CHOICE = "selfens_webqa_demo", "selfens_webqa_choice"


@pytest.fixture(scope="module")
def tasks():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=task_dir(), include_defaults=False)


def evaluate(model, tasks, names, limit, model_args=None, **options):
    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=names, limit=limit, task_manager=tasks,
                                  log_samples=True, device="cpu", **options)
    # one (context, continuation or generation kwargs) and response per request, in order
    return {name: [(tuple(args), resp[0]) for s in out["samples"][name]
                   for args, resp in zip(s["arguments"], s["resps"], strict=True)] for name in names}


def demo_records(n: int) -> list[dict]:
    return [json.loads(line) for line in Path(demo_path()).read_text().splitlines()[:n]]


def test_origin_is_lm_evals_own_hf_model(tiny_model_dir, tasks, one_thread):
    """head=origin, no other member: every answer and every log-likelihood (and is_greedy) lm_eval's ``hf`` model
    gives on the same requests, and every answer the package's own origin run gives."""
    lm = SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), device="cpu")
    ours = evaluate(lm, tasks, [GEN, CHOICE], 3)
    theirs = evaluate("hf", tasks, [GEN, CHOICE], 3, f"pretrained={tiny_model_dir},dtype=float32")
    api = lm.ensemble.answer([r["paraphrases"][0] for r in demo_records(3)])  # predict's answers (tests/test_api.py)
    for (args, answer), (_, expected), own in zip(ours[GEN], theirs[GEN], api, strict=True):
        assert answer == expected == cut_at(own.generation, ("\n",))
    for (_, (loglik, greedy)), (_, (expected, expected_greedy)) in zip(ours[CHOICE], theirs[CHOICE], strict=True):
        assert loglik == pytest.approx(expected, abs=1e-4) and greedy == expected_greedy
    assert len(ours[CHOICE]) == 12  # 3 questions x 4 options
    # head=flex with one member: its fused sequence is the task's prompt, scored and checked for greed as hf does
    flex = evaluate(SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), device="cpu", head="flex"), tasks, [CHOICE], 3)
    for (_, (loglik, greedy)), (_, (expected, expected_greedy)) in zip(flex[CHOICE], theirs[CHOICE], strict=True):
        assert loglik == pytest.approx(expected, abs=1e-4) and greedy == expected_greedy


def test_fused_head_is_the_packages_own_run(tiny_model_dir, tasks, one_thread):
    """LogitFusion avg over 3 written paraphrases x 2 few-shot blocks (block 1: the 5 most similar questions of the
    built-in pool) through lm_eval = the Python API on the same groups, answer for answer."""
    lm = SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), device="cpu", head="avg", paraphrases=demo_path(),
                            demo_blocks=2, pool="webquestions-train", demo_selection="similar")
    ours = [answer for _, answer in evaluate(lm, tasks, [GEN], 3)[GEN]]
    recs = demo_records(3)
    groups = [Group(r["paraphrases"][0], paraphrases=r["paraphrases"][1:], id=f"{GEN}/{i}") for i, r in enumerate(recs)]
    api = lm.ensemble.answer(groups, head=LogitFusion("avg"), demo_blocks=2, pool="webquestions-train",
                             demo_selection="similar")
    assert ours == [cut_at(a.generation, ("\n",)) for a in api]
    # the requests were asked as the package asks them: lm_eval's prompt is the template's, byte for byte
    context = evaluate(lm, tasks, [GEN], 1)[GEN][0][0][0]
    assert context == lm.ensemble.template("webqa").render(recs[0]["paraphrases"][0])
    # pool=task: the task's own training docs (the shipped train split) are the same pool, so the same answers
    own = SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), device="cpu", head="avg", paraphrases=demo_path(),
                             demo_blocks=2, pool="task", demo_selection="similar")
    assert [answer for _, answer in evaluate(own, tasks, [GEN], 3)[GEN]] == ours
    assert own.task_pools[GEN] == load_pool("webquestions-train", "webqa")


def member_logliks(model, tokenizer, prompt: str, continuation: str) -> float:
    """The plain model's log-likelihood of ``continuation`` after ``prompt`` (one full forward, no cache)."""
    ids = tokenizer(prompt)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = model(torch.tensor([ids + cont])).logits[0].log_softmax(-1)
    return sum(float(logp[len(ids) - 1 + i, t]) for i, t in enumerate(cont))


def test_choice_rule_fuses_every_members_loglikelihood(tiny_model_dir, tasks, one_thread):
    """paraphrases=<file>: each option's score is the mixture (log mean probability) of its log-likelihood under
    the task's prompt and under each paraphrase's."""
    lm = SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), device="cpu", paraphrases=demo_path(),
                            choice_rule="mixture")
    got = evaluate(lm, tasks, [CHOICE], 1)[CHOICE]
    model, tokenizer = lm.ensemble.module.lm, lm.tokenizer
    template = lm.ensemble.template("webqa")
    for args, (score, _) in got:
        continuation = args[1]
        members = [member_logliks(model, tokenizer, template.render(p), continuation)
                   for p in demo_records(1)[0]["paraphrases"]]
        expected = max(members) + math.log(sum(math.exp(s - max(members)) for s in members) / len(members))
        assert score == pytest.approx(expected, abs=1e-4)


def test_refusals_are_one_line(tiny_model_dir, tmp_path):
    lm = SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), device="cpu")
    with pytest.raises(UserError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling([])
    with pytest.raises(UserError, match="not a selfens_pl model_arg"):
        SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), bogus=1)
    with pytest.raises(UserError, match="head='nope'"):
        SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), head="nope")
    with pytest.raises(UserError, match="choice_rule=max: head=flex scores each continuation once"):
        SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), head="flex", choice_rule="max")
    with pytest.raises(UserError, match="pool=task: task 'selfens_webqa_choice' has no training or validation docs"):
        task_pool(CHOICE, "question", task_dir())
    with pytest.raises(UserError, match="demo_blocks=3 needs pool="):
        SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), demo_blocks=3)
    with pytest.raises(UserError, match="is not in the prompt"):
        split_context("Q: something else\nA:", {"question": "what?"}, "question", "request 0")
    with pytest.raises(UserError, match="ends with a blank line"):
        split_context("Answer.\n\n", {}, "question", "request 0")
    empty = tmp_path / "p.jsonl"
    empty.write_text('{"question": "a?", "paraphrases": ["b?"]}\n{"paraphrases": ["a?", "c?"]}\n')
    with pytest.raises(UserError, match="line 2: question 'a\\?' repeats"):
        read_paraphrase_file(str(empty))


def test_split_and_cut():
    split = split_context("Say.\n\nQ: x?\nA: y\n\nQ: who\n\nknows?\nA:", {"question": "who\n\nknows?"}, "question",
                          "r")
    assert (split.prefix, split.before, split.after) == ("Say.\n\nQ: x?\nA: y\n\n", "Q: ", "\nA:")
    plain = split_context("Say.\n\nQ: x?\nA:", {}, "question", "r")
    assert (plain.prefix, plain.question, plain.at_question) == ("Say.\n\n", "Q: x?\nA:", False)
    assert cut_at("Paris\nQ: next", ("Q:", "\n")) == "Paris" and cut_at("\nParis", ("\n",)) == ""


def test_command_line_registers_the_model(monkeypatch, capsys):
    """``python -m selfens_pl.integrations.lm_eval``: lm_eval's own command line (its run is the CLI check of
    docs/lm-eval.md: lm_eval indexes its thousands of tasks first) with ``selfens_pl`` registered beside lm_eval's
    models and the shipped tasks' folder included; a user error is one line and exit status 2."""
    import lm_eval.__main__
    from lm_eval.api.registry import get_model

    seen = []

    def run():
        seen.append(list(sys.argv[1:]))
        assert get_model("selfens_pl") is SelfEnsembleEvalLM and get_model("hf").__name__ == "HFLM"
        raise UserError("--model_args bogus=1: not a selfens_pl model_arg (docs/lm-eval.md)")

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", run)
    monkeypatch.setattr(sys, "argv", ["selfens-pl-lm-eval"])
    with pytest.raises(SystemExit) as exc:
        cli(["--model", "selfens_pl", "--tasks", CHOICE])
    assert exc.value.code == 2 and seen == [["--model", "selfens_pl", "--tasks", CHOICE, "--include_path", task_dir()]]
    assert capsys.readouterr().err.strip() == ("selfens_pl: error: --model_args bogus=1: not a selfens_pl model_arg "
                                               "(docs/lm-eval.md)")


def test_lm_eval_own_command_finds_the_model_through_the_shipped_tasks(tiny_model_dir, tmp_path):
    """``lm_eval --model selfens_pl --tasks <a shipped task's YAML>``, lm_eval's own command in a fresh process:
    reading the task imports its ``utils``, which registers the model; without ``--device`` (lm_eval then passes
    ``cuda:0``) it runs where it can, here the CPU. Answers equal the in-process run's (tested above)."""
    import os
    import subprocess

    command = Path(sys.executable).with_name("lm_eval")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(command), "--model", "selfens_pl", "--model_args", f"pretrained={tiny_model_dir}",
                           "--tasks", str(Path(task_dir()) / f"{CHOICE}.yaml"), "--limit", "2",
                           "--output_path", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"|{CHOICE}|" in done.stdout.replace(" ", "")
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert results["config"]["model"] == "selfens_pl" and results["n-samples"][CHOICE]["effective"] == 2


def test_device_only_when_asked():
    from selfens_pl.integrations.lm_eval import requested_device

    assert requested_device("cuda:0", ["lm_eval", "--tasks", "x"]) is None  # lm_eval's default, not typed
    assert requested_device("cuda:0", ["lm_eval", "--device", "cuda:0"]) == "cuda:0"
    assert requested_device("cuda:0", ["lm_eval", "--device=cuda:0"]) == "cuda:0"
    assert requested_device("cpu", []) == "cpu" and requested_device(None, []) is None


def test_apply_chat_template_is_lm_evals_own_rendering(tiny_model_dir, tasks, tmp_path, one_thread):
    """``--apply_chat_template``: lm_eval renders each request through the tokenizer's template (the tiny model given
    a ChatML-like one); head=origin then answers and scores as lm_eval's ``hf`` model does, and the paraphrases of a
    fused head replace the question inside the rendered user turn. A tokenizer without a template is one line."""
    import shutil

    from test_chat_template import TINY_CHAT
    from transformers import AutoTokenizer

    chat_dir = shutil.copytree(tiny_model_dir, tmp_path / "chat")
    tokenizer = AutoTokenizer.from_pretrained(chat_dir)
    tokenizer.chat_template = TINY_CHAT
    tokenizer.save_pretrained(chat_dir)
    ours = evaluate(SelfEnsembleEvalLM(pretrained=str(chat_dir), device="cpu"), tasks, [GEN, CHOICE], 2,
                    apply_chat_template=True)
    theirs = evaluate("hf", tasks, [GEN, CHOICE], 2, f"pretrained={chat_dir},dtype=float32", apply_chat_template=True)
    assert ours[GEN][0][0][0].endswith("<s>assistant\n")  # the rendered conversation
    assert [a for _, a in ours[GEN]] == [a for _, a in theirs[GEN]]
    for (_, (loglik, greedy)), (_, (expected, expected_greedy)) in zip(ours[CHOICE], theirs[CHOICE], strict=True):
        assert loglik == pytest.approx(expected, abs=1e-4) and greedy == expected_greedy
    fused = SelfEnsembleEvalLM(pretrained=str(chat_dir), device="cpu", head="avg", paraphrases=demo_path())
    requests = evaluate(fused, tasks, [GEN], 1, apply_chat_template=True)[GEN]
    group = fused.groups([requests[0][0][0]], [_Request(0, GEN, demo_records(1)[0]["paraphrases"][0])])[0]
    assert len(group["paraphrases"]) == 5 and group["templates"][0].render(group["paraphrases"][1]).endswith(
        f"{demo_records(1)[0]['paraphrases'][1]}\nA:</s>\n<s>assistant\n")
    with pytest.raises(UserError, match="has no chat template"):
        SelfEnsembleEvalLM(pretrained=str(tiny_model_dir), device="cpu").chat_template(True)


class _Request:
    """The fields of an lm_eval request that :meth:`SelfEnsembleEvalLM.groups` reads."""

    def __init__(self, idx: int, task: str, question: str):
        self.idx, self.task_name, self.doc_id, self.doc = idx, task, idx, {"question": question}
