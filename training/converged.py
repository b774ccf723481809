"""Is BN-VAE's NLL at or below the LSTM LM's when every model trains with the same schedule until it
converges, and what does gamma trade? LM, VAE and BN-VAE (0.6) on Brown sentences over several seeds
(the comparison); the autoencoder and BN-VAE with gamma 0.3, 0.9, 1.2 and 1.5 with the first seed (the
gamma sweep, beside that seed's VAE and BN-VAE (0.6)); beyond the paper, with the first seed, BN-VAE with
a learned scale per dimension and the LM, VAE and BN-VAE (0.6, 1.2) with a Transformer decoder (another
seed of these: `--seeds 43 --methods transformer_lm`; the Transformer study reports every seed); and LM,
VAE and BN-VAE (0.6) on ~80-word Brown documents (--corpus documents; `python training/prepare_brown.py
--documents` makes them).

    python training/converged.py                               # trains what is missing (resumes), evaluates, writes
    python training/converged.py --train_only --num_workers 2  # the training part, two runs side by side
    python training/converged.py --evaluate_only               # evaluate the finished runs, write the results so far
    python training/converged.py --evaluate_only --seeds 43 --methods vae  # evaluate one run; the files keep the rest
    python training/converged.py --methods lm vae bnvae_0.6    # the comparison alone
    python training/converged.py --corpus documents            # the long documents

One schedule for every model, the LM included (`SCHEDULE`, each value a flag): SGD lr 1.0, the official
VAE rule (the plateau rule from epoch 15 with patience 5: lr x0.5 and back to the best model after 5
epochs without a better validation loss, stop at the 5th decay), at most 100 epochs, the KL warm-up over
10 epochs (nothing to warm up for the LM and the autoencoder), at the ptb sizes with a 10,000-word
vocabulary (train.py's brown preset), on the first 10,000 training sentences (5,000 documents) with the
whole validation split each epoch. Every run checkpoints each epoch and resumes from its last
checkpoint; a run with results (all_results.json) is done; a finished run of another schedule or data is refused at
evaluation.

The results files are written from every run record in --output_dir (evaluated_runs), whatever --methods and
--seeds select.

Test: -ELBO, KL, MI (10 posterior draws per sentence) and AU on the whole test split; the
importance-weighted NLL (K = 500), the z usage, and reconstruction BLEU (greedy and beam 5) on a seeded
random sample of 1,000 test sentences (documents), the same for every model; greedy reconstruction BLEU
on 1,000 of the training sentences too ("seen"), which tells a code that carries no words from one that
does not generalise. Each run's record keeps
the per-sentence NLLs, so models are compared sentence by sentence: the mean paired difference (nats
per sentence) with its 95% t interval over the sentences. Writes, in training/reproduction/,
converged.{json,md}, converged_curves.png, gamma_sweep.{json,md,png}, learned_gamma.{json,md} and
transformer_decoder.{json,md} (sentences), or
long_documents.{json,md} and long_documents_curves.png (documents), and each run's record (validation
history, test metrics, examples) in converged_runs/ or long_documents_runs/.
"""

import argparse
import json
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from experiments import (  # training/ is on the path when a script runs
    Run,
    mean_ci95,
    mean_std,
    reconstruction_bleu,
    run_train_script,
)
from tqdm.auto import tqdm

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model, latent_usage
from hf_bnvae.saving import names_file, portable_path, read_results, recorded_arguments, write_atomically
from hf_bnvae.trainer_utils import check_finite

