"""Bridges to other tools' evaluation loops (the layer above the Python API).

* :mod:`selfens_pl.integrations.lm_eval`: an lm-evaluation-harness model, ``selfens_pl`` (``docs/lm-eval.md``);
  :mod:`selfens_pl.integrations.lm_eval_requests` turns its requests into the package's groups and prompts.

Nothing here is imported by the rest of the package: an integration's own dependency (``lm_eval``) is needed only by
whoever uses it.
"""
