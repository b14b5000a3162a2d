"""Draw the self-ensemble attention mask of one paraphrase group (plus a few generated tokens) as a PNG.

    python -m selfens_pl mask --config configs/flex_webqa.yaml --out outputs/mask.png
    python -m selfens_pl mask --config configs/demo.yaml --layout shared_prefix --num_paraphrases 3

Only the tokenizer is loaded (never the model weights). The boolean array the picture is drawn from is saved
next to the PNG as ``.npy`` (same stem): ``mask[q, k]`` is True where query ``q`` may attend to key ``k``. When the
data module attaches few-shot blocks (``--data.demo_blocks M --data.few_shot_pool ...``) the group is drawn with
them: ``K x M`` member segments labelled ``P{i}/B{b}`` (paraphrase ``i`` with block ``b``), and with
``shared_prefix`` one prefix per block (``prefix/B{b}``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from selfens_pl.engine.attention import GENERATED, PAD, PREFIX
from selfens_pl.errors import InternalError, UserError

ALLOWED_COLOUR = "#2b6cb0"  # blue
BLOCKED_COLOUR = "#f2f2f2"  # very light grey
BOUNDARY_COLOUR = "#e53e3e"  # red


def segment_runs(segments: list[int]) -> list[tuple[int, int, int]]:
    """Contiguous runs ``(segment id, start, end)`` (end exclusive) in sequence order."""
    runs: list[tuple[int, int, int]] = []
    for i, seg in enumerate(segments):
        if runs and runs[-1][0] == seg:
            runs[-1] = (seg, runs[-1][1], i + 1)
        else:
            runs.append((seg, i, i + 1))
    return runs


def default_label(seg: int) -> str:
    if seg == PREFIX:
        return "prefix"
    if seg == PAD:
        return "pad"
    if seg == GENERATED:
        return "generated"
    return f"P{seg + 1}"


def run_labels(segments: list[int], blocks: list[int], k: int) -> list[str]:
    """One label per run of :func:`segment_runs` for a group asked with several few-shot blocks: ``prefix/B{b}`` and
    ``P{i}/B{b}`` (member ``j = b * k + i``, paraphrases numbered from 1); padding and generated as usual."""
    names = []
    for seg, start, _ in segment_runs(segments):
        if seg == PREFIX:
            names.append(f"prefix/B{blocks[start]}")
        elif 0 <= seg < GENERATED:
            names.append(f"P{seg % k + 1}/B{seg // k}")
        else:
            names.append(default_label(seg))
    return names


def draw_mask(mask: torch.Tensor, segments: list[int], labels: dict[int, str] | list[str] | None = None,
              out: str | Path = "outputs/mask.png", title: str = "self-ensemble attention mask") -> Path:
    """Write a heatmap of ``mask [L, L]`` (True = allowed) with segment boundaries and labels; return the path.
    ``labels``: by segment id, or one per run of :func:`segment_runs`; unnamed segments get :func:`default_label`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    array = np.asarray(torch.as_tensor(mask).detach().cpu().bool())
    length = array.shape[0]
    if array.shape != (length, length) or len(segments) != length:
        raise InternalError(f"mask {tuple(array.shape)} and {len(segments)} segment ids do not make one [L, L] mask")
    runs = segment_runs(list(segments))
    if isinstance(labels, list) and len(labels) != len(runs):
        raise InternalError(f"{len(labels)} labels for {len(runs)} segment runs")

    side = float(np.clip(5.0 + length / 60.0, 6.0, 16.0))  # grows with L, capped so huge prompts stay viewable
    fig, ax = plt.subplots(figsize=(side + 2.0, side))
    ax.imshow(array.astype(np.uint8), cmap=ListedColormap([BLOCKED_COLOUR, ALLOWED_COLOUR]), vmin=0, vmax=1,
              interpolation="nearest", origin="upper", aspect="equal")
    line_width = 0.8 if length < 200 else 0.5
    for _, start, _ in runs[1:]:  # boundaries between segments, on both axes
        ax.axvline(start - 0.5, color=BOUNDARY_COLOUR, linewidth=line_width)
        ax.axhline(start - 0.5, color=BOUNDARY_COLOUR, linewidth=line_width)

    centres = [(start + end - 1) / 2 for _, start, end in runs]
    names = labels if isinstance(labels, list) else [(labels or {}).get(seg, default_label(seg)) for seg, _, _ in runs]
    font = 10 if side < 12 else 14  # a big figure is viewed scaled down: larger text
    ax.set_xticks(centres)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=font)
    ax.set_yticks(centres)
    ax.set_yticklabels(names, fontsize=font)
    ax.tick_params(length=0)
    ax.set_xlabel("key position", fontsize=font)
    ax.set_ylabel("query position", fontsize=font)
    sizes = ", ".join(f"{name}={end - start}" for name, (_, start, end) in zip(names, runs))
    ax.set_title(f"{title}\nL={length} tokens ({sizes})", fontsize=font)
    ax.legend(handles=[Patch(facecolor=ALLOWED_COLOUR, edgecolor="black", label="allowed"),
                       Patch(facecolor=BLOCKED_COLOUR, edgecolor="black", label="blocked")],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=True, title="attention", fontsize=font, title_fontsize=font)
    from selfens_pl.figures import save_figure

    return save_figure(fig, out)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m selfens_pl mask", allow_abbrev=False,
        description="Draw the attention mask of one group; other arguments (--config, --model.*, --data.*) go to "
                    "the LightningCLI config parser.")
    parser.add_argument("--out", default="outputs/mask.png", help="PNG to write (a .npy with the array goes beside)")
    parser.add_argument("--index", type=int, default=0, help="Which group of the data to draw")
    parser.add_argument("--num_paraphrases", type=int, default=3, help="Cut the group to this many paraphrases")
    parser.add_argument("--generated", type=int, default=4, help="Generated tokens to append")
    parser.add_argument("--layout", choices=("concat", "shared_prefix"), default=None,
                        help="Default: the config's FlexFusion head, else concat")
    parser.add_argument("--positions", choices=("aligned", "sequential"), default=None,
                        help="Default: the config's FlexFusion head, else aligned")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args, rest = parse_args(list(sys.argv[1:] if argv is None else argv))
    if rest and rest[0] == "predict":  # run=False parsers take no subcommand
        rest = rest[1:]
    from transformers import AutoTokenizer

    from selfens_pl.data.demos import num_blocks
    from selfens_pl.data.prompts import PromptTokenizer
    from selfens_pl.engine.models import resolve_model_name
    from selfens_pl.heads.flex import FlexFusion, mask_for_picture
    from selfens_pl.lit.cli import build_cli

    cli = build_cli(rest, run=False)
    head = cli.model.head
    layout = args.layout or (head.layout if isinstance(head, FlexFusion) else "concat")
    positions = args.positions or (head.positions if isinstance(head, FlexFusion) else "aligned")
    data = cli.datamodule
    data.setup()
    if not 0 <= args.index < len(data.groups):
        raise UserError(f"--index={args.index}: the data has {len(data.groups)} groups")
    group = data.groups[args.index]
    if args.num_paraphrases < 1 or args.generated < 0:
        raise UserError("--num_paraphrases must be >= 1 and --generated >= 0")
    paraphrases = group["paraphrases"][: args.num_paraphrases]
    m = num_blocks(group)

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(cli.model.hparams.model))
    prompts = PromptTokenizer(tokenizer, data.template)
    mask, lay = mask_for_picture(prompts, paraphrases, layout, positions, generated=args.generated, group=group)
    segments = lay.segments + [GENERATED] * args.generated
    runs = segment_runs(segments)
    names = run_labels(segments, lay.blocks + [0] * args.generated, len(paraphrases)) if m > 1 else \
        [default_label(seg) for seg, _, _ in runs]
    blocks = f" x {m} few-shot blocks" if m > 1 else ""
    out = draw_mask(mask, segments, names, args.out,
                    title=f"group {group['id']!r}: {len(paraphrases)} paraphrases{blocks}, layout={layout}, "
                          f"positions={positions}")
    np.save(out.with_suffix(".npy"), mask.cpu().numpy())
    sizes = ", ".join(f"{name}={end - start}" for name, (_, start, end) in zip(names, runs))
    print(f"wrote {out} and {out.with_suffix('.npy')}")
    print(f"layout={layout} positions={positions} L={len(segments)}: {sizes}")
    return out


if __name__ == "__main__":
    main()