HERE = Path(__file__).resolve().parent
COMPARISON = [Run("lm", "lm"), Run("vae", "vae"), Run("bnvae_0.6", "bnvae", {"gamma": 0.6})]
SWEEP_GAMMAS = (0.3, 0.9, 1.2, 1.5)
# trained with the first seed only: the gamma sweep (the autoencoder marks the end where KL is free)
SWEEP = [Run("ae", "ae"), *(Run(f"bnvae_{g}", "bnvae", {"gamma": g}) for g in SWEEP_GAMMAS)]
# Beyond the paper (issue 31), trained with the first seed of --seeds: BN-VAE with a learned scale per
# dimension (floor 0.3, from 0.6), and the LM, VAE and BN-VAE with a Transformer decoder (GPT-2 blocks,
# 4 x 256, 4 heads), which train with Adam (train.py's Adam defaults: lr 1e-3, BN's eps 1e-12, with which
# Adam keeps BN's bound): SGD at lr 1.0 is the LSTMs' recipe, not a Transformer's.
LEARNED = [Run("bnvae_learned_0.3", "bnvae_learned", {"gamma_min": 0.3})]
TRANSFORMER_OPTIONS = {"decoder_type": "transformer", "optimizer": "adam"}
TRANSFORMER = [
    Run("transformer_lm", "lm", options=TRANSFORMER_OPTIONS),
    Run("transformer_vae", "vae", options=TRANSFORMER_OPTIONS),
    *(Run(f"transformer_bnvae_{g}", "bnvae", {"gamma": g}, options=TRANSFORMER_OPTIONS) for g in (0.6, 1.2)),
]
TRANSFORMER_PAIRED = [
    ("transformer_bnvae_0.6", "transformer_lm"),
    ("transformer_bnvae_1.2", "transformer_lm"),
    ("transformer_vae", "transformer_lm"),
    ("transformer_bnvae_0.6", "transformer_vae"),
]
METHODS = {run.name: run for run in COMPARISON}
FIRST_SEED_ONLY = {run.name: run for run in (*SWEEP, *LEARNED, *TRANSFORMER)}
LABELS = {run.name: run.label for run in (*COMPARISON, *FIRST_SEED_ONLY.values())}
PAIRED = [("bnvae_0.6", "lm"), ("vae", "lm"), ("bnvae_0.6", "vae")]  # (model, minus model), sentence by sentence
SWEEP_ORDER = ["vae", *sorted((f"bnvae_{g}" for g in (0.6, *SWEEP_GAMMAS)), key=lambda m: float(m[6:])), "ae"]
# The schedule every model trains with: train.py's flags (the official VAE rule, PlateauRule's defaults).
SCHEDULE = {
    "num_train_epochs": 100,
    "kl_warmup_epochs": 10.0,
    "plateau_start_epoch": 15,
    "plateau_patience": 5,
    "plateau_factor": 0.5,
    "plateau_max_decays": 5,
}
NUM_EXAMPLES, INTERPOLATION_STEPS = 5, 5


@dataclass(frozen=True)
class Corpus:
    """What differs between the sentence and the document comparisons: the data folder (train.txt,
    valid.txt, test.txt) and the command that makes it, the training sentences, the default seeds, the
    runs, and the output names (<name>.json / .md / _curves.png, <name>_models/, <name>_runs/)."""

    folder: Path
    prepare: str
    max_train_samples: int
    seeds: tuple
    methods: tuple
    name: str


CORPORA = {
    "sentences": Corpus(
        BROWN_DIR, "python training/prepare_brown.py", 10000, (42, 43, 44), (*METHODS, *FIRST_SEED_ONLY), "converged"
    ),
    "documents": Corpus(
        HERE / "data" / "brown_documents", "python training/prepare_brown.py --documents", 5000, (42,),
        tuple(METHODS), "long_documents",
    ),
}  # fmt: skip


