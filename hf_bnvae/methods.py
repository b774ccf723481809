"""The collapse remedies the paper compares, as one table: `METHODS[name]` says everything a method is,
for the language model (BNVAEConfig, train.py) and for dialogue (BNCVAEConfig, train_dialogue.py).

A method is a few values, not a class: its label in tables and cards, what it fixes in the model
config (gamma, use_latent), the flags it owns with their defaults (a flag that names a config field
goes to the config, `beta` is the constant KL weight, `cycle_epochs` the cyclical period), how its KL
weight moves over training, whether the encoder is trained aggressively, and the plateau rule's
settings where they differ. Every schedule and rule follows the official code (valdersoul/bn-vae;
He et al.'s for aggressive training). The objective itself is one function,
`modeling_bnvae.vae_loss`; the schedules are below.

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

    warmup_steps = 0 gives final_weight from the first step.
    """
    if warmup_steps <= 0:
        return final_weight
    return final_weight * min(1.0, step / warmup_steps)


def cyclical_kl_weight(step, steps_per_epoch, cycle_epochs, warmup_steps, final_weight=1.0):
    """Cyclical annealing as the official code runs it (`--cycle`): the weight rises from 0 at the
    warm-up rate (final_weight / warmup_steps per step, capped at final_weight) and is reset to 0 at the
    start of epochs 1, 1 + cycle_epochs, 1 + 2 cycle_epochs, ... (0-based), so the first cycle is one
    epoch long and every later one cycle_epochs long.
    """
    epoch = step // steps_per_epoch
    reset_epoch = 1 + (epoch - 1) // cycle_epochs * cycle_epochs if epoch >= 1 else 0
    return linear_kl_weight(step - reset_epoch * steps_per_epoch, warmup_steps, final_weight)


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
    # "linear" (0 -> final over the warm-up), "cyclical" (restarts, see cyclical_kl_weight) or "constant"
    schedule: str = "linear"
    aggressive: bool = False  # He et al.'s aggressive inference-network training (train.py's burn-in loop)
    plateau: dict = field(default_factory=dict)  # the plateau rule's settings where they differ (PlateauRule)
    model: str = "bnvae"  # the model type it trains: "bnvae" (train.py) or "bncvae" (train_dialogue.py)


PLAIN = {"gamma": 0.0}  # no BN: the plain VAE posterior every baseline starts from
METHODS = {
    "bnvae": Method(
        "BN-VAE ({gamma:g})",
        flags={"gamma": Flag(CONFIG_DEFAULTS["gamma"], "fixed BN scale of the posterior mean (> 0)")},
    ),
    # beyond the paper: each dimension's BN scale learned, kept at or above gamma_min (BNVAEConfig.gamma_mode)
    "bnvae_learned": Method(
        "BN-VAE (learned gamma >= {gamma_min:g})",
        {"gamma_mode": "learned"},
        flags={
            "gamma": Flag(CONFIG_DEFAULTS["gamma"], "bnvae_learned: the learned scales' starting value"),
            "gamma_min": Flag(0.3, "the floor of every learned scale: the KL bound is n gamma_min^2 / 2"),
        },
    ),
    "vae": Method("VAE", PLAIN),
    # the official LM script: decay after 2 epochs without improvement, from the first epoch on
    "lm": Method(
        "LSTM-LM", {"use_latent": False, "gamma": 0.0}, final_kl_weight=0.0, plateau={"patience": 2, "start_epoch": 0}
    ),
    "ae": Method("autoencoder", PLAIN, final_kl_weight=0.0, schedule="constant"),
    "beta_vae": Method(
        "beta-VAE ({beta:g})", PLAIN, flags={"beta": Flag(0.4, "constant KL weight")}, schedule="constant"
    ),
    "cyclical": Method(
        "cyclical annealing",
        PLAIN,
        flags={"cycle_epochs": Flag(4, "KL weight back to 0 every this many epochs, rising at the warm-up rate")},
        schedule="cyclical",
    ),
    "free_bits": Method(
        "free bits ({free_bits:g})",
        PLAIN,
        flags={
            "free_bits": Flag(4.0, "target KL in nats per sentence: sentences below it get no KL term"),
            "free_bits_per_dimension": Flag(False, "instead mask each dimension below free_bits / latent_size"),
        },
    ),
    "delta_vae": Method(
        "delta-VAE ({delta_rate:g})",
        {**PLAIN, "encoder_init_range": 0.01},  # the official delta-VAE encoder is initialised at +-0.01
        flags={"delta_rate": Flag(0.15, "committed rate in nats per dimension")},
    ),
    "aggressive": Method("VAE + aggressive training", PLAIN, aggressive=True),
    # dialogue (Zhao et al.'s CVAE, with the bag-of-words loss, and BN-CVAE): the KL is annealed linearly
    "cvae": Method("CVAE", {"gamma": 0.0, "use_bow": False}, model="bncvae"),
    "cvae_bow": Method("CVAE + bag-of-words loss", {"gamma": 0.0, "use_bow": True}, model="bncvae"),
    "bncvae": Method(
        "BN-CVAE ({gamma:g})",
        {"use_bow": False},
        flags={"gamma": Flag(CONFIG_DEFAULTS["gamma"], "fixed BN scale of the recognition mean (> 0)")},
        model="bncvae",
    ),
}


