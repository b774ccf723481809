"""Train BN-VAE (or any baseline of the paper) with Accelerate.

    accelerate launch training/train.py                        # BN-VAE (gamma 0.6) on Brown, ~15 min on 2 CPU cores
    accelerate launch training/train.py --method vae           # a baseline: see README for all of them
    accelerate launch --multi_gpu --num_processes 2 training/train.py   # 2 real processes (gloo on CPU)

The recipe is the paper's: SGD without momentum, lr 1.0, grad-norm clip 5, KL weight 0 -> 1 over the
warm-up epochs (per step), and the plateau rule (from epoch 15, no improvement of the validation
-ELBO for 5 epochs: lr x 0.5 and reload the best model, at most 5 times). The best model by validation
-ELBO at KL weight 1 is saved with save_pretrained, next to metrics.json and training_curves.png.
"""

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm

sys.path.append(str(Path(__file__).resolve().parent))  # appended: our evaluate.py must not shadow the evaluate package

from checkpoints import resolve_checkpoint, save_checkpoint  # noqa: E402
from curves import plot_training_curves  # noqa: E402
from methods import METHODS, resolve_method  # noqa: E402
from plateau import PlateauRule  # noqa: E402
from text_data import (  # noqa: E402
    collate,
    encode_corpus,
    length_bucketed_batches,
    read_hub_dataset,
    read_text_file,
    shard,
)

from hf_bnvae import PRESETS, BNVAEConfig, BNVAEForLanguageModeling, build_word_tokenizer  # noqa: E402
from hf_bnvae.evaluation import evaluate_language_model  # noqa: E402
from hf_bnvae.objectives import training_loss  # noqa: E402

logger = get_logger(__name__)
BROWN = Path(__file__).resolve().parent / "data" / "brown"

# Training defaults per preset. Paper presets: the official code's 100 epochs with the plateau rule and a
# 10-epoch KL warm-up. Brown (the default): a small run that finishes in about 15 minutes on 2 CPU cores.
TRAINING_PRESETS = {
    "brown": {"num_train_epochs": 4, "kl_warmup_epochs": 2, "vocab_size": 10000, "max_train_samples": 30000},
    **{name: {"num_train_epochs": 100, "kl_warmup_epochs": 10, "vocab_size": None} for name in PRESETS if name != "brown"},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train BN-VAE or a baseline of the paper with Accelerate.")
    data = p.add_argument_group("data")
    data.add_argument("--train_file", default=str(BROWN / "train.txt"), help="one sentence per line (label<TAB>text accepted)")
    data.add_argument("--validation_file", default=str(BROWN / "valid.txt"))
    data.add_argument("--test_file", default=None, help="evaluated at the end when given")
    data.add_argument("--dataset_name", default=None, help="a `datasets` dataset instead of files")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--text_column", default="text")
    data.add_argument("--validation_split_name", default="validation")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument("--max_seq_length", type=int, default=None, help="truncate longer sentences (tokens incl. <s>, </s>)")
    data.add_argument("--tokenizer_name", default=None, help="a saved tokenizer; default: build a word vocabulary")
    data.add_argument("--vocab_size", type=int, default=None, help="vocabulary size when building it (special tokens included)")
    data.add_argument("--min_frequency", type=int, default=1)

    model = p.add_argument_group("model and method")
    model.add_argument("--preset", default="brown", help=f"model sizes and training defaults: {', '.join(PRESETS)}")
    model.add_argument("--method", default="bnvae", help=f"one of {', '.join(METHODS)}")
    model.add_argument("--gamma", type=float, default=None, help="bnvae: fixed BN scale (default 0.6)")
    model.add_argument("--beta", type=float, default=None, help="beta_vae: final KL weight (default 0.4)")
    model.add_argument("--free_bits", type=float, default=None, help="free_bits: target KL in nats (default 4)")
    model.add_argument("--free_bits_per_dimension", action="store_true", help="free_bits: the target is per dimension")
    model.add_argument("--delta_rate", type=float, default=None, help="delta_vae: committed rate per dimension (default 0.15)")
    model.add_argument("--cycle_epochs", type=float, default=None, help="cyclical: cycle length in epochs (default 2)")
    model.add_argument("--kl_warmup_epochs", type=float, default=None, help="KL weight rises 0 -> final over this many epochs")
    model.add_argument("--init_encoder_from", default=None, help="start from this trained model's encoder (e.g. an AE), fresh decoder")
    model.add_argument("--latent_size", type=int, default=32)
    model.add_argument("--embedding_size", type=int, default=None)
    model.add_argument("--encoder_hidden_size", type=int, default=None)
    model.add_argument("--decoder_hidden_size", type=int, default=None)

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--num_train_epochs", type=int, default=None)
    opt.add_argument("--max_train_steps", type=int, default=None, help="stop after this many optimiser steps")
    opt.add_argument("--per_device_train_batch_size", type=int, default=32)
    opt.add_argument("--per_device_eval_batch_size", type=int, default=64)
    opt.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    opt.add_argument("--learning_rate", type=float, default=None, help="default 1.0 for SGD, 1e-3 for Adam")
    opt.add_argument("--max_grad_norm", type=float, default=5.0)
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)
    opt.add_argument("--decay_start_epoch", type=int, default=15)
    opt.add_argument("--decay_patience", type=int, default=5)
    opt.add_argument("--lr_decay", type=float, default=0.5)
    opt.add_argument("--max_decay", type=int, default=5)
    opt.add_argument("--seed", type=int, default=42)

    run = p.add_argument_group("run")
    run.add_argument("--output_dir", default="outputs/bnvae-brown")
    run.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default=None, help="default: as launched")
    run.add_argument("--sync_bn", action="store_true", help="BN statistics over all processes")
    run.add_argument("--checkpointing_steps", default=None, help="an integer (every n steps) or 'epoch'")
    run.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    run.add_argument("--with_tracking", action="store_true")
    run.add_argument("--report_to", default="tensorboard")
    run.add_argument("--logging_steps", type=int, default=50)
    run.add_argument("--iw_samples", type=int, default=500, help="K for the final importance-weighted NLL (0: skip)")
    run.add_argument("--max_iw_eval_samples", type=int, default=200, help="sentences scored with the IW-NLL at the end")
    run.add_argument("--num_threads", type=int, default=None, help="CPU threads per process (default: cores / processes)")
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None)
    args = p.parse_args(argv)
    return fill_defaults(args)


