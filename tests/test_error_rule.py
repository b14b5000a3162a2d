"""The rule of :mod:`selfens_pl.errors`: which failures are the user's (one line, exit 2) and which are bugs
(traceback, exit 1), decided by exception type and origin.

* :class:`~selfens_pl.errors.UserError` is the user's wherever it is raised; a plain ``ValueError`` is a bug, raised
  by the package or by a library; an internal invariant of the package (a ``RuntimeError``) is a bug.
* The environment (``OSError``, a missing third-party module), Lightning's ``MisconfigurationException`` and its
  accelerator connector's checks of the Trainer's flags are the user's.
* The same rule on the text of another process's traceback, by the type name it shows.
* A broken internal invariant met by ``predict`` prints its traceback and exits with status 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from fractions import Fraction
from pathlib import Path

import lightning as lightning_package
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from test_cli import ERROR, cli_env
from test_ddp import write_config, write_groups
from torch.utils.data import DataLoader

from selfens_pl import errors
from selfens_pl.data.datamodule import load_groups
from selfens_pl.engine.fusion import no_fusion
from selfens_pl.errors import UserError
from selfens_pl.scoring.rescoring import combine

INSIDE = str(errors.PACKAGE_DIR / "some_module.py")
OUTSIDE = "/elsewhere/site-packages/lib/module.py"
TORCH_FILE = "/elsewhere/site-packages/torch/module.py"


def raised(code: str, filename: str, **names) -> BaseException:
    """The exception ``code`` raises, compiled as if it were the file ``filename`` (its frames carry that name)."""
    try:
        exec(compile(code, filename, "exec"), {"UserError": UserError, **names})
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no exception")


def defined(code: str, filename: str) -> dict:
    """The names ``code`` defines, its functions' frames carrying the file name ``filename``."""
    namespace = {"UserError": UserError}
    exec(compile(code, filename, "exec"), namespace)
    return namespace


def caught(fn, *args, **kwargs) -> BaseException:
    try:
        fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no exception")


# -- by type -------------------------------------------------------------------------------------------------------
def test_user_error_is_the_users_wherever_raised():
    assert errors.user_error_message(raised("raise UserError('record 1: bad')", INSIDE)) == "record 1: bad"
    assert errors.user_error_message(raised("raise UserError('bad\\n  flag')", OUTSIDE)) == "bad flag"
    # raised by a callback that a library (json, in C) calls: the innermost frame is the callback's
    reject = defined("def reject(obj):\n    raise UserError(f'record {obj[\"id\"]!r}: no answers')\n", OUTSIDE)
    exc = caught(json.loads, '{"id": "q7"}', object_hook=reject["reject"])
    assert isinstance(exc, UserError) and errors.user_error_message(exc) == "record 'q7': no answers"


class Refuses(Callback):
    def on_predict_start(self, trainer, pl_module) -> None:
        raise UserError("--output_dir=x: refused")


def test_user_error_from_a_lightning_callback_is_the_users():
    """Lightning calls the hook and lets its error through (after its own on_exception handling)."""
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[Refuses()], enable_progress_bar=False,
                      enable_model_summary=False)
    exc = caught(trainer.predict, BoringModel(), dataloaders=DataLoader(RandomDataset(32, 4)))
    assert isinstance(exc, UserError), exc
    assert errors.user_error_message(exc) == "--output_dir=x: refused"


def test_a_plain_value_error_is_a_bug_wherever_raised():
    assert errors.user_error_message(raised("raise ValueError('record 1: bad')", INSIDE)) is None
    assert errors.user_error_message(raised("raise ValueError('bad')", OUTSIDE)) is None
    assert errors.user_error_message(raised("int('x')", INSIDE)) is None
    assert errors.user_error_message(raised("raise TypeError('bad')", INSIDE)) is None
    assert errors.user_error_message(raised("[][1]", INSIDE)) is None
    assert errors.user_error_message(caught(Fraction, "not a number")) is None  # a library's ValueError


