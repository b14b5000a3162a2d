"""Resume: a predict run killed midway (``kill -9``) and rerun into the same ``--output_dir`` answers only the ids
it had not finished; the merged file and the summary cover every id exactly once. Records count in whole batches:
a half-written last line, or records whose batch has no commit line, are answered again."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from test_ddp import read_jsonl, subprocess_env, write_config, write_groups

from selfens_pl.errors import UserError
from selfens_pl.lit.cli import build_cli
from selfens_pl.lit.preflight import check_resumable
from selfens_pl.lit.writer import PREDICTIONS, SUMMARY, read_done, read_merged, read_part

N_GROUPS = 40


def run_in_process(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    build_cli(["predict", *args])


def test_resume_after_kill(tmp_path, tiny_model_dir, monkeypatch, one_thread):
    ids = write_groups(tmp_path / "groups.jsonl", N_GROUPS)
    # origin head, no stop string, long answers: slow enough (about 0.3 s a batch) to be killed midway
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path / "groups.jsonl",
                          max_new_tokens=120, stop=None)
    out = tmp_path / "out"
    args = ["--config", str(config), "--output_dir", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "selfens_pl", "predict", *args], cwd=tmp_path,
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    part = out / "predictions.rank0.jsonl"
    try:
        deadline = time.monotonic() + 240
        while not (part.is_file() and len(read_part(part, report=False)) >= 4):  # two whole batches of two groups
            assert proc.poll() is None, f"predict ended before it was killed:\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "predict wrote no two batches in 240 s"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait()
    before = read_done(out)
    assert 4 <= len(before) < N_GROUPS, len(before)
    assert not (out / SUMMARY).exists()

    run_in_process(monkeypatch, *args)
    records = read_jsonl(out / PREDICTIONS)
    assert sorted(r["id"] for r in records) == sorted(ids)  # every id exactly once
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["n"] == summary["records"] == N_GROUPS
    assert summary["resumed"] == len(before)
    assert summary["run"]["n"] == N_GROUPS - len(before)
    by_id = {r["id"]: r for r in records}
    for key, recs in before.items():  # the finished records were reused as they were
        assert by_id[key] == recs[0]
    assert not list(out.glob("predictions.rank*.jsonl"))
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / N_GROUPS)

    # killed after the merge, before the summary: a rerun answers nothing and writes the summary
    (out / SUMMARY).unlink()
    run_in_process(monkeypatch, *args)
    again = json.loads((out / SUMMARY).read_text())
    assert (again["n"], again["resumed"], again["run"]["n"]) == (N_GROUPS, N_GROUPS, 0)
    assert again["accuracy"] == summary["accuracy"]
    assert read_jsonl(out / PREDICTIONS) == records

    # --resume false starts afresh
    run_in_process(monkeypatch, *args, "--resume", "false", "--data.limit", "3",
                   "--model.max_new_tokens", "4")
    fresh = json.loads((out / SUMMARY).read_text())
    assert (fresh["n"], fresh["resumed"], fresh["run"]["n"]) == (3, 0, 3)
    assert len(read_jsonl(out / PREDICTIONS)) == 3


def rec(key: str, index: int | None = None) -> dict:
    return {"id": key, "method": "per_prompt", "paraphrase_index": index, "prediction": key, "answers": ["x"],
            "correct": False}


def lines(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def test_half_written_last_line_and_uncommitted_batch(tmp_path):
    # rank 0: a whole batch (q1, q3: one record per paraphrase, as per_prompt writes), then a batch cut off in the
    # middle of a line
    (tmp_path / "predictions.rank0.jsonl").write_text(
        lines(rec("q1", 0), rec("q1", 1), rec("q3", 0), rec("q3", 1), {"_batch": 0, "_records": 4},
              rec("q5", 0)) + json.dumps(rec("q5", 1))[:17])
    # rank 1: a whole batch, then records without their commit line (the process died before writing it)
    (tmp_path / "predictions.rank1.jsonl").write_text(
        lines(rec("q2", 0), rec("q2", 1), {"_batch": 0, "_records": 2}, rec("q4", 0), rec("q4", 1)))
    # rank 2 of an earlier, larger run; and a merged file from before that (q1 again: counted once)
    (tmp_path / "predictions.rank2.jsonl").write_text(lines(rec("q6"), {"_batch": 0, "_records": 1}))
    (tmp_path / PREDICTIONS).write_text(lines(rec("q0"), rec("q1", 0), rec("q1", 1)))
    assert [r["id"] for r in read_part(tmp_path / "predictions.rank0.jsonl")] == ["q1", "q1", "q3", "q3"]
    done = read_done(tmp_path)
    assert sorted(done) == ["q0", "q1", "q2", "q3", "q6"]
    assert [len(done[k]) for k in sorted(done)] == [1, 2, 2, 2, 1]


def test_resume_refuses_other_settings(tmp_path):
    old = "model:\n  model: tiny\n  max_new_tokens: 8\ndata:\n  path: a.jsonl\n  batch_size: 2\n"
    (tmp_path / "config.yaml").write_text(old)
    (tmp_path / PREDICTIONS).write_text(lines(rec("q0")))
    check_resumable(tmp_path, old.replace("batch_size: 2", "batch_size: 8"))  # does not change an answer
    with pytest.raises(ValueError, match=r"--model.max_new_tokens differ .* --resume false") as e:
        check_resumable(tmp_path, old.replace("max_new_tokens: 8", "max_new_tokens: 20"))
    assert "\n" not in str(e.value)


def test_resume_counts_a_key_only_one_config_has(tmp_path):
    """A setting that only one of the two configs names (here ``model.stop``) may change every answer: it is a
    difference like any other, unless it is one of the resume-free keys (``data.val_path``)."""
    old = "model:\n  model: tiny\n  max_new_tokens: 8\ndata:\n  path: a.jsonl\n  batch_size: 2\n"
    (tmp_path / "config.yaml").write_text(old)
    (tmp_path / PREDICTIONS).write_text(lines(rec("q0")))
    check_resumable(tmp_path, old + "  val_path: b.jsonl\n")  # resume-free, even when only one side has it
    with pytest.raises(ValueError, match=r"--model.stop \(only in this run's config\)"):
        check_resumable(tmp_path, old.replace("max_new_tokens: 8", "max_new_tokens: 8\n  stop: x"))
    (tmp_path / "config.yaml").write_text(old.replace("max_new_tokens: 8", "max_new_tokens: 8\n  stop: x"))
    with pytest.raises(ValueError, match=r"--model.stop \(only in its config.yaml\)"):
        check_resumable(tmp_path, old)


def test_a_setting_added_since_resumes_at_the_value_runs_before_it_had(tmp_path):
    """A folder written before ``--data.chat_template`` (or a head's ``chooser_features``) existed resumes when this
    run asks for the value that answers as before, and is refused for any other."""
    head = "  head:\n    class_path: selfens_pl.heads.RerankHead\n    init_args:\n      rule: learned\n"
    old = "model:\n  model: tiny\n" + head + "data:\n  path: a.jsonl\n"
    (tmp_path / "config.yaml").write_text(old)
    (tmp_path / PREDICTIONS).write_text(lines(rec("q0")))
    now = old.replace("rule: learned\n", "rule: learned\n      chooser_features: null\n") + "  chat_template: none\n"
    check_resumable(tmp_path, now)
    with pytest.raises(ValueError, match=r"--data.chat_template \('model' here; its config.yaml predates it: 'none'\)"):
        check_resumable(tmp_path, now.replace("chat_template: none", "chat_template: model"))
    with pytest.raises(ValueError, match=r"--model.head.init_args.chooser_features \('rich' here"):
        check_resumable(tmp_path, now.replace("chooser_features: null", "chooser_features: rich"))


def test_read_merged_refuses_a_bad_middle_line_and_skips_a_half_written_last_one(tmp_path, capsys):
    path = tmp_path / PREDICTIONS
    path.write_text(lines(rec("q0")) + '{"id": "q1", "pred\n' + lines(rec("q2")))
    with pytest.raises(UserError, match=rf"^{path}: line 2: invalid JSON"):
        read_merged(path)
    path.write_text(lines(rec("q0"), rec("q1")) + json.dumps(rec("q2"))[:20])
    assert [r["id"] for r in read_merged(path)] == ["q0", "q1"]
    assert f"{path}: line 3: skipped a half-written last line" in capsys.readouterr().out


def test_synced_scores_must_equal_the_merged_files():
    """The writer's check that makes the summary's one set of scores trustworthy under DDP: it fails when the synced
    metrics and the merged records disagree, and passes when they agree."""
    from selfens_pl.errors import InternalError
    from selfens_pl.lit.writer import check_synced_scores

    check_synced_scores({"accuracy": 0.25, "f1": 0.5}, {"accuracy": 0.25, "f1": 0.50001})
    with pytest.raises(InternalError, match="accuracy from the synced metrics"):
        check_synced_scores({"accuracy": 0.3}, {"accuracy": 0.25})
