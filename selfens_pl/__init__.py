"""selfens_pl: self-ensembles of paraphrased prompts for causal LMs, as Lightning modules and a Python API.

    from selfens_pl import SelfEnsemble, LogitFusion
    se = SelfEnsemble.load("smollm2-135m-instruct")
    se.answer(["what is the capital of france?"], head=LogitFusion("avg"), paraphrases="generate")

"The reference code" in comments means the research code of the Self-Ensemble paper (Xu et al. 2025), which this
package reimplements; where it departs from it, the comment says how.
"""

from selfens_pl.api import Answer, Group, SelfEnsemble
from selfens_pl.heads import CascadeHead, FlexFusion, FusionHead, LogitFusion, OriginHead, PerPromptHead, RerankHead, VoteHead

__version__ = "0.1.0"

__all__ = ["SelfEnsemble", "Group", "Answer", "FusionHead", "OriginHead", "PerPromptHead", "LogitFusion", "FlexFusion",
           "VoteHead", "RerankHead", "CascadeHead", "__version__"]