def test_internal_invariants_of_the_package_are_bugs():
    rows = caught(no_fusion, torch.zeros(1, 2, 3))  # two rows for a rule that takes one per group
    assert isinstance(rows, RuntimeError) and "one row per group" in str(rows)
    assert errors.user_error_message(rows) is None
    scores = caught(combine, [[0.0]], [1, 2], "mixture")  # one score for two candidates
    assert isinstance(scores, RuntimeError) and errors.user_error_message(scores) is None


def test_the_environment_is_the_users():
    assert errors.user_error_message(raised("open('/nonexistent/x')", OUTSIDE)) == \
        "/nonexistent/x: No such file or directory"
    assert errors.user_error_message(raised("import no_such_module_xyz", OUTSIDE)) == \
        "No module named 'no_such_module_xyz' (a dependency is missing: install it)"
    # a module of this package that does not exist is not a dependency to install: a bug (a stale import path)
    assert errors.user_error_message(raised("import selfens_pl.no_such_module", INSIDE)) is None
    assert errors.user_error_message(raised("from json import no_such_name", INSIDE)) is None


def test_rule_on_real_raise_sites(tmp_path):
    missing = tmp_path / "missing.jsonl"
    exc = caught(load_groups, str(missing))
    assert isinstance(exc, FileNotFoundError)
    assert errors.user_error_message(exc) == f"no such file or directory: {missing}"
    (tmp_path / "groups.txt").write_text("{}\n")
    exc = caught(load_groups, str(tmp_path / "groups.txt"))
    assert isinstance(exc, UserError) and errors.user_error_message(exc) == str(exc)


@pytest.mark.parametrize("flag, value, message", [
    ("origin_share", "2", "--model.head.init_args.origin_share=2.0: give the original question's share"),
    ("prior_floor", "2", "--model.head.init_args.prior_floor=2.0: must lie in [0, 1]"),
])
def test_a_heads_own_check_under_the_cli_is_the_users(flag, value, message, monkeypatch):
    """jsonargparse, instantiating the configured head, re-raises the constructor's UserError as its own
    ValueError (with every Union subtype's complaint); the message is the head's, on one line. The same wrapper
    around anything else stays a bug."""
    from selfens_pl.lit.cli import build_cli

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setattr(sys, "argv", ["selfens_pl"])
    exc = caught(build_cli, ["predict", "--config", "configs/demo.yaml", f"--model.head.init_args.{flag}", value],
                 run=False)
    assert type(exc) is ValueError and isinstance(exc.__cause__, UserError), repr(exc)
    assert errors.user_error_message(exc) == str(exc.__cause__) and str(exc.__cause__).startswith(message)
    exc.__cause__ = ValueError("a bug in a constructor")
    assert errors.user_error_message(exc) is None


# -- Lightning -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    ({"accelerator": "bogus"}, "You selected an invalid accelerator name: `accelerator='bogus'`"),
    ({"accelerator": "cpu", "devices": "x"}, "`devices` selected with `CPUAccelerator` should be an int > 0."),
    ({"strategy": "bogus"}, "You selected an invalid strategy name: `strategy='bogus'`"),
])
def test_lightning_checking_the_trainer_flags_is_the_users(flags, message):
    exc = caught(Trainer, logger=False, **flags)
    assert isinstance(exc, (ValueError, TypeError)), exc
    assert errors.user_error_message(exc).startswith(message)


def test_lightning_origin_rule():
    """A ValueError / TypeError is the user's when Lightning raised it (innermost frame) beneath its accelerator
    connector: not when the connector only called a library that raised it, nor when Lightning raised it
    elsewhere."""
    lightning = Path(lightning_package.__file__).parent
    connector = str(lightning / "pytorch" / "trainer" / "connectors" / errors.LIGHTNING_FLAG_CHECK)
    parser = str(lightning / "fabric" / "utilities" / "device_parser.py")
    helpers = {**defined("def check(devices):\n    raise TypeError(f'devices={devices!r}: bad')\n", parser),
               **defined("def torch_call(devices):\n    raise ValueError('inside torch')\n", TORCH_FILE)}
    assert errors.user_error_message(raised("check('x')", connector, check=helpers["check"])) == "devices='x': bad"
    assert errors.user_error_message(raised("torch_call('x')", connector, torch_call=helpers["torch_call"])) is None
    assert errors.user_error_message(raised("check('x')", OUTSIDE, check=helpers["check"])) is None
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    assert errors.user_error_message(MisconfigurationException("no GPU\n found")) == "no GPU found"


