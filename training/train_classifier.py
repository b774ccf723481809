"""Fine-tune BNVAEForSequenceClassification on a label budget (the paper's semi-supervised experiment).

    accelerate launch training/train_classifier.py --model_name_or_path outputs/bnvae-rt \
        --max_train_samples 100 --seed 1 --output_dir outputs/classifier-100

Argument names follow transformers' `run_glue_no_trainer.py`. The encoder and BN head come from
`--model_name_or_path` (a language-model checkpoint of this package, or a classifier); with
`--from_scratch` only its configuration and tokenizer are used and the encoder starts untrained.
`--max_train_samples` is the label budget: a stratified subset of the training pool drawn with the
seed (the same for every checkpoint at the same seed and budget). Files hold `label<TAB>text` lines.
Every epoch the validation loss, accuracy and macro F1 are computed (the local `evaluate` module
`classification`). The official fine-tuning recipe (text_ss_ft.py of the paper's code): SGD with lr 1.0,
batch 16, gradient norm clipped at 5, at most 100 epochs, and the plateau rule on the validation loss
(`hf_bnvae.trainer_utils.PlateauRule`: after 2 epochs without improvement the lr is halved and the best
model reloaded; training stops at the 5th decay); the epoch with the lowest validation loss, the official
script's choice and the recipe chosen on held-out data (RESULTS.md; `--metric_for_best_model accuracy`
or `f1`: the highest validation accuracy or F1; the plateau rule always follows the loss) is saved with save_pretrained, and `all_results.json`
holds its validation and test figures (validation only with `--skip_test`, for choosing a recipe). The
classifier reads the BN'd posterior mean, or with `--classifier_input raw` the encoder's mean before BN
(the official script's default when it is run without `--gamma`). The validation set (1,000 labelled sentences by default) is the same for every budget, so with 100
labels it holds more labels than the training set, as in the paper's protocol.
"""

import argparse
import logging
import math
import random
from collections import Counter
from pathlib import Path

import evaluate
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer

from hf_bnvae import BNVAEForSequenceClassification
from hf_bnvae.checkpoints import cpu_state_dict, fingerprint
from hf_bnvae.configuration_bnvae import CLASSIFIER_INPUTS
from hf_bnvae.data import read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluate_modules import path_of
from hf_bnvae.evaluation import gather_sentences
from hf_bnvae.hub import SELECTED_BY
from hf_bnvae.trainer_utils import (
    BestWeightsKeeper,
    PlateauRule,
    add_training_arguments,
    check_paths,
    check_training_arguments,
    checkpoint_epoch,
    make_accelerator,
    optimizer_step,
    resume_state,
    run_definition,
    save_run,
)

