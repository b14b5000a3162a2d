"""selfens_pl: self-ensemble of paraphrased prompts for causal LMs, as Lightning modules."""

__version__ = "0.1.0"