def runs(args):
    """(seed, name, Run) of every run --methods selects: the comparison seed by seed, then the sweep's runs
    with the first seed."""
    for seed in args.seeds:
        for name, run in METHODS.items():
            if name in args.methods:
                yield seed, name, run
    for name, run in FIRST_SEED_ONLY.items():
        if name in args.methods:
            yield args.seeds[0], name, run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", choices=list(CORPORA), default="sentences", help="sets the defaults below")
    corpus = CORPORA[p.parse_known_args(argv)[0].corpus]
    p.add_argument("--output_dir", default=str(HERE / "reproduction"))
    p.add_argument("--seeds", type=int, nargs="+", default=list(corpus.seeds))
    p.add_argument("--methods", nargs="+", choices=list(corpus.methods), default=list(corpus.methods))
    p.add_argument("--max_train_samples", type=int, default=corpus.max_train_samples)
    for flag, default in SCHEDULE.items():
        p.add_argument(f"--{flag}", type=type(default), default=default, help="the schedule of every model")
    p.add_argument("--num_workers", type=int, default=1, help="training runs side by side, one thread each")
    p.add_argument("--iw_samples", type=int, default=500)
    p.add_argument("--iw_test_sentences", type=int, default=1000)
    p.add_argument("--sample_seed", type=int, default=0, help="seed of the random IW test sample")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation's noise (z draws, MI)")
    p.add_argument("--mi_samples", type=int, default=10, help="posterior draws per sentence in the MI estimate")
    p.add_argument("--train_only", action="store_true")
    p.add_argument(
        "--evaluate_only", action="store_true", help="evaluate the finished runs and write the results; train nothing"
    )
    args = p.parse_args(argv)
    check_finite(p, args)
    if args.train_only and args.evaluate_only:
        p.error("--train_only and --evaluate_only exclude each other")
    if min(args.seeds) < 0:
        p.error(f"--seeds {min(args.seeds)}: seeds are at least 0")
    for flag in ("num_workers", "iw_test_sentences", "num_train_epochs"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if args.iw_test_sentences < 2 * NUM_EXAMPLES:
        p.error(f"--iw_test_sentences {args.iw_test_sentences}: must be at least {2 * NUM_EXAMPLES} (the examples)")
    return args


def data_file(args, split):
    """The corpus's train / valid / test file; FileNotFoundError naming the command that makes it."""
    corpus = CORPORA[args.corpus]
    path = corpus.folder / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found; make it with {corpus.prepare}")
    return path


def run_dir(args, method, seed):
    """The run's model and checkpoints (not in git)."""
    return Path(args.output_dir) / f"{CORPORA[args.corpus].name}_models" / f"{method}_seed{seed}"


def runs_dir(args):
    """The folder of the corpus's run records (in git)."""
    return Path(args.output_dir) / f"{CORPORA[args.corpus].name}_runs"


def record_path(args, method, seed):
    """The run's record: its per-epoch validation history, test metrics and examples."""
    return runs_dir(args) / f"{method}_seed{seed}.json"


def data_flags(args):
    """train.py's data flags: the corpus's three files."""
    flags = (("--train_file", "train"), ("--validation_file", "valid"), ("--test_file", "test"))
    return [x for flag, split in flags for x in (flag, str(data_file(args, split)))]


def schedule_flags(args):
    """train.py's plateau-rule flags of the schedule (the same for every run)."""
    flags = []
    for flag in SCHEDULE:
        if flag not in ("num_train_epochs", "kl_warmup_epochs"):  # run_train_script passes these two
            flags += [f"--{flag}", str(getattr(args, flag))]
    return flags


def train_missing(args):
    """Train every planned run without results, --num_workers at a time (one thread each), each
    resuming from its last checkpoint."""
    todo = [(s, m, f) for s, m, f in runs(args) if read_results(run_dir(args, m, s)) is None]
    threads = ["--num_threads", "1"] if args.num_workers > 1 else []

    def train(seed, name, run):
        flags = [*run.train_flags(), *data_flags(args), *schedule_flags(args), *threads]
        run_train_script(run_dir(args, name, seed), args, seed, flags, resumable=True)

    with ThreadPoolExecutor(args.num_workers) as pool:
        for job in [pool.submit(train, *run) for run in todo]:
            job.result()


def check_schedule(trained, args, folder):
    """ValueError when a finished run was trained with another schedule than this comparison's."""
    used = trained["training_args"]
    differs = [
        f"{flag} {used.get(flag)} (here {getattr(args, flag)})"
        for flag in SCHEDULE
        if used.get(flag) != getattr(args, flag)
    ]
    if used.get("max_train_samples") != args.max_train_samples:
        differs.append(f"max_train_samples {used.get('max_train_samples')} (here {args.max_train_samples})")
    train_file = data_file(args, "train").resolve()
    if not names_file(used.get("train_file"), train_file):
        differs.append(f"train_file {used.get('train_file')} (here {train_file})")
    if differs:
        raise ValueError(
            f"{folder} was trained with another schedule: {', '.join(differs)}; train it again or move it aside"
        )


def iw_sample(args, num_test):
    """The indices of the test sentences the IW-NLL, z usage and BLEU are measured on (sorted, seeded)."""
    if args.iw_test_sentences > num_test:
        raise ValueError(f"--iw_test_sentences {args.iw_test_sentences}: the test split has only {num_test}")
    return sorted(random.Random(args.sample_seed).sample(range(num_test), args.iw_test_sentences))


def sample_settings(args):
    """The test sample a record was evaluated on."""
    return {"sample_seed": args.sample_seed, "iw_test_sentences": args.iw_test_sentences, "iw_samples": args.iw_samples}


def schedule_settings(args):
    """The schedule and training-set size a record's run was trained with (check_schedule checked them)."""
    return {**{flag: getattr(args, flag) for flag in SCHEDULE}, "max_train_samples": args.max_train_samples}


def read_record(record, args):
    """A run's record; ValueError when it was evaluated on another test sample or trained with another schedule
    than these settings' (a record written before it kept its schedule counts as this schedule's)."""
    kept = json.loads(record.read_text())
    here = {"sample": sample_settings(args), "schedule": schedule_settings(args)}
    for what, settings in here.items():
        if kept.get(what, settings) != settings:
            raise ValueError(
                f"{record} has another {what} ({kept.get(what)}, here {settings}); move it aside to evaluate again"
            )
    return kept


def progress(loader, what):
    """The loader with a progress bar (batches, with an ETA)."""
    return tqdm(loader, desc=f"{what} (batches)")


@torch.no_grad()
def evaluate_run(folder, record, test_texts, sample, args):
    """Test metrics of one trained run, written with its validation history to `record` (reused when it
    holds the same test sample and schedule, given the seen-sentence BLEU if it was made without; refused when
    it holds others: read_record)."""
    if record.exists():
        kept = read_record(record, args)
        if "bleu" in kept["test"] and "bleu_seen" not in kept["test"] and read_results(folder):
            model, tokenizer = load_pretrained(folder)  # a record made before the figure existed: add it
            kept["test"]["bleu_seen"] = seen_bleu(model, tokenizer, args)
            write_atomically(record, json.dumps(kept, indent=2))
        return kept["test"]
    trained = read_results(folder)
    check_schedule(trained, args, folder)
    start, cpu_start = time.perf_counter(), time.process_time()
    model, tokenizer = load_pretrained(folder)
    test_set = tokenize_texts(tokenizer, test_texts)
    subset = test_set.select(sample)
    metrics = evaluate_language_model(
        model,
        progress(
            sentence_loader(test_set, tokenizer, 64), "test -ELBO"
        ),  # the MI and latent usage follow, without a bar
        seed=args.seed,
        mi_samples=args.mi_samples,
    )
    iw = evaluate_language_model(
        model,
        progress(sentence_loader(subset, tokenizer, 16), f"IW-NLL (K = {args.iw_samples})"),
        seed=args.seed,
        iw_samples=args.iw_samples,
        compile=True,
        per_sentence=True,
    )
    by_sentence = dict(zip(iw["per_sentence"]["index"], iw["per_sentence"]["nll"]))  # test-split indices
    metrics.update(nll=iw["nll"], ppl=iw["ppl"], nelbo_iw_sample=iw["nelbo"], iw_sentences=iw["num_sentences"])
    metrics["nll_per_sentence"] = [round(by_sentence[i], 4) for i in sample]  # in the sample's order
    if model.config.use_latent:
        metrics.update(kl_bound=model.kl_lower_bound)
        usage = latent_usage(model, sentence_loader(subset, tokenizer, 64), seed=args.seed)
        metrics.update({k: v for k, v in usage.items() if k != "num_sentences"})  # the IW sample's size is iw_sentences
        metrics.update(reconstruction_examples(model, tokenizer, [test_texts[i] for i in sample], args.seed))
        metrics["bleu_seen"] = seen_bleu(model, tokenizer, args)
        head = model.bnvae.latent_head
        if head.gamma_offset is not None:  # learned gamma: the scales it ended with, per dimension
            metrics["gammas"] = [round(g, 4) for g in head.scale().tolist()]
    metrics.update(
        epochs=len(trained["history"]),
        best_epoch=trained["best_epoch"] + 1,
        decays=sum(h["plateau_action"] in ("decay", "stop") for h in trained["history"]),
        train_seconds=trained["train_seconds"],
        train_cpu_seconds=trained.get("train_cpu_seconds"),  # None: resumed from a checkpoint that did not count it
        eval_seconds=time.perf_counter() - start,
        eval_cpu_seconds=time.process_time() - cpu_start,
    )
    record.parent.mkdir(parents=True, exist_ok=True)
    kept = {
        "sample": sample_settings(args),
        "schedule": schedule_settings(args),
        "test": metrics,
        "history": trained["history"],
    }
    write_atomically(record, json.dumps(kept, indent=2))
    return metrics


def evaluated_runs(args):
    """{method: {seed: test metrics}} of every run record of the corpus in --output_dir, whatever --methods and
    --seeds select, so that evaluating one run never narrows the results files; ValueError when a record
    holds another test sample or schedule (read_record); a file that is no record of the corpus's methods is
    skipped with a message."""
    results = {}
    for record in sorted(runs_dir(args).glob("*.json")):
        method, _, seed = record.stem.rpartition("_seed")
        if method not in CORPORA[args.corpus].methods or not seed.isdigit():
            print(f"[skip] {record}: not a record <method>_seed<seed>.json of --corpus {args.corpus}", flush=True)
            continue
        results.setdefault(method, {})[int(seed)] = read_record(record, args)["test"]
    return {m: dict(sorted(results[m].items())) for m in CORPORA[args.corpus].methods if m in results}


def seen_bleu(model, tokenizer, args):
    """Greedy reconstruction BLEU on --iw_test_sentences sentences the model trained on (a sample of the first
    --max_train_samples training sentences, seeded by --sample_seed), to set beside the test sentences': a
    code that carries words but does not generalise reconstructs these far better."""
    seen = read_text_file(data_file(args, "train")).texts[: args.max_train_samples]
    texts = random.Random(args.sample_seed).sample(seen, min(args.iw_test_sentences, len(seen)))
    return reconstruction_bleu(model.reconstruct(texts, tokenizer), texts)


def reconstruction_examples(model, tokenizer, texts, seed):
    """Reconstruction BLEU of `texts` (greedy and beam 5, corpus BLEU against the inputs, sacrebleu without
    re-tokenisation), the first NUM_EXAMPLES reconstructions, two interpolations (texts 0 -> 1 and 2 -> 3,
    INTERPOLATION_STEPS points, greedy) and NUM_EXAMPLES prior samples."""
    greedy = model.reconstruct(texts, tokenizer)
    beam = model.reconstruct(texts, tokenizer, num_beams=5)
    return {
        "bleu": reconstruction_bleu(greedy, texts),
        "bleu_beam5": reconstruction_bleu(beam, texts),
        "examples": [
            {"input": t, "greedy": g, "beam5": b}
            for t, g, b in zip(texts[:NUM_EXAMPLES], greedy[:NUM_EXAMPLES], beam[:NUM_EXAMPLES])
        ],
        "interpolations": [
            {
                "from": texts[a],
                "to": texts[b],
                "path": model.interpolate(texts[a], texts[b], tokenizer, INTERPOLATION_STEPS),
            }
            for a, b in ((0, 1), (2, 3))
        ],
        "prior_samples": model.sample_prior(NUM_EXAMPLES, tokenizer, generator=torch.Generator().manual_seed(seed)),
    }


FIGURES = (
    "nll",
    "ppl",
    "nelbo",
    "kl",
    "mi",
    "au",
    "epochs",
    "best_epoch",
    "decays",
    "z_gap",
    "token_accuracy",
    "bleu",
    "bleu_beam5",
    "bleu_seen",
)


def summarise(runs):
    """{figure: mean_std over the seeds' metrics} for each figure the runs have."""
    summary = {}
    for figure in FIGURES:
        values = [r[figure] for r in runs if figure in r]
        if values:
            summary[figure] = mean_std(values)
    return summary


def nll_differences(run, other):
    """One run's NLL minus another's, sentence by sentence (the records' `nll_per_sentence`, the same sample in
    the same order), nats per sentence."""
    return [a - b for a, b in zip(run["nll_per_sentence"], other["nll_per_sentence"])]


def paired_nll(results, method, other, lengths=None):
    """`method` minus `other` on the same test sentences, nats per sentence: {"mean", "ci95", "n"} over the
    sentences of the seed-averaged NLL differences (mean_ci95: sampling noise of the test sentences only),
    "per_seed": the mean difference of each seed both ran, "seeds", with two seeds or more "across_seeds":
    mean_ci95 over the per-seed means (n - 1 degrees of freedom: training noise too), and with the sample's
    `lengths` (tokens per sentence, in the sample's order) "by_length": the same over the shortest, middle
    and longest third, each with its "tokens" [min, max]};
    None when they share no seed."""
    seeds = sorted(set(results.get(method, {})) & set(results.get(other, {})))
    if not seeds:
        return None
    differences = [nll_differences(results[method][s], results[other][s]) for s in seeds]
    averaged = [statistics.mean(d) for d in zip(*differences)]
    per_seed = [statistics.mean(d) for d in differences]
    paired = {**mean_ci95(averaged), "per_seed": per_seed, "seeds": seeds}
    if len(seeds) >= 2:
        paired["across_seeds"] = mean_ci95(per_seed)
    if lengths is not None:
        order = sorted(range(len(averaged)), key=lambda i: lengths[i])
        thirds = [order[k * len(order) // 3 : (k + 1) * len(order) // 3] for k in range(3)]
        paired["by_length"] = [
            {"tokens": [lengths[t[0]], lengths[t[-1]]], **mean_ci95([averaged[i] for i in t])} for t in thirds
        ]
    return paired


def seed_to_seed(results, methods=METHODS):
    """The null calibration of the paired differences: for each of `methods` (the comparison's) with two seeds
    or more, {model: {"<seed>-<first seed>": mean_ci95 of that seed's NLL minus the first seed's, sentence by
    sentence}}, nats per sentence. Two seeds of one model differ by training noise alone, so an interval
    here that excludes zero shows how far a per-sentence interval falls short of the seed-to-seed spread."""
    calibration = {}
    for method in (m for m in methods if m in results):
        first, *later = sorted(results[method])
        for seed in later:
            differences = nll_differences(results[method][seed], results[method][first])
            calibration.setdefault(method, {})[f"{seed}-{first}"] = mean_ci95(differences)
    return calibration


def sample_lengths(test_texts, sample):
    """Tokens (words + the end token) of each sentence of the IW sample, in the sample's order."""
    return [len(test_texts[i].split()) + 1 for i in sample]


def cell(summary, figure, digits):
    if figure not in summary:
        return "-"
    s = summary[figure]
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if len(s["runs"]) > 1 else f"{s['mean']:.{digits}f}"


TABLE = [  # (figure, header, digits)
    ("nll", "NLL", 2), ("ppl", "PPL", 1), ("nelbo", "-ELBO", 2), ("kl", "KL", 2), ("mi", "MI", 2), ("au", "AU", 1),
    ("epochs", "epochs", 1), ("decays", "decays", 1), ("z_gap", "z gap", 2), ("token_accuracy", "token acc.", 3),
    ("bleu", "BLEU greedy", 1), ("bleu_beam5", "BLEU beam 5", 1), ("bleu_seen", "BLEU greedy, seen", 1),
]  # fmt: skip


def table(rows):
    """Markdown table of {label: summary} rows with the TABLE columns."""
    lines = [
        "| model | seeds | " + " | ".join(h for _, h, _ in TABLE) + " |",
        "|---|---|" + "---|" * len(TABLE),
    ]
    for label, summary in rows.items():
        lines.append(
            f"| {label} | {len(summary['seeds'])} | " + " | ".join(cell(summary, f, d) for f, _, d in TABLE) + " |"
        )
    return lines


def protocol(args):
    """What every model of a results file shares (the "protocol" entry of its json)."""
    return {
        "same_schedule_for_all": True,
        "corpus": args.corpus,
        "train_file": portable_path(str(data_file(args, "train"))),
        "max_train_samples": args.max_train_samples,
        **{flag: getattr(args, flag) for flag in SCHEDULE},
        "iw_samples": args.iw_samples,
        "iw_test_sentences": args.iw_test_sentences,
        "sample_seed": args.sample_seed,
        "mi_samples": args.mi_samples,
    }


def per_model(results, methods):
    """{method: {figure: mean_std over seeds, "seeds": [...]}} of the methods that have results."""
    summaries = {}
    for m in methods:
        if m in results:
            summaries[m] = {**summarise([results[m][s] for s in sorted(results[m])]), "seeds": sorted(results[m])}
    return summaries


def command(args):
    extra = " --corpus documents" if args.corpus == "documents" else ""
    return f"python training/converged.py{extra}"


# what one invocation chose to train or evaluate, not what the results files hold (evaluated_runs reads all)
INVOCATION_FLAGS = ("methods", "seeds", "train_only", "evaluate_only", "num_workers")


def study_seed(results, own):
    """The seed of a first-seed-only study: the smallest seed any of its `own` methods has results for (a
    message names those of other seeds, left out), None when none has."""
    seeds = {seed for m in own for seed in results.get(m, {})}
    if not seeds:
        return None
    if len(seeds) > 1:
        print(f"[note] {', '.join(own)}: seed {min(seeds)} reported, seeds {sorted(seeds)[1:]} left out", flush=True)
    return min(seeds)


def cost(records):
    """{"seconds": training and evaluation wall seconds of the records, "cpu_hours": training and
    evaluation CPU time (core-hours) of the records that counted both,
    "runs_without_cpu_time": how many did not (trained in part, or evaluated, before the CPU time was
    counted; their wall seconds include pauses)}."""
    counted = [r for r in records if r.get("train_cpu_seconds") is not None and "eval_cpu_seconds" in r]
    cpu = sum(r["train_cpu_seconds"] + r["eval_cpu_seconds"] for r in counted)
    return {
        "seconds": sum(r["train_seconds"] + r["eval_seconds"] for r in records),
        "cpu_hours": round(cpu / 3600, 2),
        "runs_without_cpu_time": len(records) - len(counted),
    }


def write_results(results, args, output, lengths=None):
    """<name>.json / .md: the comparison (every seed) with the paired NLL differences (by length too, given
    the sample's lengths), and the wall seconds and CPU hours of every run of `results` (the sweep's and
    issue 31's included)."""
    name = CORPORA[args.corpus].name
    methods = per_model(results, METHODS)
    paired = {f"{a}-{b}": paired_nll(results, a, b, lengths) for a, b in PAIRED}
    every = [r for per_seed in results.values() for r in per_seed.values()]
    report = {
        "protocol": protocol(args),
        "methods": methods,
        "paired": {key: d for key, d in paired.items() if d},
        "seed_to_seed": seed_to_seed(results),
        "command": command(args),
        **cost(every),
        "settings": recorded_arguments(args, exclude=INVOCATION_FLAGS),
    }
    write_atomically(output / f"{name}.json", json.dumps(report, indent=2))
    lines = table({LABELS[m]: s for m, s in methods.items()}) + paired_lines(PAIRED, paired, args)
    lines += seed_to_seed_lines(report["seed_to_seed"], args)
    write_atomically(output / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def paired_lines(pairs, paired, args):
    """Markdown of the paired NLL differences (paired_nll of each (model, minus model) of pairs)."""
    unit = args.corpus  # the corpora are named by their texts: "sentences", "documents"
    lines = [
        "",
        f"NLL: importance-weighted (K = {args.iw_samples}) on {args.iw_test_sentences} random test {unit}, the same"
        f" for every model. Paired differences on those {unit} (nats per {unit[:-1]}): the mean over the {unit} of"
        f" the seed-averaged difference [95% t interval over the {unit}: test-sample noise only], each seed's"
        " mean difference with, given two seeds or more, their 95% t interval (seeds - 1 degrees of freedom:"
        f" training noise too), and the mean over the shortest, middle and longest third of the {unit}"
        " [95% t interval] (their tokens: words + end).",
        "",
        "| difference | mean [95% CI] | per seed [95% CI over seeds] | by length: short / middle / long third |",
        "|---|---|---|---|",
    ]
    for (a, b), d in zip(pairs, paired.values()):
        if d:
            by_length = " / ".join(f"{interval(t)} ({t['tokens'][0]}-{t['tokens'][1]})" for t in d.get("by_length", []))
            per_seed = ", ".join(f"{x:+.2f}" for x in d["per_seed"])
            if "across_seeds" in d:
                per_seed += f" [{d['across_seeds']['ci95'][0]:+.2f}, {d['across_seeds']['ci95'][1]:+.2f}]"
            lines.append(
                f"| {LABELS[a]} - {LABELS[b]} | {interval(d)} ({d['n']} {unit}) | {per_seed} | {by_length or '-'} |"
            )
    return lines


def seed_to_seed_lines(calibration, args):
    """Markdown of seed_to_seed: one row per model and later seed; nothing with one seed per model."""
    if not calibration:
        return []
    unit = args.corpus  # the corpora are named by their texts: "sentences", "documents"
    lines = [
        "",
        f"Calibration: one model against itself, another training seed minus the first, on the same {unit} (nats"
        f" per {unit[:-1]}; the differences are training noise alone).",
        "",
        f"| model | seeds | mean [95% CI over the {unit}] |",
        "|---|---|---|",
    ]
    for method, pairs in calibration.items():
        lines += [f"| {LABELS[method]} | {seeds} | {interval(d)} ({d['n']} {unit}) |" for seeds, d in pairs.items()]
    return lines


def interval(d):
    """A mean_ci95 as "mean [lo, hi]", signed, 2 decimals."""
    return f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"


def study_results(results, own, beside, every_seed):
    """The runs a study reports, {method: {seed: record}} of its `own` methods and those `beside` them: every
    seed each has (every_seed), or the first seed's (study_seed); {} when none of its own has results."""
    if not any(m in results for m in own):
        return {}
    if every_seed:
        return {m: results[m] for m in (*own, *beside) if m in results}
    seed = study_seed(results, own)
    return {m: {seed: results[m][seed]} for m in (*own, *beside) if seed in results.get(m, {})}


def write_beyond(results, args, output, lengths=None):
    """Issue 31's studies, each written once a run of its own is finished: learned_gamma.{json,md} (BN-VAE
    with learned scales beside every fixed gamma and the VAE, first seed (study_seed), with the scales it
    learned) and transformer_decoder.{json,md} (the Transformer LM, VAE and BN-VAEs, every seed they have,
    with the paired NLL differences and the seed-to-seed calibration); each json with the wall seconds and
    CPU hours of the study's own runs."""
    fixed = [m for m in SWEEP_ORDER if m != "ae"]
    studies = {  # name: (own, beside, pairs, every seed)
        "learned_gamma": ([run.name for run in LEARNED], fixed, [], False),
        "transformer_decoder": ([run.name for run in TRANSFORMER], [], TRANSFORMER_PAIRED, True),
    }
    for name, (own, beside, pairs, every_seed) in studies.items():
        selected = study_results(results, own, beside, every_seed)
        if not selected:
            continue
        seeds = sorted({seed for per_seed in selected.values() for seed in per_seed})
        methods = per_model(selected, selected)
        for m, per_seed in selected.items():
            first = per_seed[min(per_seed)]
            if "gammas" in first:  # the learned scales (a first-seed study)
                methods[m]["gammas"] = first["gammas"]
        paired = {f"{a}-{b}": paired_nll(selected, a, b, lengths) for a, b in pairs}
        optimizer = "adam, lr 1e-3, BN eps 1e-12" if name == "transformer_decoder" else "sgd, lr 1.0"
        report = {
            "protocol": {**protocol(args), "optimizer": optimizer},
            "seeds": seeds,
            "methods": methods,
            "paired": {key: d for key, d in paired.items() if d},
            "seed_to_seed": seed_to_seed(selected, own),
            "command": command(args),
            **cost([r for m in own for r in selected.get(m, {}).values()]),
        }
        write_atomically(output / f"{name}.json", json.dumps(report, indent=2))
        lines = table({LABELS[m]: s for m, s in methods.items()})
        seed_list = ", ".join(map(str, seeds))
        lines += [
            "",
            f"Seed{'s' if len(seeds) > 1 else ''} {seed_list}; the schedule and test sample of converged.md, optimizer {optimizer}.",
        ]
        lines += paired_lines(pairs, paired, args) if pairs else []
        lines += seed_to_seed_lines(report["seed_to_seed"], args)
        for m, summary in methods.items():
            if "gammas" in summary:
                g = summary["gammas"]
                lines += [
                    "",
                    f"{LABELS[m]}: learned gamma from {min(g):.3f} to {max(g):.3f}, mean {statistics.mean(g):.3f}",
                ]
        write_atomically(output / f"{name}.md", "\n".join(lines) + "\n")


def write_sweep(results, args, output):
    """gamma_sweep.json / .md / .png: the first seed's (study_seed) VAE, BN-VAE at every gamma and the autoencoder, with
    their reconstructions and interpolations of the same test sentences; nothing until a run of the sweep's
    own (the autoencoder or a gamma other than 0.6) is finished."""
    seed = study_seed(results, [run.name for run in SWEEP])
    if seed is None:  # no run of the sweep's own yet: the comparison's are not one
        return
    rows = {m: results[m][seed] for m in SWEEP_ORDER if seed in results.get(m, {})}
    methods = per_model({m: {seed: r} for m, r in rows.items()}, rows)
    for m, r in rows.items():
        methods[m]["kl_bound"] = r.get("kl_bound", 0.0)
    report = {"protocol": protocol(args), "seed": seed, "methods": methods, "command": command(args)}
    write_atomically(output / "gamma_sweep.json", json.dumps(report, indent=2))
    lines = table({LABELS[m]: s for m, s in methods.items()})
    lines += ["", f"Seed {seed}; the schedule and test sample of converged.md.", ""]
    for m, r in rows.items():
        lines += [f"### {LABELS[m]}", "", "| input | greedy | beam 5 |", "|---|---|---|"]
        lines += [f"| {e['input']} | {e['greedy']} | {e['beam5']} |" for e in r["examples"]]
        for path in r["interpolations"]:
            lines += ["", f"Interpolation: {path['from']} -> {path['to']}", ""]
            lines += [f"{i}. {text}" for i, text in enumerate(path["path"], 1)]
        lines.append("")
    write_atomically(output / "gamma_sweep.md", "\n".join(lines) + "\n")
    plot_sweep(rows, output / "gamma_sweep.png", results.get("lm", {}).get(seed, {}).get("nll"))


def plot_sweep(rows, path, lm_nll=None):
    """Test NLL (with the seed's LM's as a line, given) and reconstruction BLEU (greedy and beam 5 on the test
    sample, greedy on seen sentences where measured) against the test KL, one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    kl = [r["kl"] for r in rows.values()]
    axes[0].plot(kl, [r["nll"] for r in rows.values()], "o-", color="tab:red")
    axes[1].plot(kl, [r["bleu"] for r in rows.values()], "o-", color="tab:blue", label="greedy")
    axes[1].plot(kl, [r["bleu_beam5"] for r in rows.values()], "s--", color="tab:green", label="beam 5")
    seen = [(r["kl"], r["bleu_seen"]) for r in rows.values() if "bleu_seen" in r]
    if seen:
        axes[1].plot(*zip(*seen), "^:", color="tab:purple", label="greedy, sentences it trained on")
    if lm_nll is not None:
        axes[0].axhline(lm_nll, color="tab:gray", linestyle=":", label=f"LSTM-LM ({lm_nll:.2f})")
        axes[0].legend()
    for m, r in rows.items():
        axes[0].annotate(LABELS[m], (r["kl"], r["nll"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
        axes[1].annotate(LABELS[m], (r["kl"], r["bleu_beam5"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    axes[0].set(title="test NLL (IW, nats / sentence)", xlabel="test KL (nats / sentence)", xscale="symlog")
    axes[1].set(title="reconstruction BLEU", xlabel="test KL (nats / sentence)", xscale="symlog")
    axes[1].legend()
    axes[0].set_xlim(axes[1].get_xlim())  # the same KL range in both panels
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(results, args, output):
    """Validation -ELBO and KL per epoch of the comparison's runs that `results` holds (from their records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, color in zip(METHODS, ("tab:gray", "tab:blue", "tab:red")):
        for i, seed in enumerate(results.get(method, {})):
            history = json.loads(record_path(args, method, seed).read_text())["history"]
            epochs = [h["epoch"] + 1 for h in history]
            label = LABELS[method] if i == 0 else None
            axes[0].plot(epochs, [h["valid_nelbo"] for h in history], color=color, alpha=0.8, label=label)
            axes[1].plot(epochs, [h["valid_kl"] for h in history], color=color, alpha=0.8, label=label)
    axes[0].set(title="validation -ELBO (nats / sentence)", xlabel="epoch")
    axes[1].set(title="validation KL (nats / sentence)", xlabel="epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(output / f"{CORPORA[args.corpus].name}_curves.png", dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if not args.evaluate_only:
        train_missing(args)
    if args.train_only:
        return
    output = Path(args.output_dir)
    test_texts = read_text_file(data_file(args, "test")).texts
    sample = iw_sample(args, len(test_texts))
    evaluated_runs(args)  # a record of another sample or schedule is refused before any evaluation
    for seed, method, _ in runs(args):
        folder, record = run_dir(args, method, seed), record_path(args, method, seed)
        if record.exists() or read_results(folder) is not None:
            print(f"[evaluate] {folder.name}", flush=True)
            evaluate_run(folder, record, test_texts, sample, args)
    results, lengths = evaluated_runs(args), sample_lengths(test_texts, sample)
    write_results(results, args, output, lengths)
    if args.corpus == "sentences":
        write_sweep(results, args, output)
        write_beyond(results, args, output, lengths)
    plot_curves(results, args, output)


if __name__ == "__main__":
    main()
