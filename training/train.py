"""Train BN-VAE (or any baseline of the paper) with Accelerate.

    accelerate launch training/train.py                        # BN-VAE (gamma 0.6) on Brown, ~10 min on 2 CPU cores
    accelerate launch training/train.py --preset demo          # the explorer's model (gamma 1.5), ~36 min on 2 CPU cores
    accelerate launch training/train.py --method vae           # a baseline: see docs/training.md for all of them
    accelerate launch --multi_gpu --num_processes 2 training/train.py   # 2 real processes (gloo on CPU)

The recipe is the official code's: SGD without momentum, lr 1.0, grad-norm clip 5, KL weight 0 -> 1 over
the warm-up epochs (per step), and the plateau rule (hf_bnvae.trainer_utils.PlateauRule: from epoch 15,
5 epochs without improvement of the validation loss: lr x 0.5 and reload the best model; stop at the 5th
decay). The best model by validation loss (reconstruction + final KL weight x KL: the -ELBO for VAE-type
methods) is saved with save_pretrained, next to all_results.json and training_curves.png.
"""

import argparse
import importlib.util
import itertools
import logging
import math
import time
from pathlib import Path

import torch
from accelerate import skip_first_batches
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from hf_bnvae import PRESETS, BNVAEConfig, BNVAEForLanguageModeling, BNVAEModel, build_word_tokenizer
from hf_bnvae.checkpoints import fingerprint, save_checkpoint
from hf_bnvae.configuration_bnvae import DECODER_TYPES, LATENT_INJECTIONS
from hf_bnvae.data import BROWN_DIR, collate, column, read_hub_dataset, read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model
from hf_bnvae.methods import all_flags, methods_of, resolve_method
from hf_bnvae.modeling_bnvae import bn_kl_guarantee
from hf_bnvae.saving import RESULTS_NAME, recorded_arguments
from hf_bnvae.trainer_utils import (
    BestWeightsKeeper,
    PlateauRule,
    add_training_arguments,
    aggressive_encoder_updates,
    average_bn_statistics,
    check_lower_bounds,
    check_paths,
    check_training_arguments,
    checkpoint_epoch,
    checkpoints_dir,
    make_accelerator,
    optimizer_step,
    plot_training_curves,
    resume_state,
    run_definition,
    save_run,
    warn_unfinished_warmup,
)

logger = get_logger(__name__)

# Training defaults per preset (model sizes are the config's PRESETS). Paper presets: the official
# code's 100 epochs with the plateau rule and a 10-epoch KL warm-up, the whole vocabulary. Brown (the
# default): a short run, about 10 minutes on 2 CPU cores. Demo: the explorer's model, gamma 1.5 (KL >= 36
# nats, against 5.76 at 0.6) on all 51,340 Brown training sentences, 36 minutes on 2 CPU cores.
TRAINING_PRESETS = {
    "brown": {"num_train_epochs": 4, "kl_warmup_epochs": 2.0, "vocab_size": 10000, "max_train_samples": 30000},
    "demo": {
        "num_train_epochs": 11,
        "kl_warmup_epochs": 2.0,
        "vocab_size": 10000,
        "max_train_samples": None,
        "gamma": 1.5,
        "output_dir": "outputs/bnvae-demo",
    },
    **{
        name: {"num_train_epochs": 100, "kl_warmup_epochs": 10.0, "vocab_size": None, "max_train_samples": None}
        for name in PRESETS
        if name not in ("brown", "demo")
    },
}
LEARNING_RATES = {"sgd": 1.0, "adam": 1e-3}  # the paper's SGD; Adam for those who prefer it
# BN's eps under Adam: with the official 1e-5 Adam shrinks the raw means' batch variance below eps and escapes
# the KL bound (RESULTS.md, "BN's bound holds under SGD, not under Adam"); with 1e-12 it held. SGD keeps 1e-5.
ADAM_BN_EPS = 1e-12
PLATEAU_FIELDS = ("start_epoch", "patience", "factor", "max_decays")
SIZE_FLAGS = ("embedding_size", "encoder_hidden_size", "decoder_hidden_size", "latent_size")
TRANSFORMER_FLAGS = ("decoder_layers", "decoder_heads")  # sizes of --decoder_type transformer
# The smallest value of each numeric flag, and whether it is excluded; unset (None) flags are not checked.
# Model sizes are checked by BNVAEConfig, the vocabulary options by the tokenizer builder.
LOWER_BOUNDS = {
    "max_train_steps": (1, False, "optimiser steps"),
    "max_train_samples": (2, False, "a training batch needs 2 sentences"),
    "max_eval_samples": (2, False, "active units and MI need 2 validation sentences"),
    "max_seq_length": (3, False, "tokens with <s> and </s>: at least one word"),
    "kl_warmup_epochs": (0, False, "0: the final KL weight from the start"),
    "logging_steps": (1, False, "optimiser steps"),
    "iw_samples": (0, False, "0 skips the importance-weighted NLL"),
    "max_iw_eval_samples": (2, False, "MI and active units need 2 sentences"),
    "beta": (0, False, "KL weight"),
    "cycle_epochs": (0, True, "epochs"),
    "free_bits": (0, True, "nats"),
    "delta_rate": (0, True, "nats per dimension"),
}


