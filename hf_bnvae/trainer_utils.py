"""The skeleton the three training scripts (train.py, train_classifier.py, train_dialogue.py) share: the
common arguments and their bounds, the Accelerator, the optimizer step, the paper's plateau rule and the
best-weights keeper that applies it, epoch checkpoints, saving a run (save_run); also the aggressive
training loop, BN statistics over processes and the training-curves figure (checkpoint files:
hf_bnvae.checkpoints)."""

import argparse
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import cpu_state_dict, fingerprint, load_checkpoint, resolve_checkpoint, save_checkpoint
from .saving import save_pretrained_atomically, write_results

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# the plateau rule


@dataclass
class PlateauRule:
    """The official code's learning-rate rule, epoch by epoch on the validation loss.

    The best loss so far selects the saved model. A separate reference loss counts the epochs without
    improvement: an epoch whose loss is at most the reference becomes the new reference and resets the
    count; a worse one adds to it. When the count reaches `patience` at an epoch >= `start_epoch`
    (0-based), the lr is multiplied by `factor`, training goes back to the best model, the reference
    becomes that epoch's loss and the count restarts; training stops right after the `max_decays`-th
    such decay (0: never decay). Official VAE scripts: start 15, patience 5, factor 0.5, 5 decays; its
    LSTM-LM script: start 0, patience 2.
    """

    start_epoch: int = 15
    patience: int = 5
    factor: float = 0.5
    max_decays: int = 5
    best_loss: float = float("inf")
    best_epoch: int = -1
    reference_loss: float = float("inf")
    epochs_without_improvement: int = 0
    decays: int = 0

    def update(self, epoch, loss):
        """Record epoch's validation loss. Returns "improved" (a new best: save it), "wait", "decay"
        (multiply the lr by factor, reload the best) or "stop" (the same, and the last allowed decay)."""
        improved = loss < self.best_loss
        if improved:
            self.best_loss, self.best_epoch = loss, epoch
        if loss <= self.reference_loss:  # the best is never above the reference, so every new best lands here
            self.reference_loss, self.epochs_without_improvement = loss, 0
            return "improved" if improved else "wait"
        self.epochs_without_improvement += 1
        if self.max_decays and epoch >= self.start_epoch and self.epochs_without_improvement >= self.patience:
            self.decays += 1
            self.reference_loss, self.epochs_without_improvement = loss, 0
            return "stop" if self.decays >= self.max_decays else "decay"
        return "wait"

    def state_dict(self):
        """The rule's progress; its settings come from the run (so a resumed run can change them)."""
        keys = ("best_loss", "best_epoch", "reference_loss", "epochs_without_improvement", "decays")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state):
        self.__dict__.update(state)

    @classmethod
    def from_args(cls, args):
        """The rule of a training script's --plateau_start_epoch, --plateau_patience, --plateau_factor and
        --plateau_max_decays (add_training_arguments)."""
        return cls(args.plateau_start_epoch, args.plateau_patience, args.plateau_factor, args.plateau_max_decays)


class BestWeightsKeeper:
    """The plateau rule applied to a model: after each epoch's validation, keep a copy of the best weights;
    at a decay multiply the lr by the rule's factor and go back to them (as the official scripts do).

    `update(model, optimizer, epoch, loss)` returns the rule's action ("improved", "wait", "decay",
    "stop") or "diverged" for a loss that is not finite, after which the caller stops with the best
    weights (RuntimeError from `diverged` when no epoch had a finite loss). model: the unwrapped model.
    """

    def __init__(self, rule):
        self.rule, self.best_weights = rule, None

    def update(self, model, optimizer, epoch, loss):
        if diverged(loss, epoch, self.best_weights is not None):
            return "diverged"
        action = self.rule.update(epoch, loss)
        if action == "improved":
            self.best_weights = cpu_state_dict(model)
        elif action in ("decay", "stop"):
            model.load_state_dict(self.best_weights)
            for group in optimizer.param_groups:
                group["lr"] *= self.rule.factor
        return action

    def restore_best(self, model):
        """Load the best weights into model (no-op before the first validation)."""
        if self.best_weights is not None:
            model.load_state_dict(self.best_weights)

    def state_dict(self):
        """{"plateau": the rule's progress, "best_weights": tensors or None}, for a training checkpoint."""
        return {"plateau": self.rule.state_dict(), "best_weights": self.best_weights}

    def load_state_dict(self, state):
        self.rule.load_state_dict(state["plateau"])
        self.best_weights = state["best_weights"]


