"""What the experiment drivers (reproduce.py, converged.py, semi_supervised.py, classification_recipes.py)
share: a run declared as (name, method, flags) with its label from hf_bnvae.methods' table, train.py run as
a subprocess for one model of a comparison, and the statistics of their tables.
"""

import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hf_bnvae.checkpoints import list_checkpoints
from hf_bnvae.methods import resolve_method

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Run:
    """One model of a comparison: `name` (its folder and key in the results), the method of
    hf_bnvae.methods' table with its flag values, the run whose encoder it starts from, if any (a name of
    the same comparison, as "pretrained encoder + free bits" starts from the autoencoder), and train.py
    options that are not the method's (`options`, e.g. the decoder type and the optimizer)."""

    name: str
    method: str
    flags: dict = field(default_factory=dict)
    init_encoder_from: str | None = None
    options: dict = field(default_factory=dict)

    @property
    def label(self):
        """The method's label from the table (with its flag values), marked when the encoder was pretrained
        or the decoder is a Transformer."""
        label = resolve_method(self.method, **self.flags).label
        if self.options.get("decoder_type") == "transformer":
            label = f"Transformer {label.removeprefix('LSTM-')}"  # "Transformer LM", "Transformer BN-VAE (0.6)"
        return f"pretrained encoder + {label}" if self.init_encoder_from else label

    def train_flags(self, models=None):
        """train.py's flags of this run; `models` is the folder holding the run named by init_encoder_from."""
        flags = ["--method", self.method]
        for flag, value in {**self.flags, **self.options}.items():
            flags += [f"--{flag}", f"{value:g}" if isinstance(value, float) else str(value)]
        if self.init_encoder_from:
            flags += ["--init_encoder_from", str(Path(models) / self.init_encoder_from)]
        return flags


def run_train_script(output_dir, budget, seed, flags, resumable=False):
    """Run train.py for one model of a comparison: the Brown preset (flags may name another), the training
    budget's num_train_epochs, kl_warmup_epochs and max_train_samples (None: every sentence), no final
    IW-NLL, plus `flags`. resumable: checkpoint every epoch, and resume from the last checkpoint there is."""
    if resumable:
        flags = [*flags, "--checkpointing_steps", "epoch"]
        if list_checkpoints(Path(output_dir) / "checkpoints"):
            flags += ["--resume_from_checkpoint", "latest"]
    command = [
        sys.executable,
        str(HERE / "train.py"),
        *("--preset", "brown", "--output_dir", str(output_dir)),
        *("--num_train_epochs", str(budget.num_train_epochs), "--kl_warmup_epochs", str(budget.kl_warmup_epochs)),
        *("--seed", str(seed), "--iw_samples", "0"),
        *(["--max_train_samples", str(budget.max_train_samples)] if budget.max_train_samples else []),
        *flags,
    ]
    print(f"[train] {Path(output_dir).name}: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, check=True)


def mean_std(values):
    """{"mean", "std", "runs"} of a figure over seeds: the sample std (n-1 divisor), 0 for one run."""
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "runs": values,
    }


def mean_ci95(values):
    """{"mean", "ci95", "n"}: the mean of `values` (e.g. paired differences) with its 95% t interval
    (n - 1 degrees of freedom). Needs at least 2 values."""
    from scipy.stats import t  # installed with the dev and classification extras (scikit-learn's dependency)

    if len(values) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {len(values)}")
    mean = statistics.mean(values)
    half = t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": len(values)}


def reconstruction_bleu(outputs, inputs):
    """sacrebleu's corpus BLEU of reconstructions against their inputs, on the text as it is (no
    re-tokenisation; 100 is a word-for-word copy)."""
    import sacrebleu

    return sacrebleu.corpus_bleu(outputs, [inputs], tokenize="none", force=True).score


__all__ = ["Run", "mean_ci95", "mean_std", "reconstruction_bleu", "run_train_script"]