# -- another process's traceback, as text --------------------------------------------------------------------------
def worker_text(type_name: str, message: str, source: str | None = "raise UserError(message)") -> str:
    """What torch re-raises for a DataLoader worker's error: the worker's traceback in the message."""
    frame = f'  File "{INSIDE}", line 3, in check\n' + (f"    {source}\n" if source is not None else "")
    return (f"Caught {type_name} in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            f"{frame}{type_name}: {message}\n")


def test_rule_reads_another_process_traceback(tmp_path):
    """A DataLoader worker's error re-raised by torch, and a ddp_spawn process's error, carry the original
    traceback as text: the rule applies to the type it names."""
    from torch._utils import ExceptionWrapper

    (tmp_path / "groups.txt").write_text("{}\n")
    try:
        load_groups(str(tmp_path / "groups.txt"))
    except UserError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
        spawn_text = "\n\n-- Process 1 terminated with the following error:\n" + traceback.format_exc()
    reraised = caught(wrapper.reraise)
    assert isinstance(reraised, UserError) and "Traceback" in str(reraised)
    assert errors.user_error_message(reraised).endswith(
        ": unsupported file type (expected one of .jsonl, .json, .parquet)")
    assert errors.user_error_message(Exception(spawn_text)).startswith("rank 1: ")
    try:
        Fraction("not a number")  # a ValueError raised by a raise statement of a library: a bug here
    except ValueError:
        bug = ExceptionWrapper(where="in DataLoader worker process 0")
    assert errors.user_error_message(caught(bug.reraise)) is None


def test_remote_rule_is_the_type_name_not_the_source_line():
    message = errors.user_error_message
    # the source line is not shown (no source file in the worker) or is not a raise statement: still the user's
    assert message(RuntimeError(worker_text("selfens_pl.errors.UserError", "record 'q1': bad", None))) == \
        "record 'q1': bad"
    assert message(RuntimeError(worker_text("UserError", "bad", "check_record(rec)"))) == "bad"
    assert message(RuntimeError(worker_text("FileNotFoundError", "[Errno 2] nope: 'x'", "open(path)"))) == \
        "[Errno 2] nope: 'x'"
    assert message(RuntimeError(worker_text("ModuleNotFoundError", "No module named 'pyarrow'"))) == \
        "No module named 'pyarrow'"
    # a plain ValueError raised by the package's own raise statement, an internal invariant: bugs
    assert message(RuntimeError(worker_text("ValueError", "record 'q1': bad", "raise ValueError(m)"))) is None
    assert message(RuntimeError(worker_text("RuntimeError", "bug", "raise RuntimeError(m)"))) is None
    assert message(RuntimeError(worker_text("ModuleNotFoundError", "No module named 'selfens_pl.gone'"))) is None


# -- end to end: a broken invariant in predict ---------------------------------------------------------------------
BROKEN_INVARIANT = """
import dataclasses, sys
from selfens_pl.cli import main
from selfens_pl.engine.decoding import GreedyDecoder

decode = GreedyDecoder.decode_n_tokens

def broken(self, batch, fuse_first, fuse_step):  # a batch whose rows do not split into its groups
    return decode(self, dataclasses.replace(batch, rows_per_group=batch.rows + 1), fuse_first, fuse_step)

GreedyDecoder.decode_n_tokens = broken
main()  # reads sys.argv
"""


def test_a_broken_internal_invariant_prints_its_traceback(tmp_path, tiny_model_dir):
    write_groups(tmp_path / "groups.jsonl", 2)
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, tmp_path / "groups.jsonl")
    proc = subprocess.run([sys.executable, "-c", BROKEN_INVARIANT, "predict", "--config", str(config),
                           "--output_dir", str(tmp_path / "out")], cwd=tmp_path, env=cli_env(), text=True,
                          capture_output=True, timeout=300, check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback (most recent call last)" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("selfens_pl.errors.InternalError: ") and "rows do not split into groups of" in last, last
    assert last.endswith("(internal error: a bug in selfens_pl, please report it)"), last
    assert ERROR not in proc.stderr