# ----------------------------------------------------------------------------------------------
# aggressive inference-network training


def aggressive_encoder_updates(encoder_step, max_steps=100, check_every=15):
    """He et al. (2019)'s inner loop: update the encoder alone until its objective stops improving.

    encoder_step(i) takes one encoder-only optimiser step (i = 1, 2, ...) and returns (summed loss in
    nats, predicted tokens) of its batch. Every `check_every` steps the per-token loss of the last block
    is compared with the block before; the loop stops when it got worse, or after max_steps - 1 steps
    (the official `sub_iter < 100`). Returns the number of steps taken.
    """
    previous, block_loss, block_tokens = float("inf"), 0.0, 0
    for i in range(1, max_steps):
        loss, tokens = encoder_step(i)
        block_loss, block_tokens = block_loss + loss, block_tokens + tokens
        if i % check_every == 0:
            current = block_loss / max(block_tokens, 1)
            if current > previous:
                return i
            previous, block_loss, block_tokens = current, 0.0, 0
    return max_steps - 1


# ----------------------------------------------------------------------------------------------
# command-line checks


def check_finite(parser, args):
    """parser.error naming the first numeric flag (or list item) that is nan or infinite: a comparison with
    nan is False, so a range check alone would let it through to the training."""
    for flag, value in vars(args).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                parser.error(f"--{flag} {item}: must be a finite number")


# Bounds of the flags every script shares (add_training_arguments; a script's own table adds to them):
# {flag: (bound, strict, meaning)}.
COMMON_BOUNDS = {
    "per_device_train_batch_size": (2, False, "BN cannot normalise a batch of one"),
    "per_device_eval_batch_size": (1, False, "examples"),
    "learning_rate": (0, True, "step size"),
    "num_train_epochs": (1, False, "epochs"),
    "max_grad_norm": (0, False, "0 turns clipping off"),
    "plateau_start_epoch": (0, False, "epoch index"),
    "plateau_patience": (1, False, "epochs"),
    "plateau_factor": (0, True, "lr multiplier"),
    "plateau_max_decays": (0, False, "decays (0: never decay)"),
    "seed": (0, False, "numpy takes seeds from 0 to 2**32 - 1"),
    "num_threads": (1, False, "threads"),
    "gradient_accumulation_steps": (1, False, "batches per optimizer step"),
}


def check_lower_bounds(parser, args, bounds):
    """parser.error naming the flag for a value below its bound. bounds: {flag: (bound, strict, meaning)},
    strict meaning the bound itself is excluded, added to COMMON_BOUNDS; flags left unset (None) or absent
    are not checked. Every numeric flag is first checked to be finite (check_finite); --plateau_factor
    must also be at most 1."""
    check_finite(parser, args)
    for flag, (low, strict, meaning) in {**COMMON_BOUNDS, **bounds}.items():
        value = getattr(args, flag, None)
        if value is not None and (value <= low if strict else value < low):
            parser.error(f"--{flag} {value}: must be {'>' if strict else '>='} {low} ({meaning})")
    if getattr(args, "plateau_factor", None) is not None and args.plateau_factor > 1:
        parser.error(f"--plateau_factor {args.plateau_factor}: must be <= 1 (it multiplies the lr)")