def build_parser():
    p = argparse.ArgumentParser(description="Train BN-VAE or a baseline of the paper with Accelerate.")
    data = p.add_argument_group("data")
    data.add_argument(
        "--train_file", default=str(BROWN_DIR / "train.txt"), help="one sentence per line (label<TAB>text accepted)"
    )
    data.add_argument("--validation_file", default=str(BROWN_DIR / "valid.txt"))
    data.add_argument("--test_file", default=None, help="evaluated at the end when given")
    data.add_argument("--dataset_name", default=None, help="a `datasets` dataset instead of files")
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--text_column", default="text")
    data.add_argument("--validation_split_name", default="validation")
    data.add_argument(
        "--max_train_samples", type=int, help="use the first n training sentences (default: the preset's)"
    )
    data.add_argument("--max_eval_samples", type=int, default=None)
    data.add_argument(
        "--max_seq_length", type=int, default=None, help="truncate longer sentences (tokens incl. <s>, </s>)"
    )
    data.add_argument("--tokenizer_name", default=None, help="a saved tokenizer; default: build a word vocabulary")
    data.add_argument(
        "--vocab_size",
        type=int,
        help="vocabulary size when building it, special tokens included (default: the preset's)",
    )
    data.add_argument("--min_frequency", type=int, default=1)

    model = p.add_argument_group("model and method")
    model.add_argument("--preset", default="brown", choices=list(PRESETS), help="model sizes and training defaults")
    model.add_argument("--method", default="bnvae", choices=methods_of("bnvae"))
    for flag, (owner, spec) in all_flags().items():
        if isinstance(spec.default, bool):
            model.add_argument(f"--{flag}", action="store_true", help=f"{owner}: {spec.help}")
        else:
            model.add_argument(
                f"--{flag}", type=type(spec.default), help=f"{owner}: {spec.help} (default {spec.default})"
            )
    model.add_argument(
        "--kl_warmup_epochs",
        type=float,
        help="KL weight rises 0 -> final over this many epochs (default: the preset's)",
    )
    model.add_argument(
        "--init_encoder_from", default=None, help="start from this trained model's encoder (e.g. an AE), fresh decoder"
    )
    for flag in SIZE_FLAGS:
        model.add_argument(f"--{flag}", type=int, help="default: the preset's (BNVAEConfig.from_preset)")
    model.add_argument(
        "--decoder_type",
        choices=DECODER_TYPES,
        default=None,
        help="the paper's LSTM (default) or a causal Transformer of GPT-2 blocks (docs/training.md)",
    )
    for flag in TRANSFORMER_FLAGS:
        model.add_argument(f"--{flag}", type=int, help="--decoder_type transformer (default 4)")
    model.add_argument(
        "--latent_injection",
        choices=LATENT_INJECTIONS,
        default=None,
        help="how a Transformer decoder sees z (default both)",
    )
    model.add_argument(
        "--bn_eps",
        type=float,
        default=None,
        help=f"BN's eps on the posterior mean (default: 1e-5, PyTorch's and the official code's; {ADAM_BN_EPS:g} with"
        " --optimizer adam, under which 1e-5 lets the encoder escape the KL bound: docs/training.md)",
    )

    opt = p.add_argument_group("optimisation and run")
    opt.add_argument("--max_train_steps", type=int, default=None, help="stop after this many optimiser steps")
    opt.add_argument("--optimizer", choices=list(LEARNING_RATES), default="sgd")
    add_training_arguments(
        opt,
        learning_rate=None,  # the optimizer's (LEARNING_RATES)
        output_dir="outputs/bnvae-brown",
        **{f"plateau_{field}": None for field in PLATEAU_FIELDS},  # the method's (hf_bnvae.methods)
    )
    opt.add_argument("--sync_bn", action="store_true", help="BN statistics over all processes")
    opt.add_argument("--with_tracking", action="store_true")
    opt.add_argument("--report_to", default="tensorboard")
    opt.add_argument("--logging_steps", type=int, default=50)
    opt.add_argument("--iw_samples", type=int, default=500, help="K for the final importance-weighted NLL (0: skip)")
    opt.add_argument("--max_iw_eval_samples", type=int, default=200, help="sentences scored with the IW-NLL at the end")
    return p


