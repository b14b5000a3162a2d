"""Scoring: the lemma metric, agreement between answers, answer-level rescoring rules, per-paraphrase summaries,
bootstrap statistics and the paraphrase checks. Imports the data and engine layers."""