def check_paths(parser, args, model_flags=()):
    """parser.error, before any work, for an --output_dir that is an existing file, and for each flag of
    model_flags (a model folder or a hub id) whose value is a file, or is not a folder and does not look
    like a hub id: exactly one '/', no leading '.', '/' or '~', no local parent folder (`outputs/missing`
    is a missing folder, not a hub repository), valid characters. Otherwise transformers would report a
    bad repo id or a failed connection to the hub."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    output_dir = getattr(args, "output_dir", None)
    if output_dir and Path(output_dir).exists() and not Path(output_dir).is_dir():
        parser.error(f"--output_dir {output_dir}: is a file, not a folder")
    for flag in model_flags:
        value = getattr(args, flag, None)
        if value is None:
            continue
        path = Path(value).expanduser()
        if path.is_dir():
            continue
        if path.exists():
            parser.error(f"--{flag} {value}: is a file, not a model folder")
        hub_like = value.count("/") == 1 and not value.startswith((".", "/", "~")) and not path.parent.is_dir()
        try:
            validate_repo_id(value)
        except HFValidationError:
            hub_like = False
        if not hub_like:
            parser.error(f"--{flag} {value}: no such folder (and not a hub id 'org/name')")


def parse_config_overrides(text, config_class):
    """{field: number} of transformers' run_clm.py-style --config_overrides "a=1,b=0.5" (every size of our
    configs is a number); {} for None. ValueError for an item that is not field=number or a field that
    config_class does not have."""
    overrides = {}
    for item in filter(None, (text or "").split(",")):
        field, _, value = item.partition("=")
        try:
            overrides[field.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ValueError(f"--config_overrides: {item!r} is not field=number") from None
    unknown = sorted(set(overrides) - set(config_class().to_dict()))
    if unknown:
        raise ValueError(f"--config_overrides: unknown {config_class.__name__} field(s) {unknown}")
    return overrides


# ----------------------------------------------------------------------------------------------
# the Accelerator every training script makes


def add_accelerator_arguments(parser):
    """--mixed_precision, --num_threads and --gradient_accumulation_steps (unless the parser has it), the
    Accelerate set-up flags of every training script."""
    parser.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default=None, help="default: as launched")
    if "--gradient_accumulation_steps" not in parser._option_string_actions:
        parser.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    parser.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="CPU threads per process (default: OMP_NUM_THREADS if set outside accelerate launch, else cores / processes)",
    )


def checkpointing_steps(value):
    """--checkpointing_steps: a positive integer or 'epoch'."""
    if value == "epoch" or (value.isdigit() and int(value) > 0):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither a positive integer (every n steps) nor 'epoch'")


# The shared flags' defaults; a script passes its own to add_training_arguments.
TRAINING_DEFAULTS = {
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "learning_rate": None,
    "num_train_epochs": None,
    "max_grad_norm": 5.0,
    **{
        f"plateau_{field}": getattr(PlateauRule, field) for field in ("start_epoch", "patience", "factor", "max_decays")
    },
    "seed": 42,
    "output_dir": None,
}
TRAINING_HELP = {
    "per_device_train_batch_size": "examples per process and batch",
    "per_device_eval_batch_size": "examples per process and batch",
    "learning_rate": "step size",
    "num_train_epochs": "at most; the plateau rule may stop earlier",
    "max_grad_norm": "clip the gradient norm (0: no clipping)",
    "plateau_start_epoch": "the plateau rule (docs/training.md): first epoch (0-based) that may decay",
    "plateau_patience": "the plateau rule: epochs without a better validation loss before a decay",
    "plateau_factor": "the plateau rule: lr multiplier at each decay (back to the best model)",
    "plateau_max_decays": "the plateau rule: stop at this decay (0: never decay)",
    "seed": "seed of the model, the shuffles and the sampled latents",
    "output_dir": "where the model, tokenizer, all_results.json and checkpoints/ go",
}


def add_training_arguments(parser, **defaults):
    """Declare the flags every training script shares, once, with the script's defaults (keyword arguments
    over TRAINING_DEFAULTS; output_dir None makes it required): batch sizes, learning rate, epochs,
    clipping, the plateau rule, seed, output folder, --checkpointing_steps / --resume_from_checkpoint,
    --push_to_hub / --hub_model_id, and Accelerate's set-up (add_accelerator_arguments). Their bounds are
    COMMON_BOUNDS; check_training_arguments checks the rest."""
    unknown = set(defaults) - set(TRAINING_DEFAULTS)
    if unknown:
        raise TypeError(f"add_training_arguments: unknown flags {sorted(unknown)}")
    defaults = {**TRAINING_DEFAULTS, **defaults}
    for flag, default in defaults.items():
        kind = type(TRAINING_DEFAULTS[flag]) if TRAINING_DEFAULTS[flag] is not None else float
        kind = str if flag == "output_dir" else int if flag == "num_train_epochs" else kind
        shown = "" if default is None else f" (default {default})"
        parser.add_argument(
            f"--{flag}", type=kind, default=default, required=flag == "output_dir" and default is None,
            help=TRAINING_HELP[flag] + shown,
        )  # fmt: skip
    parser.add_argument(
        "--checkpointing_steps", type=checkpointing_steps, default=None, help="an integer (every n steps) or 'epoch'"
    )
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    parser.add_argument("--push_to_hub", action="store_true", help="upload the saved model with its model card")
    parser.add_argument("--hub_model_id", default=None, help="org/name on the hub")
    add_accelerator_arguments(parser)


def check_training_arguments(parser, args, bounds, mid_epoch_checkpoints=True):
    """parser.error for the shared flags' values: bounds (check_lower_bounds with the script's own table),
    --push_to_hub without --hub_model_id, a --resume_from_checkpoint folder that does not exist, and a
    step count for --checkpointing_steps when the script checkpoints at epoch ends only."""
    check_lower_bounds(parser, args, bounds)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id org/name")
    if args.resume_from_checkpoint not in (None, "latest") and not Path(args.resume_from_checkpoint).is_dir():
        parser.error(f"--resume_from_checkpoint {args.resume_from_checkpoint}: no checkpoint folder (or 'latest')")
    if not mid_epoch_checkpoints and args.checkpointing_steps not in (None, "epoch"):
        parser.error(
            f"--checkpointing_steps {args.checkpointing_steps}: this script checkpoints at epoch ends: use 'epoch'"
        )


def make_accelerator(args, **kwargs):
    """The Accelerator of a training script: on the CPU when there is no GPU (so that several launched CPU
    processes join one gloo group instead of training independent copies), the args' --mixed_precision
    and --gradient_accumulation_steps when the script has them, kwargs (e.g. log_with); then the
    world-size guard, check_accelerator, and on a CPU the thread policy (default_num_threads)."""
    from accelerate import Accelerator

    kwargs = {"gradient_accumulation_steps": getattr(args, "gradient_accumulation_steps", 1), **kwargs}
    if getattr(args, "mixed_precision", None) is not None:
        kwargs["mixed_precision"] = args.mixed_precision
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), **kwargs)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:  # e.g. --multi_gpu without GPU and without cpu=True
        raise RuntimeError(
            f"launched {launched} processes but Accelerate joined {accelerator.num_processes}: they would train independently"
        )
    check_accelerator(accelerator)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(getattr(args, "num_threads", None) or default_num_threads(accelerator.num_processes))
    return accelerator


def optimizer_step(accelerator, model, optimizer, loss, max_grad_norm, before_step=None):
    """The training step every script takes, inside `with accelerator.accumulate(model)`: backward, then at
    the end of an accumulation the gradient norm clipped to max_grad_norm (0 or None: not clipped),
    before_step() (e.g. dropping some gradients), the optimizer step and zero_grad (Accelerate's prepared
    optimizer skips both mid-accumulation). Returns whether an optimizer step was taken."""
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    if before_step is not None:
        before_step()
    optimizer.step()
    optimizer.zero_grad()
    return accelerator.sync_gradients


# ----------------------------------------------------------------------------------------------
# checkpoints and the saved run


def run_definition(accelerator, args, tokenizer, config, **data):
    """What a checkpoint must share with this run to be resumed (hf_bnvae.checkpoints.check_run): data (the
    script's training examples, e.g. their count and fingerprint), the vocabulary (a fingerprint), the
    model's config, the batches per step, the processes and the seed."""
    return {
        **data,
        "vocabulary": fingerprint(tokenizer.get_vocab()),
        "model_config": {k: v for k, v in config.to_diff_dict().items() if k != "transformers_version"},
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_processes": accelerator.num_processes,
        "seed": args.seed,
    }


def checkpoints_dir(args):
    return Path(args.output_dir) / "checkpoints"


def resume_state(accelerator, args, run):
    """The training state of --resume_from_checkpoint ('latest' or a folder), with Accelerate's objects
    (model, optimizer, random states) restored; None when the flag is not given. ValueError for another
    run's or an incomplete checkpoint (hf_bnvae.checkpoints.load_checkpoint)."""
    if not args.resume_from_checkpoint:
        return None
    path = resolve_checkpoint(args.resume_from_checkpoint, checkpoints_dir(args))
    state = load_checkpoint(accelerator, path, run)
    accelerator.print(f"resumed from {path}: epoch {state.get('epoch')}, step {state.get('optimizer_steps')}")
    return state


def checkpoint_epoch(accelerator, args, step, state, run):
    """With --checkpointing_steps epoch, write the end-of-epoch checkpoint (atomically, the newest two kept)."""
    if args.checkpointing_steps == "epoch":
        save_checkpoint(accelerator, checkpoints_dir(args), step, state, run)


def save_run(accelerator, model, tokenizer, args, results):
    """On the main process: the model and tokenizer (save_pretrained_atomically) and results as
    all_results.json in --output_dir, then with --push_to_hub the upload with the model card of the
    results' task (hf_bnvae.hub.push_to_hub). Every process calls it. Returns the output folder."""
    output = Path(args.output_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_pretrained_atomically(model, tokenizer, output)
        write_results(output, results)
        if args.push_to_hub:
            from .hub import push_to_hub

            commit = push_to_hub(output, args.hub_model_id)
            accelerator.print(f"pushed to {args.hub_model_id}: {getattr(commit, 'commit_url', commit)}")
    return output


def default_num_threads(num_processes, environ=os.environ):
    """CPU threads per process: the user's OMP_NUM_THREADS (e.g. two jobs sharing the cores), except that
    accelerate launch (which marks its processes with ACCELERATE_USE_CPU) sets it to 1 even for one
    process, so there the cores are shared among the processes on this machine."""
    if environ.get("OMP_NUM_THREADS", "").isdigit() and "ACCELERATE_USE_CPU" not in environ:
        return max(1, int(environ["OMP_NUM_THREADS"]))
    local = int(environ.get("LOCAL_WORLD_SIZE", num_processes))
    return max(1, (os.cpu_count() or 1) // local)


def check_accelerator(accelerator, environ=None):
    """ValueError for what Accelerate accepts without a word but does not do: fp16 on a CPU (it trains in
    fp32; native fp16 autocast needs a GPU, bf16 runs on CPUs), and `accelerate launch --num_processes N`
    without `--multi_gpu`, whose simple launcher starts one process (it sets MASTER_ADDR for N > 1, while
    the multi-process launcher, torchrun, sets WORLD_SIZE)."""
    environ = os.environ if environ is None else environ
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "fp16":
        raise ValueError("--mixed_precision fp16 needs a GPU; on a CPU use bf16 or no (fp32)")
    if "ACCELERATE_USE_CPU" in environ and "MASTER_ADDR" in environ and "WORLD_SIZE" not in environ:
        raise ValueError(
            "accelerate launch --num_processes N without --multi_gpu starts a single process; for N CPU"
            " processes: accelerate launch --multi_gpu --num_processes N"
        )


def warn_unfinished_warmup(accelerator, warmup_steps, total_steps):
    """A warning when the KL warm-up is longer than the run: the KL weight never reaches 1, so the model
    trains on a weakened objective to the end."""
    if warmup_steps > total_steps:
        logger.warning(
            f"the KL warm-up ({warmup_steps} steps) is longer than the run ({total_steps} steps): the KL weight"
            f" ends at {total_steps / warmup_steps:.2f}, never 1; shorten the warm-up or train longer"
        )
        accelerator.print(f"warning: the KL weight never reaches 1 (warm-up {warmup_steps} > {total_steps} steps)")


def diverged(loss, epoch, have_best):
    """Whether training diverged: the validation loss after `epoch` (0-based) is not finite. The caller then
    stops with the best model it kept; with none (have_best False) RuntimeError, as nothing is worth saving."""
    if math.isfinite(loss):
        return False
    if not have_best:
        raise RuntimeError(
            f"training diverged: the validation loss is {loss} after epoch {epoch + 1} and no earlier epoch had a"
            " finite one; nothing was saved. Try a lower --learning_rate."
        )
    logger.warning(
        f"training diverged: the validation loss is {loss} after epoch {epoch + 1}; stopping with the best model"
    )
    return True


# ----------------------------------------------------------------------------------------------
# BN statistics over processes


@torch.no_grad()
def average_bn_statistics(model, accelerator):
    """Give every process the mean of the processes' BatchNorm running statistics (mean and variance).

    Without --sync_bn each process normalises its own batches, and DDP's buffer broadcast happens at the
    start of a forward pass, so after the last step the ranks' running statistics differ. Called before
    validation and saving, so that every rank evaluates, selects and saves the same model.
    """
    if accelerator.num_processes == 1:
        return
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                buffer.copy_(accelerator.reduce(buffer.clone(), reduction="mean"))


# ----------------------------------------------------------------------------------------------
# figure


def plot_training_curves(history, kl_lower_bound, path, title="", step_losses=None):
    """history: list of per-epoch dicts (epoch, train_reconstruction, train_kl, valid_reconstruction,
    valid_kl, valid_au, valid_mi, lr); step_losses: the training objective of every batch (nats per
    sentence, KL weight applied), drawn thin under the epoch means, batch i at epoch (i + 1) / batches per
    epoch. Writes a 2x2 PNG to path: whole epochs on every x axis, each legend below its panel so that it
    hides no point. Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    ax = axes[0, 0]
    if step_losses:
        per_epoch = len(step_losses) / max(epochs[-1], 1)  # batches per epoch (the run may have stopped mid-epoch)
        steps = [(i + 1) / per_epoch for i in range(len(step_losses))]
        ax.plot(steps, step_losses, "-", color="0.75", linewidth=0.6, label="train objective, per batch")
    ax.plot(epochs, [h["train_reconstruction"] for h in history], "o-", label="train (epoch mean)")
    ax.plot(epochs, [h["valid_reconstruction"] for h in history], "s-", label="valid")
    ax.set(title="reconstruction (nats / sentence)", xlabel="epoch")
    ax = axes[0, 1]
    ax.plot(epochs, [h["train_kl"] for h in history], "o-", label="train KL")
    ax.plot(epochs, [h["valid_kl"] for h in history], "s-", label="valid KL")
    ax.plot(epochs, [h["valid_mi"] for h in history], "^-", label="valid MI")
    if kl_lower_bound > 0:
        ax.axhline(kl_lower_bound, color="k", linestyle="--", label=f"bound n*gamma^2/2 = {kl_lower_bound:.2f}")
    ax.set(title="KL and MI (nats / sentence)", xlabel="epoch")
    ax = axes[1, 0]
    ax.plot(epochs, [h["valid_au"] for h in history], "o-")
    ax.set(title="active units (valid)", xlabel="epoch")
    ax = axes[1, 1]
    ax.plot(epochs, [h["lr"] for h in history], "o-")
    ax.set(title="learning rate", xlabel="epoch", yscale="log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5 if not step_losses else 0, epochs[-1] + 0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small", frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


__all__ = [
    "PlateauRule",
    "BestWeightsKeeper",
    "add_training_arguments",
    "check_training_arguments",
    "checkpointing_steps",
    "run_definition",
    "resume_state",
    "checkpoint_epoch",
    "save_run",
    "parse_config_overrides",
    "aggressive_encoder_updates",
    "average_bn_statistics",
    "check_finite",
    "check_lower_bounds",
    "check_paths",
    "add_accelerator_arguments",
    "check_accelerator",
    "default_num_threads",
    "make_accelerator",
    "optimizer_step",
    "warn_unfinished_warmup",
    "diverged",
    "plot_training_curves",
]
