"""SIPO: self-improvement towards Pareto optimality (METHODS.md "SIPO").

``recipe`` holds the settings and the stages, ``rules`` the sampling weights, templates, combine and filter rules,
``data`` where pairs and conflicts come from, ``rewards`` the implicit rewards, ``stages`` the stage bodies.
Importing this package loads no model library; ``data``, ``rewards`` and ``stages`` do.
"""

from .recipe import SIPOConfig, SIPORecipe

__all__ = ["SIPOConfig", "SIPORecipe"]
