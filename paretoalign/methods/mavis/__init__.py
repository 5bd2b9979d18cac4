"""MAVIS: multi-objective alignment via value-guided inference-time search (METHODS.md "MAVIS").

``trees`` collects and stores the training data, ``values`` trains and loads value models, ``policy``
decodes with them (:mod:`paretoalign.generation.value_guided`), ``recipe`` runs the iterations and
``train_for_demo``.
"""

from .policy import MAVISPolicy
from .recipe import BUDGETS, MAVISRecipe, TrainingCost, build_value_models, train_for_demo
from .trees import TreeSampler, TreeShape, back_up, collect_trees, merge_shards, read_shards, tree_info, value_records, write_shard
from .values import NodeValueTrainer, TokenValueTrainer, load_value_model, token_head_from_causal_lm, train_value_model

__all__ = [
    "BUDGETS",
    "MAVISPolicy",
    "MAVISRecipe",
    "NodeValueTrainer",
    "TokenValueTrainer",
    "TrainingCost",
    "TreeSampler",
    "TreeShape",
    "back_up",
    "build_value_models",
    "collect_trees",
    "load_value_model",
    "merge_shards",
    "read_shards",
    "token_head_from_causal_lm",
    "train_for_demo",
    "train_value_model",
    "tree_info",
    "value_records",
    "write_shard",
]
