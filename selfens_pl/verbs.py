"""The package's commands and the line that says what each does: the overview of ``python -m selfens_pl --help``
and the title of a Lightning command's short help. Plain data, importable from every layer without importing torch."""

#: Every command with its line of the overview (``python -m selfens_pl --help``), in the order shown.
COMMANDS = {
    "predict": "answer questions with a fusion head: predictions.jsonl, summary.json (Lightning)",
    "fit": "fine-tune the model through a fusion head's layout (Lightning)",
    "validate": "score the model on validation groups, as fit validates (Lightning)",
    "test": "Lightning's test loop; the model has no test step: use predict or validate (Lightning)",
    "ask": "answer one question with every method side by side",
    "report": "compare predict or sweep runs: a markdown table, gains with intervals, charts",
    "mask": "draw the fused attention mask of a FlexFusion config",
    "paraphrase": "generate paraphrases of questions and keep those that pass the quality checks",
    "confidence": "per-paraphrase confidences (sampled agreement) for the weighted rules",
    "sweep": "every method for K paraphrases x M few-shot blocks: gains, tables, charts",
    "chooser": "fit the learned chooser of RerankHead(rule=learned) on questions with answers",
}
