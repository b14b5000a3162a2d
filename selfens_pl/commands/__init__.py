"""The command-line verbs that are not LightningCLI subcommands (``python -m selfens_pl <verb> ...``).

Each module has a ``main(argv)``; :data:`selfens_pl.cli.TOOLS` maps the verb to it. The library they use lives one
level up (module, data, heads, decoding, attention, metrics, writer, prompts, models, sources).
"""
