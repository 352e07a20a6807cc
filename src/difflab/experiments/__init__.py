"""Experiments: sweeps over schedules, parameterisations, loss weightings, budgets and samplers."""
from .report import write_report
from .sweep import expand_grid, load_config, run_sweep

__all__ = ["run_sweep", "load_config", "expand_grid", "write_report"]