def parse_args(argv=None):
    """Arguments with the preset's training defaults filled in; the method resolved into `args.recipe`."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    parser.set_defaults(**TRAINING_PRESETS[preset])
    args = parser.parse_args(argv)
    if args.learning_rate is None:
        args.learning_rate = LEARNING_RATES[args.optimizer]
    if args.bn_eps is None and args.optimizer == "adam":
        args.bn_eps = ADAM_BN_EPS
    check_training_arguments(parser, args, LOWER_BOUNDS)
    files = ("test_file",) if args.dataset_name else ("train_file", "validation_file", "test_file")
    for flag in files:
        if getattr(args, flag) and not Path(getattr(args, flag)).is_file():
            parser.error(f"--{flag} {getattr(args, flag)}: data file not found")
    given_tokenizer = (
        "--tokenizer_name" if args.tokenizer_name else "--init_encoder_from" if args.init_encoder_from else None
    )
    if given_tokenizer and args.vocab_size != TRAINING_PRESETS[preset]["vocab_size"]:
        parser.error(
            f"--vocab_size builds a vocabulary; it cannot be combined with {given_tokenizer} (its tokenizer is used)"
        )
    if args.push_to_hub and not args.iw_samples:
        parser.error("--push_to_hub needs a measured NLL for the model card: --iw_samples > 0")
    if args.with_tracking and args.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        parser.error(
            "--with_tracking --report_to tensorboard needs tensorboard: python -m pip install -e '.[tracking]'"
        )
    if args.init_encoder_from and args.method in ("lm", "bnvae"):
        parser.error(f"--init_encoder_from needs a VAE-type method with a plain posterior, not {args.method}")
    try:
        args.recipe = resolve_method(args.method, **{flag: getattr(args, flag) for flag in all_flags()})
    except ValueError as error:
        parser.error(str(error))
    for field in PLATEAU_FIELDS:
        if getattr(args, f"plateau_{field}") is None:
            setattr(args, f"plateau_{field}", args.recipe.plateau.get(field, getattr(PlateauRule, field)))
    check_lower_bounds(parser, args, {})  # the plateau flags filled in from the method
    if args.recipe.aggressive and args.gradient_accumulation_steps > 1:
        parser.error("--method aggressive updates the encoder batch by batch: use --gradient_accumulation_steps 1")
    if args.decoder_type == "transformer" and args.max_seq_length is None:  # its positions end, the memory's included
        args.max_seq_length = BNVAEConfig().max_position_embeddings - 1
    check_paths(parser, args, model_flags=("tokenizer_name", "init_encoder_from"))
    return args


# ----------------------------------------------------------------------------------------------
# set-up


def load_corpora(args):
    """Train, validation and optional test Corpus objects, blank lines counted in the log."""
    if args.dataset_name:
        train = read_hub_dataset(args.dataset_name, args.dataset_config_name, "train", args.text_column)
        valid = read_hub_dataset(
            args.dataset_name, args.dataset_config_name, args.validation_split_name, args.text_column
        )
    else:
        train, valid = read_text_file(args.train_file), read_text_file(args.validation_file)
    test = read_text_file(args.test_file) if args.test_file else None
    train, valid = train.head(args.max_train_samples), valid.head(args.max_eval_samples)
    for corpus, needs in ((train, "a training batch"), (valid, "the validation metrics (active units, MI)")):
        if len(corpus.texts) < 2:  # before the first step, not after an epoch
            raise ValueError(f"{corpus.source} has {len(corpus.texts)} sentence(s); {needs} need(s) at least 2")
    for corpus in (train, valid, test):
        if corpus is not None and corpus.blank_lines:
            logger.info(f"{corpus.source}: dropped {corpus.blank_lines} blank lines", main_process_only=True)
    return train, valid, test


def load_tokenizer(args, train_texts):
    source = args.tokenizer_name or args.init_encoder_from
    if source:
        return AutoTokenizer.from_pretrained(source)
    return build_word_tokenizer(train_texts, vocab_size=args.vocab_size, min_frequency=args.min_frequency)


def build_model(args, tokenizer):
    flags = (*SIZE_FLAGS, *TRANSFORMER_FLAGS, "decoder_type", "latent_injection", "bn_eps")
    sizes = {flag: getattr(args, flag) for flag in flags if getattr(args, flag) is not None}
    special_ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos", "unk")}
    config = BNVAEConfig.from_preset(
        args.preset, vocab_size=len(tokenizer), **special_ids, **sizes, **args.recipe.config
    )
    model = BNVAEForLanguageModeling(config)
    if args.init_encoder_from:
        pretrained = BNVAEModel.from_pretrained(args.init_encoder_from)
        if pretrained.config.vocab_size != config.vocab_size:
            raise ValueError(
                f"--init_encoder_from {args.init_encoder_from}: vocabulary {pretrained.config.vocab_size} != {config.vocab_size}"
            )
        model.bnvae.encoder.load_state_dict(pretrained.encoder.state_dict())
    return model


def build_optimizer(args, model):
    params = [p for p in model.parameters() if p.requires_grad]  # gamma is not among them
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.learning_rate)
    return torch.optim.SGD(params, lr=args.learning_rate, momentum=0.0)


class TrainingState:
    """Where the run is (for resuming mid-epoch), the plateau rule with the best weights, the history."""

    def __init__(self, plateau, aggressive=False):
        self.epoch, self.batches_done, self.optimizer_steps = 0, 0, 0
        self.train_seconds = 0.0  # wall time in training steps, evaluation and checkpointing excluded
        # CPU time of this process (all its threads; the main process's alone when several train: the run
        # then cost about num_processes times it) in the same spans: a paused run spends none; None when
        # resumed from a checkpoint that did not count it
        self.train_cpu_seconds = 0.0
        self.epoch_sums = self.new_epoch_sums()  # this epoch's training reconstruction and KL so far
        self.keeper, self.history, self.step_losses = BestWeightsKeeper(plateau), [], []
        self.finished = False  # the plateau rule stopped the run, or it diverged: a resumed run trains no further
        # aggressive training: on until the validation MI stops rising (He et al. start from MI 0)
        self.aggressive, self.previous_mi = aggressive, 0.0

    @staticmethod
    def new_epoch_sums():
        return {"reconstruction": 0.0, "kl": 0.0, "kl_guarantee": 0.0, "sentences": 0, "encoder_steps": 0}

    def state_dict(self):
        return {**{k: v for k, v in vars(self).items() if k != "keeper"}, **self.keeper.state_dict()}

    def load_state_dict(self, state):
        self.keeper.load_state_dict({key: state.pop(key) for key in ("plateau", "best_weights")})
        state.setdefault("train_cpu_seconds", None)
        vars(self).update(state)


# ----------------------------------------------------------------------------------------------
# loop


def train(args):
    tracking = {"log_with": args.report_to, "project_dir": args.output_dir} if args.with_tracking else {}
    accelerator = make_accelerator(args, **tracking)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    set_seed(args.seed)
    recipe = args.recipe
    train_corpus, valid_corpus, test_corpus = load_corpora(args)
    tokenizer = load_tokenizer(args, train_corpus.texts)
    train_set = tokenize_texts(tokenizer, train_corpus.texts, args.max_seq_length)
    valid_set = tokenize_texts(tokenizer, valid_corpus.texts, args.max_seq_length)

    model = build_model(args, tokenizer)
    if model.bnvae is not None:
        model.bnvae.latent_head.synchronize_statistics = args.sync_bn
    optimizer = build_optimizer(args, model)
    train_ids = column(train_set)
    # Every training step starts with one call of this module's `collate`, looked up per batch, so that a
    # profiler can wrap `train.collate` to timestamp the steps (../shared/official_bench does).
    train_loader = sentence_loader(
        train_set,
        tokenizer,
        args.per_device_train_batch_size,
        seed=args.seed,
        collate_fn=lambda indices: collate(train_ids, indices, tokenizer.pad_token_id),
    )
    batch_sampler = train_loader.batch_sampler  # ours; Accelerate may wrap it in a per-process shard
    valid_loader = sentence_loader(valid_set, tokenizer, args.per_device_eval_batch_size)
    model, optimizer, train_loader, valid_loader = accelerator.prepare(model, optimizer, train_loader, valid_loader)
    state = TrainingState(
        PlateauRule.from_args(args),
        aggressive=recipe.aggressive,
    )
    # the inner loop's extra batches: a second shuffle of the training set, cycled
    extra_batches = None
    if recipe.aggressive:
        extra_loader = sentence_loader(train_set, tokenizer, args.per_device_train_batch_size, seed=args.seed + 1)
        extra_batches = endless_batches(accelerator.prepare(extra_loader), extra_loader.batch_sampler)
    run = run_definition(
        accelerator,
        args,
        tokenizer,
        accelerator.unwrap_model(model).config,
        train_sentences=len(train_ids),
        train_data=fingerprint(train_ids),
        method=args.method,
    )

    # Accelerate also steps at the end of the loader, so a last partial accumulation is a step
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    warmup_steps = round(args.kl_warmup_epochs * steps_per_epoch)
    total_steps = args.num_train_epochs * steps_per_epoch
    if args.max_train_steps:
        total_steps = min(total_steps, args.max_train_steps)
    warn_unfinished_warmup(accelerator, warmup_steps, total_steps)
    resumed = resume_state(accelerator, args, run)
    if resumed is not None:
        state.load_state_dict(resumed)
    if args.with_tracking:
        loggable = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("bnvae", config=loggable)

    accelerator.print(
        f"{recipe.label}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train_set):,} training sentences, "
        f"{accelerator.num_processes} process(es) x {args.per_device_train_batch_size}, {steps_per_epoch} steps/epoch, "
        f"KL bound {accelerator.unwrap_model(model).kl_lower_bound:.2f} nats"
    )
    progress = tqdm(
        total=total_steps, initial=state.optimizer_steps, disable=not accelerator.is_local_main_process, desc="training"
    )
    kl_guaranteed = accelerator.unwrap_model(model).kl_lower_bound > 0
    stop = state.finished
    while state.epoch < args.num_train_epochs and not stop:
        model.train()
        train_loader.set_epoch(state.epoch)
        batch_sampler.set_epoch(state.epoch)  # set_epoch above does not reach it through Accelerate's shard
        batches = skip_first_batches(train_loader, state.batches_done) if state.batches_done else train_loader
        sums = state.epoch_sums
        tick = time.perf_counter(), time.process_time()
        for batch in batches:
            batch.pop("index")
            kl_weight = recipe.kl_weight(state.optimizer_steps, warmup_steps, steps_per_epoch)
            if state.aggressive:  # the encoder first, on this batch and then on random ones
                sums["encoder_steps"] += aggressive_encoder_updates(
                    lambda i, first=batch, weight=kl_weight: encoder_step(
                        args, accelerator, model, optimizer, first if i == 1 else next(extra_batches), weight
                    )
                )
            with accelerator.accumulate(model):
                outputs = model(**batch, labels=batch["input_ids"], kl_weight=kl_weight, return_logits=False)
                # while aggressive, the outer step trains the decoder only
                decoder_only = (
                    (lambda: drop_gradients(accelerator.unwrap_model(model).bnvae)) if state.aggressive else None
                )
                optimizer_step(accelerator, model, optimizer, outputs.loss, args.max_grad_norm, decoder_only)
            state.batches_done += 1
            loss = float(outputs.loss.detach())
            sums["reconstruction"] += float(outputs.reconstruction_loss.detach().sum())
            sums["kl"] += float(outputs.kl.detach().sum()) if outputs.kl is not None else 0.0
            if kl_guaranteed:  # the batch's guaranteed KL, summed over its sentences (see bn_kl_guarantee)
                guarantee = bn_kl_guarantee(outputs.mu) * len(batch["input_ids"])
                sums["kl_guarantee"] = sums.get("kl_guarantee", 0.0) + guarantee  # absent in 0.3 checkpoints
            sums["sentences"] += len(batch["input_ids"])
            state.step_losses.append(loss)
            state.train_seconds += time.perf_counter() - tick[0]
            if state.train_cpu_seconds is not None:
                state.train_cpu_seconds += time.process_time() - tick[1]
            if accelerator.sync_gradients:
                state.optimizer_steps += 1
                progress.update(1)
                progress.set_postfix(
                    loss=f"{loss:.2f}", kl=f"{sums['kl'] / sums['sentences']:.2f}", kl_w=f"{kl_weight:.2f}"
                )
                if args.with_tracking and state.optimizer_steps % args.logging_steps == 0:
                    train_kl = float(outputs.kl.detach().mean()) if outputs.kl is not None else 0.0
                    accelerator.log(
                        {"train/loss": loss, "train/kl_weight": kl_weight, "train/kl": train_kl},
                        step=state.optimizer_steps,
                    )
                if (
                    args.checkpointing_steps
                    and args.checkpointing_steps.isdigit()
                    and state.optimizer_steps % int(args.checkpointing_steps) == 0
                ):
                    save_checkpoint(accelerator, checkpoints_dir(args), state.optimizer_steps, state.state_dict(), run)
                if args.max_train_steps and state.optimizer_steps >= args.max_train_steps:
                    stop = True
                    break
            tick = time.perf_counter(), time.process_time()
        if stop and state.batches_done < len(train_loader):
            break  # stopped mid-epoch by --max_train_steps: no epoch-end evaluation
        state.finished = end_of_epoch(args, accelerator, model, optimizer, state, valid_loader)
        stop = state.finished or stop
        state.epoch += 1
        state.batches_done, state.epoch_sums = 0, state.new_epoch_sums()
        checkpoint_epoch(accelerator, args, state.optimizer_steps, state.state_dict(), run)
    progress.close()
    return finish(args, accelerator, model, tokenizer, state, valid_set, test_corpus)


def endless_batches(loader, batch_sampler):
    """The (prepared) loader's batches without their index, epoch after epoch; batch_sampler is ours,
    which Accelerate may have wrapped in a per-process shard."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        batch_sampler.set_epoch(epoch)
        for batch in loader:
            batch.pop("index")
            yield batch


