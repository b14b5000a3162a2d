"""The mask picture: the array it is drawn from matches the rule cell by cell, and the PNG is real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfens_pl.commands.mask import draw_mask, main
from selfens_pl.data.prompts import PromptTokenizer
from selfens_pl.engine.attention import GENERATED, PREFIX
from selfens_pl.heads.flex import mask_for_picture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def brute_force(segments: list[int]) -> list[list[bool]]:
    """The rule restated with plain loops (no padding in a single group)."""
    n = len(segments)
    out = [[False] * n for _ in range(n)]
    for q in range(n):
        for k in range(q + 1):  # causal: never a later key
            sq, sk = segments[q], segments[k]
            if sk == PREFIX:
                out[q][k] = True  # prefix is seen by every later token
            elif sq == GENERATED:
                out[q][k] = True  # generated tokens see everything earlier
            elif sq == sk:
                out[q][k] = True  # a paraphrase sees its own earlier tokens
    return out


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.shape[2] in (3, 4)


@pytest.mark.parametrize("layout", ["concat", "shared_prefix"])
def test_mask_picture_matches_rule(tiny_model_dir, template, groups, layout, tmp_path):
    from transformers import AutoTokenizer

    prompts = PromptTokenizer(AutoTokenizer.from_pretrained(tiny_model_dir), template)
    paraphrases = groups[0]["paraphrases"][:3]
    assert len(paraphrases) == 3
    generated = 4
    mask, lay = mask_for_picture(prompts, paraphrases, layout, "aligned", generated=generated)
    segments = lay.segments + [GENERATED] * generated
    array = mask.cpu().numpy()
    n = len(segments)
    assert array.shape == (n, n) and array.dtype == bool

    # the segment ids themselves are what the layout promises
    plen = len(prompts.prefix_ids)
    qlens = [len(prompts.question_ids(p)) for p in paraphrases]
    if layout == "shared_prefix":
        expected = [PREFIX] * plen + [i for i, q in enumerate(qlens) for _ in range(q)]
    else:
        expected = [i for i, q in enumerate(qlens) for _ in range(plen + q)]
    assert segments == expected + [GENERATED] * generated

    reference = brute_force(segments)
    for q in range(n):
        for k in range(n):
            assert bool(array[q, k]) == reference[q][k], (layout, q, k, segments[q], segments[k])
    assert array.any(axis=1).all(), "a fully blocked row"
    assert array.diagonal().all()
    seg = np.array(segments)
    for i in range(3):
        for j in range(3):
            if i != j:
                assert not array[np.ix_(seg == i, seg == j)].any(), f"paraphrase {i} sees paraphrase {j}"
    gen = seg == GENERATED
    assert (array[np.ix_(gen, gen)] == np.tril(np.ones((gen.sum(), gen.sum()), dtype=bool))).all()
    assert array[gen][:, ~gen].all()  # generated tokens see the whole prompt

    out = draw_mask(mask, segments, None, tmp_path / f"{layout}.png", title=layout)
    assert out == tmp_path / f"{layout}.png"
    check_png(out)


def test_draw_mask_rejects_mismatch(tmp_path):
    import torch

    with pytest.raises(RuntimeError):
        draw_mask(torch.ones(4, 4, dtype=torch.bool), [0, 0, 1], None, tmp_path / "x.png", "x")


def test_main_end_to_end(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = main(["--config", str(ROOT / "configs" / "demo.yaml"), "--model.model", str(tiny_model_dir),
                "--out", "tmp/mask.png"])
    png, npy = tmp_path / "tmp" / "mask.png", tmp_path / "tmp" / "mask.npy"
    assert Path(out).resolve() == png
    check_png(png)
    array = np.load(npy)
    assert array.dtype == bool and array.ndim == 2 and array.shape[0] == array.shape[1]
    printed = capsys.readouterr().out
    assert "layout=concat" in printed and "positions=aligned" in printed  # demo.yaml's head is LogitFusion
    # concat: no prefix segment, 3 paraphrases then 4 generated tokens; rows all non-empty
    assert "prefix=" not in printed and "P3=" in printed and "generated=4" in printed
    assert array.any(axis=1).all()