logger = get_logger(__name__)
DATA = Path(__file__).resolve().parent / "data" / "rotten_tomatoes"
METRIC_FOR_BEST_MODEL = "loss"  # the official script's, and the recipe classification_recipes.py chose
CLASSIFIER_INPUT = "bn"  # the posterior mean after BN; "raw" is the official script's default
LOWER_BOUNDS = {
    "max_train_samples": (1, False, "labelled sentences"),
    "max_train_steps": (1, False, "optimiser steps"),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_name_or_path", required=True, help="a checkpoint of this package (folder or hub id)")
    p.add_argument("--from_scratch", action="store_true", help="use only the checkpoint's config and tokenizer")
    p.add_argument("--train_file", default=str(DATA / "train.txt"), help="label<TAB>text lines: the labelled pool")
    p.add_argument("--validation_file", default=str(DATA / "valid.txt"))
    p.add_argument("--test_file", default=str(DATA / "test.txt"))
    p.add_argument("--max_train_samples", type=int, default=None, help="the label budget (default: the whole pool)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="lr 1.0 for SGD, 1e-3 for Adam")
    add_training_arguments(
        p, per_device_train_batch_size=16, num_train_epochs=100, plateau_start_epoch=0, plateau_patience=2
    )  # the official fine-tuning script's
    p.add_argument("--max_train_steps", type=int, default=None, help="stop after this many steps (ends an epoch early)")
    p.add_argument(
        "--metric_for_best_model",
        choices=list(SELECTED_BY),
        default=METRIC_FOR_BEST_MODEL,
        help="validation figure that selects the saved epoch (loss: the official script's; the plateau rule always uses the loss)",
    )
    p.add_argument("--freeze_encoder", action="store_true", help="train the classifier only (a linear probe)")
    p.add_argument(
        "--classifier_input",
        choices=CLASSIFIER_INPUTS,
        default=CLASSIFIER_INPUT,
        help="the posterior mean the classifier reads: after BN, or the raw mean before it (the official script's default)",
    )
    p.add_argument(
        "--skip_test", action="store_true", help="evaluate on the validation set only (when choosing a recipe)"
    )
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.learning_rate is None:
        args.learning_rate = 1.0 if args.optimizer == "sgd" else 1e-3
    check_training_arguments(parser, args, LOWER_BOUNDS, mid_epoch_checkpoints=False)
    if args.push_to_hub and args.skip_test:
        parser.error("--push_to_hub needs the test figures for the model card: drop --skip_test")
    for flag in ("train_file", "validation_file") + (() if args.skip_test else ("test_file",)):
        if not Path(getattr(args, flag)).is_file():
            parser.error(f"--{flag} {getattr(args, flag)}: data file not found")
    check_paths(parser, args, model_flags=("model_name_or_path",))
    return args


def labelled(path, label2id=None):
    """(texts, label ids, label2id) of a `label<TAB>text` file; label2id is built from it (sorted names)
    when None, else every label must be in it."""
    corpus = read_text_file(path)
    if len(corpus.labels) != len(corpus.texts):
        raise ValueError(f"{path}: every line needs a `label<TAB>text` form")
    if label2id is None:
        label2id = {name: i for i, name in enumerate(sorted(set(corpus.labels)))}
        if len(label2id) < 2:  # one label would build a regression head that scores 100% on anything
            raise ValueError(f"{path}: every line has the label {next(iter(label2id))!r}; a classifier needs >= 2")
    unknown = sorted(set(corpus.labels) - set(label2id))
    if unknown:
        raise ValueError(f"{path}: unknown label(s) {unknown}; the training pool's labels are {sorted(label2id)}")
    return corpus.texts, [label2id[name] for name in corpus.labels], label2id


def majority_class(labels, label2id):
    """(name, accuracy as a fraction) of always answering the most frequent of `labels` (ids; ties: the
    lowest id): the floor a classifier has to clear."""
    top, count = max(Counter(labels).items(), key=lambda item: (item[1], -item[0]))
    return {i: name for name, i in label2id.items()}[top], count / len(labels)


def stratified_subset(labels, budget, seed):
    """Indices of a label budget drawn from the pool with the class proportions kept (largest remainders),
    deterministic for (labels, budget, seed). Every class gets at least one example."""
    classes = sorted(set(labels))
    if budget > len(labels):
        raise ValueError(f"label budget {budget} is larger than the training pool ({len(labels)} sentences)")
    if budget < len(classes):
        raise ValueError(f"label budget {budget} is smaller than the number of classes ({len(classes)})")
    by_class = {c: [i for i, label in enumerate(labels) if label == c] for c in classes}
    exact = {c: budget * len(members) / len(labels) for c, members in by_class.items()}
    counts = {c: max(1, math.floor(value)) for c, value in exact.items()}
    for c in sorted(classes, key=lambda c: exact[c] - math.floor(exact[c]), reverse=True):
        if sum(counts.values()) >= budget:
            break
        counts[c] += 1
    while sum(counts.values()) > budget:  # the at-least-one rule overshot: take from the largest class
        counts[max(counts, key=counts.get)] -= 1
    rng = random.Random(seed)
    return sorted(i for c in classes for i in rng.sample(by_class[c], counts[c]))


def load_model(args, label2id):
    id2label = {i: name for name, i in label2id.items()}
    config = AutoConfig.from_pretrained(
        args.model_name_or_path, num_labels=len(label2id), id2label=id2label, classifier_input=args.classifier_input
    )
    if config.model_type != "bnvae":
        raise ValueError(
            f"{args.model_name_or_path} is a {config.model_type!r} checkpoint, not one of this package (bnvae)"
        )
    if args.from_scratch:
        return BNVAEForSequenceClassification(config)
    return BNVAEForSequenceClassification.from_pretrained(
        args.model_name_or_path,
        num_labels=len(label2id),
        id2label=id2label,
        label2id=label2id,
        classifier_input=args.classifier_input,
    )


def dataset_of(tokenizer, texts, labels):
    return tokenize_texts(tokenizer, texts).add_column("labels", labels)


@torch.no_grad()
def evaluate_split(model, loader, accelerator, num_labels):
    """Mean cross-entropy (nats per sentence), accuracy and macro F1 (fractions) and the number of sentences
    predicted as each label id ("predicted_counts") over the loader's sentences, every process's share
    gathered; accuracy and F1 through the local evaluate module."""
    model.eval()
    parts = {"index": [], "prediction": [], "reference": [], "loss": []}
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for key, value in (
            ("index", batch["index"]),
            ("prediction", logits.argmax(-1)),
            ("reference", batch["labels"]),
            ("loss", torch.nn.functional.cross_entropy(logits.float(), batch["labels"], reduction="none")),
        ):
            parts[key].append(value.cpu())
    gathered = gather_sentences({key: torch.cat(values) for key, values in parts.items()}, accelerator)
    metric = evaluate.load(path_of("classification"))
    scores = metric.compute(
        predictions=gathered["prediction"].tolist(), references=gathered["reference"].tolist(), num_labels=num_labels
    )
    counts = torch.bincount(gathered["prediction"], minlength=num_labels).tolist()
    return {"loss": float(gathered["loss"].mean()), **scores, "predicted_counts": counts}


def is_better(scores, best_score, metric):
    """Whether this epoch's validation `scores` beat the best `metric` value so far (None: no epoch yet):
    a lower loss, a higher accuracy or F1."""
    if best_score is None:
        return True
    return scores[metric] < best_score if metric == "loss" else scores[metric] > best_score


def main(argv=None):
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    set_seed(args.seed)
    pool_texts, pool_labels, label2id = labelled(args.train_file)
    budget = args.max_train_samples or len(pool_labels)
    chosen = stratified_subset(pool_labels, budget, args.seed)
    valid_texts, valid_labels, _ = labelled(args.validation_file, label2id)
    test_texts, test_labels, _ = ([], [], None) if args.skip_test else labelled(args.test_file, label2id)

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = load_model(args, label2id)
    if args.freeze_encoder:
        model.freeze_encoder()
    train_set = dataset_of(tokenizer, [pool_texts[i] for i in chosen], [pool_labels[i] for i in chosen])
    batch_size = min(args.per_device_train_batch_size, len(train_set))
    train_loader = sentence_loader(train_set, tokenizer, batch_size, seed=args.seed)
    batch_sampler = train_loader.batch_sampler
    valid_loader = sentence_loader(
        dataset_of(tokenizer, valid_texts, valid_labels), tokenizer, args.per_device_eval_batch_size
    )
    test_loader = (
        None
        if args.skip_test
        else sentence_loader(dataset_of(tokenizer, test_texts, test_labels), tokenizer, args.per_device_eval_batch_size)
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (
        torch.optim.SGD(params, lr=args.learning_rate)
        if args.optimizer == "sgd"
        else torch.optim.Adam(params, lr=args.learning_rate)
    )
    model, optimizer, train_loader, valid_loader = accelerator.prepare(model, optimizer, train_loader, valid_loader)
    if test_loader is not None:
        test_loader = accelerator.prepare(test_loader)
    accelerator.print(
        f"{len(train_set)} labelled sentences (budget {budget}, seed {args.seed}), {len(label2id)} classes, "
        f"{'frozen' if args.freeze_encoder else 'fine-tuned'} encoder from {args.model_name_or_path}"
        f"{' (config only)' if args.from_scratch else ''}"
    )
    keeper = BestWeightsKeeper(PlateauRule.from_args(args))  # the lowest validation loss: the plateau rule's
    run = run_definition(
        accelerator,
        args,
        tokenizer,
        accelerator.unwrap_model(model).config,
        train_sentences=len(chosen),
        train_data=fingerprint([list(train_set["input_ids"]), list(train_set["labels"])]),
        model_name_or_path=args.model_name_or_path,
        freeze_encoder=args.freeze_encoder,
        optimizer=args.optimizer,
        metric_for_best_model=args.metric_for_best_model,  # the kept best score is in its units
    )
    state = {"epoch": 0, "optimizer_steps": 0, "history": [], "selected_epoch": -1, "selected_score": None}
    state["finished"] = False  # the plateau rule stopped the run (a resumed run then trains no further)
    resumed = resume_state(accelerator, args, run)
    if resumed is not None:
        keeper.load_state_dict({key: resumed.pop(key) for key in ("plateau", "best_weights")})
        selected_weights = resumed.pop("selected_weights")
        state.update(resumed)
    else:
        selected_weights = None  # the best by --metric_for_best_model
    history = state["history"]
    unwrapped = accelerator.unwrap_model(model)
    epochs = tqdm(range(args.num_train_epochs), desc="epochs", disable=not accelerator.is_local_main_process)
    epochs.update(state["epoch"])
    for epoch in range(state["epoch"], args.num_train_epochs):
        if state["finished"] or (args.max_train_steps and state["optimizer_steps"] >= args.max_train_steps):
            break
        model.train()
        train_loader.set_epoch(epoch)  # Accelerate's shard passes its own count of epochs to the batch sampler
        batch_sampler.set_epoch(epoch)  # which a multi-process shard does not reach
        for batch in train_loader:
            batch.pop("index")
            with accelerator.accumulate(model):
                stepped = optimizer_step(accelerator, model, optimizer, model(**batch).loss, args.max_grad_norm)
            state["optimizer_steps"] += stepped
            if args.max_train_steps and state["optimizer_steps"] >= args.max_train_steps:
                break
        scores = evaluate_split(model, valid_loader, accelerator, len(label2id))
        lr = optimizer.param_groups[0]["lr"]
        metric = args.metric_for_best_model
        better = math.isfinite(scores["loss"]) and is_better(scores, state["selected_score"], metric)
        # this epoch's weights, copied before a decay goes back to the keeper's (the lowest loss)
        epoch_weights = cpu_state_dict(unwrapped) if better and metric != "loss" else None
        action = keeper.update(unwrapped, optimizer, epoch, scores["loss"])
        history.append(
            {"epoch": epoch, "lr": lr, **{f"valid_{k}": v for k, v in scores.items()}, "plateau_action": action}
        )
        if better:
            state["selected_epoch"], state["selected_score"] = epoch, scores[metric]
            selected_weights = keeper.best_weights if metric == "loss" else epoch_weights
        state["epoch"], state["finished"] = epoch + 1, action in ("stop", "diverged")
        epochs.update(1)
        checkpoint_epoch(
            accelerator,
            args,
            state["optimizer_steps"],
            {**state, **keeper.state_dict(), "selected_weights": selected_weights},
            run,
        )
    epochs.close()
    best = state["selected_epoch"]
    steps = state["optimizer_steps"]
    unwrapped.load_state_dict(selected_weights)
    if args.skip_test:
        test, majority = {"accuracy": None, "f1": None, "predicted_counts": None}, (None, None)
    else:
        test = evaluate_split(model, test_loader, accelerator, len(label2id))
        majority = majority_class(test_labels, label2id)
    results = {
        "task": "text-classification",
        "model_name_or_path": args.model_name_or_path,
        "from_scratch": args.from_scratch,
        "train_file": args.train_file,
        "label_budget": budget,
        "seed": args.seed,
        "best_epoch": best,
        "metric_for_best_model": args.metric_for_best_model,
        "optimizer_steps": steps,
        "eval_loss": history[best]["valid_loss"],
        "eval_accuracy": history[best]["valid_accuracy"],
        "eval_f1": history[best]["valid_f1"],
        "plateau_decays": keeper.rule.decays,
        "test_accuracy": test["accuracy"],
        "test_f1": test["f1"],
        "test_predicted_counts": test["predicted_counts"],
        "labels": sorted(label2id, key=label2id.get),  # the label names by id
        "test_majority_label": majority[0],
        "test_majority_accuracy": majority[1],
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "freeze_encoder": args.freeze_encoder,
        "classifier_input": args.classifier_input,
        "num_validation_sentences": len(valid_texts),
        "history": history,
    }
    output = save_run(accelerator, unwrapped, tokenizer, args, results)
    tested = "" if args.skip_test else f"test accuracy {results['test_accuracy']:.4f}, F1 {results['test_f1']:.4f}; "
    accelerator.print(
        f"best epoch {best + 1}: validation accuracy {results['eval_accuracy']:.4f}; {tested}saved to {output}"
    )
    return unwrapped, results


if __name__ == "__main__":
    main()