def drop_gradients(module):
    """Set the gradients of module's parameters to None: the optimiser then leaves them unchanged."""
    for param in module.parameters():
        param.grad = None


def encoder_step(args, accelerator, model, optimizer, batch, kl_weight):
    """One optimiser step of the encoder alone (the decoder's gradients dropped). Returns (summed loss
    over the batch in nats, predicted tokens), over all processes: what aggressive_encoder_updates compares."""
    outputs = model(**batch, labels=batch["input_ids"], kl_weight=kl_weight, return_logits=False)
    accelerator.backward(outputs.loss)
    if args.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    drop_gradients(accelerator.unwrap_model(model).decoder)
    optimizer.step()
    optimizer.zero_grad()
    # summed over the processes, so that every process stops the inner loop at the same step
    local = torch.tensor([float(outputs.loss.detach()) * len(batch["input_ids"]), float(outputs.num_tokens.sum())])
    loss, tokens = accelerator.reduce(local.to(accelerator.device), reduction="sum").tolist()
    return loss, int(tokens)


def end_of_epoch(args, accelerator, model, optimizer, state, valid_loader):
    """Validate, apply the plateau rule, record history. Returns True when training should stop."""
    unwrapped = accelerator.unwrap_model(model)
    average_bn_statistics(unwrapped, accelerator)  # every rank validates and keeps the same model
    metrics = evaluate_language_model(unwrapped, valid_loader, accelerator, seed=args.seed)
    lr = optimizer.param_groups[0]["lr"]
    sums = state.epoch_sums
    entry = {
        "epoch": state.epoch,
        "lr": lr,
        "train_reconstruction": sums["reconstruction"] / max(sums["sentences"], 1),
        "train_kl": sums["kl"] / max(sums["sentences"], 1),
        "train_kl_guarantee": sums.get("kl_guarantee", 0.0) / max(sums["sentences"], 1),
        **{f"valid_{k}": v for k, v in metrics.items()},
        "valid_selection_loss": args.recipe.selection_loss(metrics["reconstruction"], metrics["kl"]),
    }
    head = unwrapped.bnvae.latent_head if unwrapped.bnvae is not None else None
    if head is not None and head.gamma_offset is not None:  # learned gamma: each dimension's BN scale
        entry["gammas"] = head.scale().detach().tolist()
    if args.recipe.aggressive:
        entry.update(aggressive=state.aggressive, encoder_steps=sums["encoder_steps"])
        if state.aggressive and metrics["mi"] < state.previous_mi:
            state.aggressive = False
            accelerator.print(
                f"validation MI fell ({state.previous_mi:.2f} -> {metrics['mi']:.2f}): aggressive training ends"
            )
        state.previous_mi = metrics["mi"]
    warning = escape_warning(entry, unwrapped.kl_lower_bound, args.optimizer)
    if warning:
        logger.warning(warning, main_process_only=True)
    state.history.append(entry)
    action = entry["plateau_action"] = state.keeper.update(
        unwrapped, optimizer, state.epoch, entry["valid_selection_loss"]
    )
    if action == "diverged":
        return True
    accelerator.print(
        f"epoch {state.epoch + 1}: valid -ELBO {metrics['nelbo']:.2f} (rec {metrics['reconstruction']:.2f}, KL {metrics['kl']:.2f}), "
        f"MI {metrics['mi']:.2f}, AU {metrics['au']}, PPL(ELBO) {metrics['ppl_elbo']:.1f}, lr {lr:g} [{action}]"
        + (f", learned gamma {min(entry['gammas']):.3f} to {max(entry['gammas']):.3f}" if "gammas" in entry else "")
    )
    if args.with_tracking:
        accelerator.log({f"valid/{k}": v for k, v in metrics.items()} | {"lr": lr}, step=state.optimizer_steps)
    return action == "stop"


