"""MAVIS: multi-objective alignment via value-guided inference-time search (METHODS.md "MAVIS").

``recipe`` fits the value models stage by stage (``collect``, ``train``), ``trees`` grows and stores their
training data, ``values`` trains and loads them, ``policy`` decodes with them
(:mod:`paretoalign.generation.value_guided`). Importing this package loads no model library; ``trees`` and
``values`` do.
"""

from .policy import MAVISPolicy
from .recipe import MAVISConfig, MAVISRecipe, TreeShape

__all__ = ["MAVISConfig", "MAVISPolicy", "MAVISRecipe", "TreeShape"]
