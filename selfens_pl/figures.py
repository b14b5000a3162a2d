"""Charts: one way to lay out, write and close a matplotlib figure."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, out: str | Path) -> Path:
    """Lay out ``fig``, write it to ``out`` (folders made) at 100 dpi and close it (every chart of the verbs)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
