"""Dataset sources that produce the package's question groups."""

from .myriadlama import (
    group_myriadlama,
    is_grouped_myriadlama,
    load_myriadlama_groups,
    load_myriadlama_rows,
    myriadlama_few_shot,
    myriadlama_groups,
    select_paraphrases,
    split_facts,
)
from .webqa import load_webqa, sample_few_shot, webqa_groups

__all__ = [
    "group_myriadlama",
    "is_grouped_myriadlama",
    "load_myriadlama_groups",
    "load_myriadlama_rows",
    "load_webqa",
    "myriadlama_few_shot",
    "myriadlama_groups",
    "sample_few_shot",
    "select_paraphrases",
    "split_facts",
    "webqa_groups",
]
