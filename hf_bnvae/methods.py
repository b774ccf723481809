"""The collapse remedies the paper compares, as one table: `METHODS[name]` says everything a method is.

A method is a few values, not a class: its label in tables and cards, what it fixes in the model
config (gamma, use_latent), the flags it owns with their defaults (a flag that names a config field
goes to the config, `beta` is the final KL weight, `cycle_epochs` the cyclical period), how its KL
weight moves over training, and the validation metric that selects its best epoch. The objective
itself is one function, `modeling_bnvae.vae_loss`; the schedules are below.

Adding a remedy is one entry here (plus, if it needs one, a config field read by the model).
"""

import inspect
from dataclasses import dataclass, field

from .configuration_bnvae import BNVAEConfig

CONFIG_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(BNVAEConfig.__init__).parameters.items()
    if name not in ("self", "kwargs")
}  # each model default is defined once, in BNVAEConfig's signature


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


@dataclass(frozen=True)
class Flag:
    default: object
    help: str


@dataclass(frozen=True)
class Method:
    label: str  # for tables and cards; formatted with the resolved flag values
    config: dict = field(default_factory=dict)  # fixed BNVAEConfig values
    flags: dict = field(default_factory=dict)  # flag name -> Flag; config fields among them go to the config
    final_kl_weight: float = 1.0
    schedule: str = "linear"  # "linear" (0 -> final over the warm-up) or "cyclical"
    # validation metric for model selection and the plateau rule: the -ELBO at KL weight 1 (the paper's
    # protocol), except for the autoencoder, which never trains its KL: its reconstruction
    selection_metric: str = "nelbo"


PLAIN = {"gamma": 0.0}  # no BN: the plain VAE posterior every baseline starts from
METHODS = {
    "bnvae": Method(
        "BN-VAE ({gamma:g})",
        flags={"gamma": Flag(CONFIG_DEFAULTS["gamma"], "fixed BN scale of the posterior mean (> 0)")},
    ),
    "vae": Method("VAE", PLAIN),
    "lm": Method("LSTM-LM", {"use_latent": False, "gamma": 0.0}, final_kl_weight=0.0),
    "ae": Method("autoencoder", PLAIN, final_kl_weight=0.0, selection_metric="reconstruction"),
    "beta_vae": Method("beta-VAE ({beta:g})", PLAIN, flags={"beta": Flag(0.4, "final KL weight")}),
    "cyclical": Method(
        "cyclical annealing",
        PLAIN,
        flags={"cycle_epochs": Flag(2.0, "cycle length in epochs (KL weight 0 -> 1 over its first half)")},
        schedule="cyclical",
    ),
    "free_bits": Method(
        "free bits ({free_bits:g})",
        PLAIN,
        flags={
            "free_bits": Flag(4.0, "target KL in nats per sentence (per dimension with --free_bits_per_dimension)"),
            "free_bits_per_dimension": Flag(False, "the free-bits target is per latent dimension"),
        },
    ),
    "delta_vae": Method(
        "delta-VAE ({delta_rate:g})", PLAIN, flags={"delta_rate": Flag(0.15, "committed rate in nats per dimension")}
    ),
}


@dataclass(frozen=True)
class Recipe:
    """A method with its flag values resolved: what train.py, the reproduction and the cards read."""

    name: str
    label: str
    config: dict
    final_kl_weight: float
    schedule: str
    cycle_epochs: float | None
    selection_metric: str

    def kl_weight(self, step, warmup_steps, steps_per_epoch):
        """KL weight at optimiser step `step`."""
        if self.schedule == "cyclical":
            return cyclical_kl_weight(
                step, round(self.cycle_epochs * steps_per_epoch), final_weight=self.final_kl_weight
            )
        return linear_kl_weight(step, warmup_steps, self.final_kl_weight)


def all_flags():
    """{flag: (owning method, Flag)} over the table, for building command-line options."""
    return {flag: (name, spec) for name, method in METHODS.items() for flag, spec in method.flags.items()}


def resolve_method(name, **values):
    """Recipe of method `name` with the given flag values (None = the table's default).

    ValueError for an unknown method, a flag another method owns, or a value the method cannot use.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    method = METHODS[name]
    for flag, value in values.items():
        if value is not None and value is not False and flag not in method.flags:
            owner = all_flags()[flag][0] if flag in all_flags() else None
            raise ValueError(f"--{flag} only applies to --method {owner}, not {name}")
    settings = {flag: spec.default if values.get(flag) is None else values[flag] for flag, spec in method.flags.items()}
    if name == "bnvae" and not settings["gamma"] > 0:
        raise ValueError(
            f"--gamma {settings['gamma']} leaves BN-VAE without its bound; use --gamma > 0 (or --method vae)"
        )
    config = {**method.config, **{k: v for k, v in settings.items() if k in CONFIG_DEFAULTS}}
    return Recipe(
        name=name,
        label=method.label.format(**settings),
        config=config,
        final_kl_weight=settings.get("beta", method.final_kl_weight),
        schedule=method.schedule,
        cycle_epochs=settings.get("cycle_epochs"),
        selection_metric=method.selection_metric,
    )


def recipe_of_config(config):
    """The method a saved config was most likely trained with, for a model whose metrics.json is missing.
    The config cannot tell the autoencoder (or beta-VAE, cyclical) from the VAE: they share it."""
    if not config.use_latent:
        return resolve_method("lm")
    if config.gamma > 0:
        return resolve_method("bnvae", gamma=config.gamma)
    if config.delta_rate > 0:
        return resolve_method("delta_vae", delta_rate=config.delta_rate)
    if config.free_bits > 0:
        return resolve_method(
            "free_bits", free_bits=config.free_bits, free_bits_per_dimension=config.free_bits_per_dimension
        )
    return resolve_method("vae")


__all__ = [
    "METHODS",
    "Method",
    "Recipe",
    "all_flags",
    "cyclical_kl_weight",
    "linear_kl_weight",
    "recipe_of_config",
    "resolve_method",
]
