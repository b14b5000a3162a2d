"""The engine: the model and everything that runs it (loading, sharding, attention masks, KV caches, batches of
prompts, greedy decoding and sampling, the token-level fusion rules). Imports the data layer only."""