def evaluate_split(args, accelerator, model, tokenizer, dataset, split, description):
    """Final metrics of `dataset` with the importance-weighted NLL, sentences split over the processes."""
    loader = accelerator.prepare(sentence_loader(dataset, tokenizer, args.per_device_eval_batch_size))
    metrics = evaluate_language_model(model, loader, accelerator, seed=args.seed, iw_samples=args.iw_samples)
    return {**metrics, "split": split, "eval_data": description}


def finish(args, accelerator, model, tokenizer, state, valid_set, test_corpus):
    unwrapped = accelerator.unwrap_model(model)
    average_bn_statistics(unwrapped, accelerator)
    state.keeper.restore_best(unwrapped)
    training_args = recorded_arguments(args)
    results = {
        "task": "language-modeling",
        "method": args.recipe.name,
        "method_label": args.recipe.label,
        "preset": args.preset,
        "kl_lower_bound": unwrapped.kl_lower_bound,
        "training_args": training_args,
        "num_processes": accelerator.num_processes,
        "optimizer_steps": state.optimizer_steps,
        "train_seconds": state.train_seconds,
        "train_cpu_seconds": state.train_cpu_seconds,
        "best_epoch": state.keeper.rule.best_epoch,
        "history": state.history,
        "train_step_losses": state.step_losses,
    }
    if args.iw_samples and state.history:
        subset = valid_set.select(range(min(args.max_iw_eval_samples, len(valid_set))))
        results["validation"] = evaluate_split(
            args,
            accelerator,
            unwrapped,
            tokenizer,
            subset,
            "validation",
            f"validation split, first {len(subset)} sentences",
        )
    if test_corpus is not None:
        test_set = tokenize_texts(tokenizer, test_corpus.texts, args.max_seq_length)
        results["test"] = evaluate_split(
            args, accelerator, unwrapped, tokenizer, test_set, "test", f"test split, {len(test_set)} sentences"
        )
    output = Path(args.output_dir)
    if accelerator.is_main_process and state.history:  # before save_run, which may upload the folder
        output.mkdir(parents=True, exist_ok=True)
        data_name = args.dataset_name or Path(args.train_file).parent.name
        plot_training_curves(
            state.history,
            unwrapped.kl_lower_bound,
            output / "training_curves.png",
            f"{args.recipe.label} on {data_name}",
            step_losses=state.step_losses,
        )
    save_run(accelerator, unwrapped, tokenizer, args, results)
    if accelerator.is_main_process:
        print_summary(results, output)
    if args.with_tracking:
        accelerator.end_training()
    return unwrapped, results


