"""selfens_pl: self-ensembles of paraphrased prompts for causal LMs, as Lightning modules and a Python API.

    from selfens_pl import SelfEnsemble, LogitFusion
    se = SelfEnsemble.load("smollm2-135m-instruct")
    se.answer(["what is the capital of france?"], head=LogitFusion("avg"), paraphrases="generate")

The names below load on first use (PEP 562), so that ``python -m selfens_pl --help`` starts without importing torch.

"The reference code" in comments means the research code of the Self-Ensemble paper (Xu et al. 2025), which this
package reimplements; where it departs from it, the comment says how.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "SelfEnsemble": "selfens_pl.api", "Group": "selfens_pl.api", "Answer": "selfens_pl.api",
    "FusionHead": "selfens_pl.heads", "OriginHead": "selfens_pl.heads", "PerPromptHead": "selfens_pl.heads",
    "LogitFusion": "selfens_pl.heads", "FlexFusion": "selfens_pl.heads", "VoteHead": "selfens_pl.heads",
    "RerankHead": "selfens_pl.heads", "CascadeHead": "selfens_pl.heads", "ChoiceHead": "selfens_pl.heads",
    "SimilarPromptHead": "selfens_pl.heads", "NearestAnswerHead": "selfens_pl.heads",
    "SelfConsistencyHead": "selfens_pl.heads",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selfens_pl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
