"""SIGTERM and SIGINT stop ``predict`` and ``sweep`` after the batch in flight (:mod:`selfens_pl.stopping`): the
finished batches are kept, one line on stderr names the command that resumes, the exit status is 128 + the signal's
number, and running that command gives the records of a run never stopped. Real subprocesses on the tiny model,
signalled once their first batch is on disk."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_ddp import read_jsonl, subprocess_env, write_config, write_groups

from selfens_pl import stopping
from selfens_pl.lit.writer import PREDICTIONS, SUMMARY, read_part

N_GROUPS = 40
BATCH = 2  # groups per predict batch (write_config)
STOPPED = "selfens_pl: stopped by {} after the batch in flight; the finished work is kept in {}; resume with: "


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selfens_pl", *args], cwd=cwd, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_when(proc: subprocess.Popen, count, least: int, signum: int) -> int:
    """Send ``signum`` to ``proc`` once ``count()`` (what it has committed) reaches ``least``; the count then."""
    deadline = time.monotonic() + 300
    while (done := count()) < least:
        assert proc.poll() is None, f"the run ended before it was signalled:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "nothing committed in 300 s"
        time.sleep(0.02)
    proc.send_signal(signum)
    return done


def resume_command(err: str, signum: int, kept: Path) -> list[str]:
    """The command the one line on stderr gives, as arguments after ``python -m selfens_pl``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = STOPPED.format(signal.Signals(signum).name, kept)
    assert lines[0].startswith(prefix + "python -m selfens_pl "), lines[0]
    return shlex.split(lines[0][len(prefix):])[3:]