def promised_kl(entry, bound):
    """The KL BN's scales promise per sentence: n gamma^2 / 2 (`bound`), or with learned scales gamma_i (the
    epoch's `gammas`) sum gamma_i^2 / 2, which never falls below the floor n gamma_min^2 / 2."""
    return sum(g * g for g in entry["gammas"]) / 2 if "gammas" in entry else bound


def guarantee_note(entry, bound):
    """The KL BN guaranteed on the epoch's training batches (exactly), beside the bound n gamma^2 / 2 (with
    learned scales gamma_i: their sum of gamma_i^2 / 2 at the epoch's end, and the floor n gamma_min^2 / 2)."""
    if not bound or entry.get("train_kl_guarantee") is None:
        return ""
    if "gammas" in entry:
        return (
            f" (BN guaranteed >= {entry['train_kl_guarantee']:.4f} on these batches: about sum gamma_i^2 / 2 ="
            f" {promised_kl(entry, bound):.4f} of the learned gamma_i times the mean v / (v + eps) of the raw means' batch variances"
            f" v; never below n gamma_min^2 / 2 = {bound:.4f} times it)"
        )
    return (
        f" (BN guaranteed >= {entry['train_kl_guarantee']:.4f} on these batches: n gamma^2 / 2 = {bound:.4f}"
        " times the mean v / (v + eps) of the raw means' batch variances v)"
    )


