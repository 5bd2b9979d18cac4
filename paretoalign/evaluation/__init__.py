"""Layer 8: Pareto sweeps over a weight grid, fronts, hypervolume and MIP, results.json, plots and the report."""

from .front import DEFAULT_REFERENCE_VALUE, hypervolume, mip, pareto_front, reference_point
from ..core.preference import weight_grid
from .plots import front_figure, kl_figure, plot_front, plot_kl
from .report import render_report, write_report
from .results import MethodResult, PointResult, build_results, load_results, write_results
from .steerability import steerability
from ..objectives.normalization import fit_reference_normalization
from .sweep import evaluate

__all__ = [
    "DEFAULT_REFERENCE_VALUE",
    "MethodResult",
    "PointResult",
    "build_results",
    "evaluate",
    "fit_reference_normalization",
    "front_figure",
    "hypervolume",
    "kl_figure",
    "load_results",
    "mip",
    "pareto_front",
    "plot_front",
    "plot_kl",
    "reference_point",
    "steerability",
    "render_report",
    "weight_grid",
    "write_report",
    "write_results",
]
