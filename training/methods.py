"""The collapse remedies of the paper as train.py's `--method`: model settings plus a KL objective.

Each method is a few values, not a class: what it sets in the model config (gamma, use_latent,
delta_rate) and how the KL enters the loss (final KL weight, schedule, free bits).
"""

from dataclasses import dataclass

from hf_bnvae.objectives import cyclical_kl_weight, linear_kl_weight

METHODS = ("bnvae", "vae", "lm", "ae", "beta_vae", "cyclical", "free_bits", "delta_vae")


@dataclass
class Method:
    name: str
    model_overrides: dict
    final_kl_weight: float = 1.0
    schedule: str = "linear"  # "linear" (annealing, 0 -> final over the warm-up) or "cyclical"
    free_bits: float | None = None  # nats; per sentence, or per dimension with free_bits_per_dimension
    free_bits_per_dimension: bool = False
    # validation metric for model selection and the plateau rule: the -ELBO at KL weight 1 (the
    # paper's protocol), except for the autoencoder, which never trains the KL: its reconstruction
    selection_metric: str = "nelbo"

    def kl_weight(self, step, warmup_steps, cycle_steps):
        """KL weight at optimiser step `step`."""
        if self.schedule == "cyclical":
            return cyclical_kl_weight(step, cycle_steps, final_weight=self.final_kl_weight)
        return linear_kl_weight(step, warmup_steps, self.final_kl_weight)


def resolve_method(args):
    """Method for the parsed arguments; ValueError for an unknown method or flags it cannot use."""
    name = args.method
    if name not in METHODS:
        raise ValueError(f"unknown --method {name!r}; choose one of {', '.join(METHODS)}")
    own_flags = {
        "gamma": "bnvae",
        "beta": "beta_vae",
        "free_bits": "free_bits",
        "delta_rate": "delta_vae",
    }
    for flag, owner in own_flags.items():
        if getattr(args, flag) is not None and name != owner:
            raise ValueError(f"--{flag} only applies to --method {owner}, not {name}")
    if args.free_bits_per_dimension and name != "free_bits":
        raise ValueError(f"--free_bits_per_dimension only applies to --method free_bits, not {name}")
    if args.cycle_epochs is not None and name != "cyclical":
        raise ValueError(f"--cycle_epochs only applies to --method cyclical, not {name}")
    if args.init_encoder_from and name in ("lm", "bnvae"):
        raise ValueError(f"--init_encoder_from needs a VAE-type method with a plain posterior, not {name}")

    plain = {"gamma": 0.0}
    if name == "bnvae":
        return Method(name, {"gamma": 0.6 if args.gamma is None else args.gamma})
    if name == "vae":
        return Method(name, plain)
    if name == "lm":
        return Method(name, {"use_latent": False, "gamma": 0.0}, final_kl_weight=0.0)
    if name == "ae":
        return Method(name, plain, final_kl_weight=0.0, selection_metric="reconstruction")
    if name == "beta_vae":
        return Method(name, plain, final_kl_weight=0.4 if args.beta is None else args.beta)
    if name == "cyclical":
        return Method(name, plain, schedule="cyclical")
    if name == "free_bits":
        return Method(name, plain, free_bits=4.0 if args.free_bits is None else args.free_bits,
                      free_bits_per_dimension=args.free_bits_per_dimension)
    return Method(name, {"gamma": 0.0, "delta_rate": 0.15 if args.delta_rate is None else args.delta_rate})