# below this fraction of n gamma^2 / 2 on an epoch's training batches, BN's KL floor is being escaped
ESCAPE_FRACTION = 0.5


def escape_warning(entry, bound, optimizer):
    """The warning to log when BN guaranteed less than ESCAPE_FRACTION of what its scales promise on the
    epoch's training batches (n gamma^2 / 2; learned scales: sum gamma_i^2 / 2), i.e. the raw means' batch
    variances v fell towards BN's eps so that v / (v + eps) << 1; else None (a NaN epoch included)."""
    guarantee = entry.get("train_kl_guarantee")
    if not bound or guarantee is None:
        return None
    promised = promised_kl(entry, bound)
    if not guarantee < ESCAPE_FRACTION * promised:
        return None
    advice = (
        "This happened under --optimizer adam with BN's eps at 1e-5 (RESULTS.md, 'BN's bound holds under SGD, not"
        f" under Adam'); --bn_eps {ADAM_BN_EPS:g} (Adam's default) or --optimizer sgd kept the bound."
        if optimizer == "adam"
        else "The SGD runs measured so far kept it (RESULTS.md, 'BN's bound holds under SGD, not under Adam')."
    )
    return (
        f"epoch {entry['epoch'] + 1}: BN guaranteed only {guarantee:.4f} nats of KL per sentence on the training"
        f" batches, against the {promised:.4f} its scales promise: the encoder is shrinking its raw means' batch"
        f" variance below BN's eps, so the KL can collapse despite BN. {advice}"
    )


def print_summary(results, output):
    written = f"model, tokenizer, {RESULTS_NAME}" + (", training_curves.png" if results["history"] else "")
    lines = [f"saved to {output}: {written}"]
    if results["history"]:
        best = results["history"][results["best_epoch"]] if results["best_epoch"] >= 0 else results["history"][-1]
        lines.append(
            f"best epoch {best['epoch'] + 1}: valid -ELBO {best['valid_nelbo']:.2f}, KL {best['valid_kl']:.2f}, "
            f"MI {best['valid_mi']:.2f}, AU {best['valid_au']}; training-batch KL {best['train_kl']:.2f}"
            + guarantee_note(best, results["kl_lower_bound"])
        )
    for split in ("validation", "test"):
        if split in results and "nll" in results[split]:
            r = results[split]
            lines.append(
                f"{r['split']}: IW-NLL (K={r['iw_samples']}) {r['nll']:.2f}, PPL {r['ppl']:.2f}, KL {r['kl']:.2f}, MI {r['mi']:.2f}, AU {r['au']}"
            )
    print("\n".join(lines))


def main(argv=None):
    """Train; returns the trained (best) model and the results dict written to all_results.json."""
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