def methods_of(model):
    """The names of the methods that train `model` ("bnvae" or "bncvae"), in table order."""
    return [name for name, method in METHODS.items() if method.model == model]


@dataclass(frozen=True)
class Recipe:
    """A method with its flag values resolved: what train.py, the reproduction and the cards read."""

    name: str
    label: str
    config: dict
    final_kl_weight: float
    schedule: str
    cycle_epochs: int | None
    aggressive: bool
    plateau: dict

    def kl_weight(self, step, warmup_steps, steps_per_epoch):
        """KL weight at optimiser step `step`."""
        if self.schedule == "constant":
            return self.final_kl_weight
        if self.schedule == "cyclical":
            return cyclical_kl_weight(step, steps_per_epoch, self.cycle_epochs, warmup_steps, self.final_kl_weight)
        return linear_kl_weight(step, warmup_steps, self.final_kl_weight)

    def selection_loss(self, reconstruction, kl):
        """The validation loss that selects the best epoch and drives the plateau rule, nats per sentence:
        reconstruction + final KL weight x KL, as the official scripts (the -ELBO for the VAE-type methods,
        the beta-weighted loss for beta-VAE, the reconstruction for the autoencoder and the LM)."""
        return reconstruction + self.final_kl_weight * kl


def all_flags(model="bnvae"):
    """{flag: (owning method, Flag)} over the methods of `model`, for building command-line options; a flag
    two methods share (gamma) belongs to the first in table order."""
    flags = {}
    for name, method in METHODS.items():
        if method.model == model:
            for flag, spec in method.flags.items():
                flags.setdefault(flag, (name, spec))
    return flags


def resolve_method(name, **values):
    """Recipe of method `name` with the given flag values (None = the table's default).

    ValueError for an unknown method, a flag another method owns, or a value the method cannot use.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    method = METHODS[name]
    for flag, value in values.items():
        if value is not None and value is not False and flag not in method.flags:
            owner = all_flags(method.model).get(flag, (None,))[0]
            raise ValueError(f"--{flag} only applies to --method {owner}, not {name}")
    settings = {flag: spec.default if values.get(flag) is None else values[flag] for flag, spec in method.flags.items()}
    if name in ("bnvae", "bnvae_learned", "bncvae") and not settings["gamma"] > 0:
        plain = "cvae" if name == "bncvae" else "vae"
        short = method.label.split(" (")[0]  # BN-VAE, BN-CVAE
        raise ValueError(
            f"--gamma {settings['gamma']} leaves {short} without its bound; use --gamma > 0 (or --method {plain})"
        )
    if name == "bnvae_learned" and not 0 <= settings["gamma_min"] < settings["gamma"]:
        raise ValueError(
            f"--gamma_min {settings['gamma_min']}: the learned scales' floor must be >= 0 and below --gamma"
            f" {settings['gamma']}, their starting value"
        )
    config = {**method.config, **{k: v for k, v in settings.items() if k in CONFIG_DEFAULTS}}
    return Recipe(
        name=name,
        label=method.label.format(**settings),
        config=config,
        final_kl_weight=settings.get("beta", method.final_kl_weight),
        schedule=method.schedule,
        cycle_epochs=settings.get("cycle_epochs"),
        aggressive=method.aggressive,
        plateau=method.plateau,
    )


def recipe_of_config(config):
    """The method a saved config was most likely trained with, for a model without results (all_results.json).
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
    "methods_of",
    "recipe_of_config",
    "resolve_method",
]