# -- predict --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predict_setup(tmp_path_factory, tiny_model_dir):
    """The groups, a config that answers them slowly (origin, 120 tokens, no stop string: about 0.3 s a batch) and
    says ``resume: false`` (as configs/demo.yaml does), and the records of a run never stopped."""
    tmp = tmp_path_factory.mktemp("stop-predict")
    write_groups(tmp / "groups.jsonl", N_GROUPS)
    config = write_config(tmp / "config.yaml", tiny_model_dir, tmp / "groups.jsonl", max_new_tokens=120, stop=None)
    config.write_text(config.read_text() + yaml.safe_dump({"resume": False}))
    clean = tmp / "clean"
    proc = subprocess.run([sys.executable, "-m", "selfens_pl", "predict", "--config", str(config), "--output_dir",
                           str(clean)], cwd=tmp, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, config, read_jsonl(clean / PREDICTIONS)


def test_sigterm_stops_predict_after_the_batch_in_flight(predict_setup):
    """SIGTERM end to end (SIGINT takes the same handler: the unit test below stops a loop by each)."""
    signum = signal.SIGTERM
    tmp, config, clean = predict_setup
    out = tmp / f"out-{signum.name}"
    proc = start(["predict", "--config", str(config), "--output_dir", str(out)], tmp)
    part = out / "predictions.rank0.jsonl"
    signalled = signal_when(proc, lambda: len(read_part(part, report=False)) if part.is_file() else 0, BATCH, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, (proc.returncode, err[-3000:])
    kept = read_part(part, report=False)
    # the batch in flight when the signal came, and at most one more that may have committed between the count
    # and the signal: never the run to its end (as Lightning's own SIGTERM handling does for predict)
    assert signalled <= len(kept) <= signalled + 2 * BATCH < N_GROUPS, (signalled, len(kept))
    assert len(kept) % BATCH == 0  # whole batches only
    assert not (out / SUMMARY).exists() and not (out / PREDICTIONS).exists()
    assert (out / "config.yaml").is_file()

    # the config says resume: false, so the line adds --resume true; that command answers only the rest
    command = resume_command(err, signum, out)
    assert command[-2:] == ["--resume", "true"]
    resumed = subprocess.run([sys.executable, "-m", "selfens_pl", *command], cwd=tmp, env=subprocess_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / SUMMARY).read_text())
    assert (summary["n"], summary["resumed"], summary["run"]["n"]) == (N_GROUPS, len(kept), N_GROUPS - len(kept))
    assert read_jsonl(out / PREDICTIONS) == clean  # record for record, as a run never stopped


# -- sweep ----------------------------------------------------------------------------------------------------------
def sweep_args(model_dir: Path, groups: Path, out: Path) -> list[str]:
    # one fact a batch (--batch_rows 3 over K_max = 3 members), 60 tokens each: a batch takes a fraction of a second
    return ["sweep", "--model.model", str(model_dir), "--data.path", str(groups), "--data.few_shot", "[]",
            "--ks", "1,3", "--model.max_new_tokens", "60", "--model.stop", "null", "--batch_rows", "3",
            "--resamples", "20", "--trainer.accelerator", "cpu", "--output_dir", str(out)]


def fact_rows(out: Path) -> dict[str, dict]:
    path = out / "facts.jsonl"
    return {row["id"]: row for row in read_jsonl(path)} if path.is_file() else {}


def test_sigterm_stops_sweep_after_the_batch_in_flight(tmp_path, tiny_model_dir):
    write_groups(tmp_path / "groups.jsonl", N_GROUPS)
    clean, out = tmp_path / "clean", tmp_path / "out"
    clean_run = start(sweep_args(tiny_model_dir, tmp_path / "groups.jsonl", clean), tmp_path)
    proc = start(sweep_args(tiny_model_dir, tmp_path / "groups.jsonl", out), tmp_path)
    signalled = signal_when(proc, lambda: len(fact_rows(out)), 1, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err[-3000:])
    kept = fact_rows(out)
    assert signalled <= len(kept) <= signalled + 2 < N_GROUPS, (signalled, len(kept))
    assert not (out / "sweep.md").exists()

    command = resume_command(err, signal.SIGTERM, out)
    assert command == sweep_args(tiny_model_dir, tmp_path / "groups.jsonl", out)  # the same command
    _, clean_err = clean_run.communicate(timeout=600)
    assert clean_run.returncode == 0, clean_err[-3000:]
    resumed = subprocess.run([sys.executable, "-m", "selfens_pl", *command], cwd=tmp_path, env=subprocess_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(kept)} facts reused" in resumed.stdout
    rows, expected = fact_rows(out), fact_rows(clean)
    assert sorted(rows) == sorted(expected) and len(rows) == N_GROUPS
    for key, row in rows.items():  # every member's answer, as the sweep never stopped gives it
        assert [m["prediction"] for m in row["members"]] == [m["prediction"] for m in expected[key]["members"]]
    for run in ("origin_k1_m1", "per_prompt_k3_m1", "vote_k3_m1"):
        assert read_jsonl(out / "runs" / run / PREDICTIONS) == read_jsonl(clean / "runs" / run / PREDICTIONS)


# -- the rule itself, in one process --------------------------------------------------------------------------------
def test_a_signal_inside_a_loop_waits_for_its_checkpoint_and_outside_stops_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stopping.handle_signals():
        with pytest.raises(stopping.Stopped) as stop:
            with stopping.after_batch():
                signal.raise_signal(signal.SIGTERM)  # noted: the batch in flight goes on
                finished = True
                stopping.checkpoint()  # the batch is written: the stop takes effect here
        assert finished and stop.value.after_batch and stop.value.status == 143
        with pytest.raises(stopping.Stopped) as stop:
            with stopping.after_batch():
                signal.raise_signal(signal.SIGINT)  # Ctrl-C: the same wait for the batch in flight
                stopping.checkpoint()
        assert stop.value.after_batch and stop.value.status == 130
        with pytest.raises(stopping.Stopped) as stop:
            signal.raise_signal(signal.SIGINT)  # outside a loop: at once
        assert not stop.value.after_batch and stop.value.status == 130
        with pytest.raises(stopping.Stopped):  # a second signal inside a loop: at once too
            with stopping.after_batch():
                signal.raise_signal(signal.SIGTERM)
                signal.raise_signal(signal.SIGTERM)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # the handlers are put back
