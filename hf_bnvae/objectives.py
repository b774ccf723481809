"""Training objectives of the collapse remedies the paper compares: KL-weight schedules and free bits.

The model's forward gives the per-sentence reconstruction NLL and the per-dimension KL (nats); the
functions here turn those into the scalar that is minimised. BN-VAE itself needs none of this: it
changes the posterior (see `BatchNormLatentHead`), not the objective.
"""

import math


def linear_kl_weight(step, warmup_steps, final_weight=1.0):
    """KL weight rising linearly from 0 to final_weight over warmup_steps optimiser steps, then flat.

    warmup_steps = 0 gives final_weight from the first step (beta-VAE without annealing, AE with 0).
    """
    if warmup_steps <= 0:
        return final_weight
    return final_weight * min(1.0, step / warmup_steps)


def cyclical_kl_weight(step, cycle_steps, increase_fraction=0.5, final_weight=1.0):
    """Cyclical annealing (Fu et al., 2019): every cycle of cycle_steps restarts at 0, rises linearly
    during the first increase_fraction of the cycle, then stays at final_weight."""
    if cycle_steps <= 0:
        raise ValueError(f"cycle_steps={cycle_steps} must be >= 1")
    position = (step % cycle_steps) / cycle_steps
    return final_weight * min(1.0, position / increase_fraction)


def free_bits_kl(kl_per_dimension, target, per_dimension=False):
    """The KL term with free bits: the KL is not penalised below `target` nats.

    kl_per_dimension: (B, n) nats. Per sentence (Li et al., 2019): max(target, batch-mean KL).
    Per dimension (Kingma et al., 2016): sum_d max(target, batch-mean KL_d), target in nats per dimension.
    Returns a scalar, to be added (times the KL weight) to the batch-mean reconstruction loss.
    """
    batch_kl = kl_per_dimension.mean(0)  # (n,)
    if per_dimension:
        return batch_kl.clamp(min=target).sum()
    return batch_kl.sum().clamp(min=target)


def training_loss(outputs, kl_weight, free_bits=None, free_bits_per_dimension=False):
    """Scalar loss: batch-mean reconstruction + kl_weight * KL term (free bits if a target is given).

    outputs: a `BNVAEOutput` computed with labels. The LSTM LM (no KL) returns the reconstruction only.
    """
    reconstruction = outputs.reconstruction_loss.mean()
    if outputs.kl is None:
        return reconstruction
    if free_bits is not None:
        kl_term = free_bits_kl(outputs.kl_per_dimension, free_bits, free_bits_per_dimension)
    else:
        kl_term = outputs.kl.mean()
    return reconstruction + kl_weight * kl_term


def perplexity(total_nll, total_tokens):
    """exp(total NLL / total tokens); tokens count the words and the end token, not the start token."""
    return math.exp(total_nll / total_tokens)


__all__ = ["cyclical_kl_weight", "free_bits_kl", "linear_kl_weight", "perplexity", "training_loss"]
