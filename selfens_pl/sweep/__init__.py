"""The sweep over K paraphrases x M few-shot blocks: the grid, one engine pass per batch of facts, every method
derived through the heads' own decision functions, and the report. Imports the heads and everything below."""
