"""Baselines trained on the same data kinds and sampled through the same API as diffusion models: a
DCGAN-style GAN with R1 (non-saturating or hinge loss), its trainer and its generator.  (The VAE
baseline is the KL autoencoder of the latent-diffusion work, sampled from its prior.)"""
from .checkpoint import FORMAT, GANCheckpoint, load_gan_checkpoint
from .generator import GANGenerator, load_gan_generator
from .losses import GAN_LOSSES, d_loss, g_loss, r1_penalty
from .monitor import FailureMonitor, diversity_ratio, mean_pairwise_distance
from .networks import Discriminator, GANGeneratorNet
from .trainer import GANConfig, GANResult, train_gan

__all__ = ["FORMAT", "GANCheckpoint", "load_gan_checkpoint", "GANGenerator", "load_gan_generator", "GAN_LOSSES",
           "d_loss", "g_loss", "r1_penalty", "FailureMonitor", "diversity_ratio", "mean_pairwise_distance",
           "Discriminator", "GANGeneratorNet", "GANConfig", "GANResult", "train_gan"]
