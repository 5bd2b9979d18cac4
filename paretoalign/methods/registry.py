"""Every method, by name: one line per recipe. Importing this module loads no model library."""

from __future__ import annotations

from .base import BaseRecipe
from .best_of_n import BestOfNRecipe
from .common.recipe import Recipe
from .hc_rlhf import HCRLHFRecipe
from .mavis import MAVISRecipe
from .mod import MODRecipe
from .morlhf import MORLHFRecipe
from .prompting import PromptingRecipe
from .psoups.recipe import PSoupsRecipe
from .ric.recipe import RiCRecipe
from .safe_rlhf import SafeRLHFRecipe
from .sipo import SIPORecipe
from .soups import SoupsRecipe

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        BaseRecipe(),
        PromptingRecipe(),
        BestOfNRecipe(),
        SoupsRecipe(),
        PSoupsRecipe(),
        MODRecipe(),
        MAVISRecipe(),
        RiCRecipe(),
        MORLHFRecipe(),
        SafeRLHFRecipe(),
        HCRLHFRecipe(),
        SIPORecipe(),
    )
}
