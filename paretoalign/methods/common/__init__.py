"""Mechanisms several methods share (the recipe contract, normalization, one policy per objective, pairs);
never a sibling method's module."""
