"""Metrics: distances between sample sets, feature extractors, scores and likelihood."""
from .audio import AudioCNN, evaluate_audio, train_audio_classifier
from .classifier import ModuleExtractor, SmallCNN, classifier_folder, load_classifier, save_classifier, train_classifier
from .distances import (energy_distance, frechet_distance, frechet_distance_from_stats, gaussian_stats, kid, mmd_rbf,
                        precision_recall, sliced_wasserstein)
from .elbo import ElboResult, ddpm_elbo
from .inception import InceptionV3FID, find_inception_weights, load_inception
from .likelihood import bits_per_dim, log_likelihood
from .scores import class_entropy, inception_score, memorisation

__all__ = ["ModuleExtractor", "SmallCNN", "classifier_folder", "load_classifier", "save_classifier", "train_classifier",
           "energy_distance", "frechet_distance", "frechet_distance_from_stats", "gaussian_stats", "kid",
           "mmd_rbf", "precision_recall", "sliced_wasserstein", "bits_per_dim", "log_likelihood",
           "class_entropy", "inception_score", "memorisation", "ElboResult", "ddpm_elbo", "InceptionV3FID",
           "find_inception_weights", "load_inception", "AudioCNN", "evaluate_audio", "train_audio_classifier"]
