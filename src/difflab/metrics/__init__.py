"""Metrics: distances between sample sets (feature extractors and likelihood follow)."""
from .distances import (energy_distance, frechet_distance, frechet_distance_from_stats, gaussian_stats, kid,
                        mmd_rbf, precision_recall, sliced_wasserstein)

__all__ = ["energy_distance", "frechet_distance", "frechet_distance_from_stats", "gaussian_stats", "kid",
           "mmd_rbf", "precision_recall", "sliced_wasserstein"]
