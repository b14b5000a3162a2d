"""Fusion heads: how the paraphrases of a group become one answer (chosen in YAML by ``class_path``)."""

from selfens_pl.engine.fusion import fuse_logits
from selfens_pl.heads.base import FusionHead
from selfens_pl.heads.cascade import CascadeHead
from selfens_pl.heads.choice import ChoiceHead
from selfens_pl.heads.controls import NearestAnswerHead, SelfConsistencyHead, SimilarPromptHead
from selfens_pl.heads.flex import FlexFusion
from selfens_pl.heads.logit import LogitFusion
from selfens_pl.heads.origin import OriginHead
from selfens_pl.heads.per_prompt import PerPromptHead
from selfens_pl.heads.rerank import RerankHead
from selfens_pl.heads.vote import VoteHead

__all__ = ["FusionHead", "OriginHead", "PerPromptHead", "LogitFusion", "FlexFusion", "VoteHead", "RerankHead", "CascadeHead",
           "SimilarPromptHead", "NearestAnswerHead", "SelfConsistencyHead", "fuse_logits"]