def fill_defaults(args):
    if args.preset not in PRESETS:
        raise ValueError(f"unknown --preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.tokenizer_name and args.vocab_size is not None:
        raise ValueError("--vocab_size builds a vocabulary; it cannot be combined with --tokenizer_name")
    for key, value in TRAINING_PRESETS[args.preset].items():
        if getattr(args, key) is None and not (key == "vocab_size" and args.tokenizer_name):
            setattr(args, key, value)
    if args.learning_rate is None:
        args.learning_rate = 1.0 if args.optimizer == "sgd" else 1e-3
    if args.cycle_epochs is None and args.method == "cyclical":
        args.cycle_epochs = 2.0
    if args.per_device_train_batch_size < 2:
        raise ValueError("--per_device_train_batch_size must be >= 2: BN cannot normalise a batch of one sentence")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name")
    args.method_spec = resolve_method(args)
    return args


# ----------------------------------------------------------------------------------------------
# set-up


def make_accelerator(args):
    kwargs = {"gradient_accumulation_steps": args.gradient_accumulation_steps, "cpu": not torch.cuda.is_available()}
    if args.mixed_precision is not None:
        kwargs["mixed_precision"] = args.mixed_precision
    if args.with_tracking:
        kwargs.update(log_with=args.report_to, project_dir=args.output_dir)
    accelerator = Accelerator(**kwargs)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:  # e.g. --multi_gpu without GPU and without cpu=True
        raise RuntimeError(f"launched {launched} processes but Accelerate joined {accelerator.num_processes}: they would train independently")
    if accelerator.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        # accelerate launch sets OMP_NUM_THREADS=1 even for one process; use the cores we have.
        torch.set_num_threads(args.num_threads or max(1, (os.cpu_count() or 1) // local))
    return accelerator


def load_corpora(args):
    """Train and validation (and optional test) Corpus objects; blank lines are counted."""
    if args.dataset_name:
        train = read_hub_dataset(args.dataset_name, args.dataset_config_name, "train", args.text_column)
        valid = read_hub_dataset(args.dataset_name, args.dataset_config_name, args.validation_split_name, args.text_column)
    else:
        train, valid = read_text_file(args.train_file), read_text_file(args.validation_file)
    test = read_text_file(args.test_file) if args.test_file else None
    if args.max_train_samples:
        train.texts = train.texts[: args.max_train_samples]
    if args.max_eval_samples:
        valid.texts = valid.texts[: args.max_eval_samples]
    return train, valid, test


def load_tokenizer(args, train_texts):
    from transformers import AutoTokenizer

    source = args.tokenizer_name or args.init_encoder_from
    if source:
        return AutoTokenizer.from_pretrained(source)
    return build_word_tokenizer(train_texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency)


def build_model(args, tokenizer):
    sizes = {k: getattr(args, k) for k in ("embedding_size", "encoder_hidden_size", "decoder_hidden_size") if getattr(args, k)}
    config = BNVAEConfig.from_preset(
        args.preset,
        vocab_size=len(tokenizer),
        latent_size=args.latent_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        unk_token_id=tokenizer.unk_token_id,
        **{**sizes, **args.method_spec.model_overrides},
    )
    model = BNVAEForLanguageModeling(config)
    if args.init_encoder_from:
        pretrained = BNVAEForLanguageModeling.from_pretrained(args.init_encoder_from)
        if pretrained.config.vocab_size != config.vocab_size:
            raise ValueError(f"--init_encoder_from {args.init_encoder_from}: vocabulary {pretrained.config.vocab_size} != {config.vocab_size}")
        model.encoder.load_state_dict(pretrained.encoder.state_dict())
    return model


def build_optimizer(args, model):
    params = [p for p in model.parameters() if p.requires_grad]  # gamma is not among them
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.learning_rate)
    return torch.optim.SGD(params, lr=args.learning_rate, momentum=0.0)


class TrainingState:
    """Where the run is (for resuming mid-epoch), the plateau rule, the history and the best weights."""

    def __init__(self, plateau):
        self.epoch, self.batches_done, self.optimizer_steps = 0, 0, 0
        self.train_seconds = 0.0  # wall time in training steps, evaluation excluded
        self.plateau, self.history, self.best_weights = plateau, [], None

    def state_dict(self):
        return {
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "optimizer_steps": self.optimizer_steps,
            "train_seconds": self.train_seconds,
            "plateau": self.plateau.state_dict(),
            "history": self.history,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state):
        self.epoch, self.batches_done, self.optimizer_steps = state["epoch"], state["batches_done"], state["optimizer_steps"]
        self.train_seconds = state["train_seconds"]
        self.plateau.load_state_dict(state["plateau"])
        self.history, self.best_weights = state["history"], state["best_weights"]


# ----------------------------------------------------------------------------------------------
# loop


def evaluate(model, sequences, accelerator, batch_size, pad_token_id, **kwargs):
    batches = length_bucketed_batches([len(s) for s in sequences], batch_size)
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    return evaluate_language_model(
        accelerator.unwrap_model(model), (collate(sequences, b, pad_token_id) for b in mine), accelerator, **kwargs
    )


def train(args):
    accelerator = make_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    set_seed(args.seed)
    method = args.method_spec
    train_corpus, valid_corpus, test_corpus = load_corpora(args)
    for corpus in (train_corpus, valid_corpus, test_corpus):
        if corpus is not None and corpus.blank_lines:
            logger.info(f"{corpus.source}: dropped {corpus.blank_lines} blank lines", main_process_only=True)
    tokenizer = load_tokenizer(args, train_corpus.texts)
    train_ids = encode_corpus(tokenizer, train_corpus.texts, args.max_seq_length)
    valid_ids = encode_corpus(tokenizer, valid_corpus.texts, args.max_seq_length)
    pad = tokenizer.pad_token_id

    model = build_model(args, tokenizer)
    if model.latent_head is not None:
        model.latent_head.synchronize_statistics = args.sync_bn
    optimizer = build_optimizer(args, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainingState(PlateauRule(args.decay_start_epoch, args.decay_patience, args.lr_decay, args.max_decay))
    accelerator.register_for_checkpointing(state)

    lengths = [len(s) for s in train_ids]
    batches_per_epoch = len(shard(length_bucketed_batches(lengths, args.per_device_train_batch_size, args.seed, 0),
                                  accelerator.process_index, accelerator.num_processes))
    steps_per_epoch = max(1, batches_per_epoch // args.gradient_accumulation_steps)
    warmup_steps = round(args.kl_warmup_epochs * steps_per_epoch)
    cycle_steps = round((args.cycle_epochs or 1) * steps_per_epoch)
    total_steps = args.num_train_epochs * steps_per_epoch
    if args.max_train_steps:
        total_steps = min(total_steps, args.max_train_steps)
    checkpoints_dir = Path(args.output_dir) / "checkpoints"

    if args.resume_from_checkpoint:
        path = resolve_checkpoint(args.resume_from_checkpoint, checkpoints_dir)
        accelerator.load_state(str(path))
        accelerator.print(f"resumed from {path}: epoch {state.epoch}, batch {state.batches_done}, step {state.optimizer_steps}")
    if args.with_tracking:
        loggable = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("bnvae", config=loggable)

    accelerator.print(
        f"{method.name}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_ids):,} training sentences, "
        f"{accelerator.num_processes} process(es) x {args.per_device_train_batch_size}, {steps_per_epoch} steps/epoch, "
        f"KL bound {accelerator.unwrap_model(model).kl_lower_bound:.2f} nats"
    )
    progress = tqdm(total=total_steps, initial=state.optimizer_steps, disable=not accelerator.is_local_main_process, desc="training")
    step_losses = []
    stop = False
    while state.epoch < args.num_train_epochs and not stop:
        model.train()
        epoch_batches = shard(length_bucketed_batches(lengths, args.per_device_train_batch_size, args.seed, state.epoch),
                              accelerator.process_index, accelerator.num_processes)
        sums = {"reconstruction": 0.0, "kl": 0.0, "sentences": 0}
        started = time.perf_counter()
        for indices in epoch_batches[state.batches_done :]:
            batch = {k: v.to(accelerator.device) for k, v in collate(train_ids, indices, pad).items() if k != "index"}
            kl_weight = method.kl_weight(state.optimizer_steps, warmup_steps, cycle_steps)
            with accelerator.accumulate(model):
                outputs = model(**batch, labels=batch["input_ids"], return_logits=False)
                loss = training_loss(outputs, kl_weight, method.free_bits, method.free_bits_per_dimension)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state.batches_done += 1
            sums["reconstruction"] += float(outputs.reconstruction_loss.detach().sum())
            sums["kl"] += float(outputs.kl.detach().sum()) if outputs.kl is not None else 0.0
            sums["sentences"] += len(indices)
            step_losses.append(float(loss.detach()))
            if accelerator.sync_gradients:
                state.optimizer_steps += 1
                progress.update(1)
                progress.set_postfix(loss=f"{float(loss.detach()):.2f}", kl=f"{sums['kl'] / sums['sentences']:.2f}", kl_w=f"{kl_weight:.2f}")
                if args.with_tracking and state.optimizer_steps % args.logging_steps == 0:
                    accelerator.log({"train/loss": float(loss.detach()), "train/kl_weight": kl_weight,
                                     "train/kl": float(outputs.kl.detach().mean()) if outputs.kl is not None else 0.0},
                                    step=state.optimizer_steps)
                if args.checkpointing_steps and args.checkpointing_steps.isdigit() and state.optimizer_steps % int(args.checkpointing_steps) == 0:
                    save_checkpoint(accelerator, checkpoints_dir, state.optimizer_steps)
                if args.max_train_steps and state.optimizer_steps >= args.max_train_steps:
                    stop = True
                    break
        state.train_seconds += time.perf_counter() - started
        if stop and state.batches_done < len(epoch_batches):
            break  # stopped mid-epoch by --max_train_steps: no epoch-end evaluation
        stop = end_of_epoch(args, accelerator, model, optimizer, state, sums, valid_ids, pad) or stop
        state.epoch += 1
        state.batches_done = 0
        if args.checkpointing_steps == "epoch":
            save_checkpoint(accelerator, checkpoints_dir, state.optimizer_steps)
    progress.close()
    return finish(args, accelerator, model, tokenizer, state, valid_ids, test_corpus, step_losses)


def end_of_epoch(args, accelerator, model, optimizer, state, sums, valid_ids, pad):
    """Validate, apply the plateau rule, record history. Returns True when training should stop."""
    metrics = evaluate(model, valid_ids, accelerator, args.per_device_eval_batch_size, pad, seed=args.seed)
    lr = optimizer.param_groups[0]["lr"]
    entry = {
        "epoch": state.epoch,
        "lr": lr,
        "train_reconstruction": sums["reconstruction"] / max(sums["sentences"], 1),
        "train_kl": sums["kl"] / max(sums["sentences"], 1),
        **{f"valid_{k}": v for k, v in metrics.items()},
    }
    state.history.append(entry)
    selection = args.method_spec.selection_metric
    label = {"nelbo": "-ELBO", "reconstruction": "reconstruction loss"}[selection]
    if not math.isfinite(metrics[selection]):
        if state.best_weights is None:
            raise RuntimeError(f"training diverged: the validation {label} is {metrics[selection]} after epoch {state.epoch + 1} "
                               "and no earlier epoch had a finite one; nothing was saved. Try a lower --learning_rate.")
        entry["plateau_action"] = "diverged"
        logger.warning(f"training diverged: the validation {label} is {metrics[selection]} after epoch {state.epoch + 1}; "
                       f"stopping with the best model (epoch {state.plateau.best_epoch + 1})")
        return True
    action = entry["plateau_action"] = state.plateau.update(state.epoch, metrics[selection])
    unwrapped = accelerator.unwrap_model(model)
    if action == "improved":
        state.best_weights = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
    elif action == "decay":
        unwrapped.load_state_dict(state.best_weights)
        for group in optimizer.param_groups:
            group["lr"] = lr * args.lr_decay
    accelerator.print(
        f"epoch {state.epoch + 1}: valid -ELBO {metrics['nelbo']:.2f} (rec {metrics['reconstruction']:.2f}, KL {metrics['kl']:.2f}), "
        f"MI {metrics['mi']:.2f}, AU {metrics['au']}, PPL(ELBO) {metrics['ppl_elbo']:.1f}, lr {lr:g} [{action}]"
    )
    if args.with_tracking:
        accelerator.log({f"valid/{k}": v for k, v in metrics.items()} | {"lr": lr}, step=state.optimizer_steps)
    return action == "stop"


def finish(args, accelerator, model, tokenizer, state, valid_ids, test_corpus, step_losses):
    unwrapped = accelerator.unwrap_model(model)
    if state.best_weights is not None:
        unwrapped.load_state_dict(state.best_weights)
    pad = tokenizer.pad_token_id
    training_args = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) or v is None}
    results = {"method": args.method, "preset": args.preset, "kl_lower_bound": unwrapped.kl_lower_bound,
               "training_args": {k: v for k, v in training_args.items() if k != "method_spec"},
               "num_processes": accelerator.num_processes, "optimizer_steps": state.optimizer_steps,
               "train_seconds": state.train_seconds,
               "best_epoch": state.plateau.best_epoch, "history": state.history, "train_step_losses": step_losses}
    if args.iw_samples and state.history:
        subset = valid_ids[: args.max_iw_eval_samples]
        results["validation"] = evaluate(model, subset, accelerator, args.per_device_eval_batch_size, pad,
                                         seed=args.seed, iw_samples=args.iw_samples)
        results["validation"].update(split="validation", eval_data=f"validation split, first {len(subset)} sentences")
    if test_corpus is not None:
        test_ids = encode_corpus(tokenizer, test_corpus.texts, args.max_seq_length)
        results["test"] = evaluate(model, test_ids, accelerator, args.per_device_eval_batch_size, pad,
                                   seed=args.seed, iw_samples=args.iw_samples)
        results["test"].update(split="test", eval_data=f"test split, {len(test_ids)} sentences")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output = Path(args.output_dir)
        save_model_atomically(unwrapped, tokenizer, output)
        write_atomically(output / "metrics.json", json.dumps(results, indent=2))
        if state.history:
            plot_training_curves(state.history, unwrapped.kl_lower_bound, output / "training_curves.png",
                                 f"{args.method} on {Path(args.train_file).parent.name if not args.dataset_name else args.dataset_name}")
        print_summary(results, output)
        if args.push_to_hub:
            from hf_bnvae.hub import push_to_hub

            commit = push_to_hub(output, args.hub_model_id)
            print(f"pushed to {args.hub_model_id}: {getattr(commit, 'commit_url', commit)}")
    if args.with_tracking:
        accelerator.end_training()
    return unwrapped, results


def write_atomically(path, text):
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def save_model_atomically(model, tokenizer, output):
    """save_pretrained into a temporary folder, then move each file into place with os.replace, so a
    crash mid-save never leaves a half-written model.safetensors where a good one was."""
    import shutil

    output.mkdir(parents=True, exist_ok=True)
    temporary = output / ".saving"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    for path in sorted(temporary.iterdir(), key=lambda p: p.name == "checksums.json"):  # checksums last
        os.replace(path, output / path.name)
    temporary.rmdir()


def print_summary(results, output):
    lines = [f"saved to {output}: model, tokenizer, metrics.json, training_curves.png"]
    if results["history"]:
        best = results["history"][results["best_epoch"]] if results["best_epoch"] >= 0 else results["history"][-1]
        lines.append(f"best epoch {best['epoch'] + 1}: valid -ELBO {best['valid_nelbo']:.2f}, KL {best['valid_kl']:.2f} "
                     f"(bound {results['kl_lower_bound']:.2f}), MI {best['valid_mi']:.2f}, AU {best['valid_au']}")
    for split in ("validation", "test"):
        if split in results and "nll" in results[split]:
            r = results[split]
            lines.append(f"{r['split']}: IW-NLL (K={r['iw_samples']}) {r['nll']:.2f}, PPL {r['ppl']:.2f}, KL {r['kl']:.2f}, MI {r['mi']:.2f}, AU {r['au']}")
    print("\n".join(lines))


def main(argv=None):
    """Train; returns the trained (best) model and the results dict written to metrics.json."""
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
