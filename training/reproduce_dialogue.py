"""The paper's Table 4 on the chitchat corpus: CVAE, CVAE + bag-of-words loss and BN-CVAE (two gammas),
trained by train_dialogue.py on the same data with the same seed, tested with the same metrics.

    python training/reproduce_dialogue.py            # prepares the data if missing, trains what is missing
    python training/reproduce_dialogue.py --gammas 0.3 0.6 --max_train_samples 30000

Budget (4 runs in under 2 hours of 2 CPU cores, the small preset): the first 20,000 training pairs
(of 101,065), 3 epochs of batch 30 (2,000 steps), the KL weight raised over the first 1,000 steps
(the paper: 10,000 steps on Switchboard), the first 2,000 validation and test pairs, and the sampled
metrics on 300 test contexts with 10 responses each.

Each run goes to training/reproduction/dialogue_models/<method>/ (not in git); a run with an
all_results.json is done, so the script resumes run by run. Writes training/reproduction/dialogue.json
(the issue's layout: per method ppl, kl, bleu_precision, bleu_recall (BLEU-1..4), a_bow_precision,
a_bow_recall, e_bow_precision, e_bow_recall, distinct_1, distinct_2) and dialogue.md (the table with
the paper's Switchboard figures beside ours, and sampled responses for five test contexts).
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import prepare_chitchat  # training/ is on the path when a training script runs
import train_dialogue

from hf_bnvae.saving import read_results, recorded_arguments, write_atomically
from hf_bnvae.trainer_utils import check_finite

HERE = Path(__file__).resolve().parent
KEYS = [
    "ppl_posterior",
    "ppl_elbo",
    "kl",
    "bleu_precision",
    "bleu_recall",
    "a_bow_precision",
    "a_bow_recall",
    "e_bow_precision",
    "e_bow_recall",
    "distinct_1",
    "distinct_2",
]
# The paper's Table 4 (Switchboard, its own sizes); BLEU-4 as printed there. Bag-of-words figures only for BN-CVAE.
PAPER = {
    "cvae": {"ppl": 36.40, "kl": 0.15, "bleu_4": 10.23},
    "cvae_bow": {"ppl": 24.49, "kl": 9.30, "bleu_4": 8.56},
    "bncvae": {"ppl": 30.67, "kl": 5.18, "bleu_4": 8.64, "a_bow": "96.64 / 94.43", "e_bow": "84.69 / 81.75"},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default=str(HERE / "reproduction"))
    p.add_argument("--data_dir", default=str(HERE / "data" / "chitchat"), help="train/valid/test.jsonl")
    p.add_argument("--gammas", type=float, nargs="+", default=[0.3, 0.6], help="BN-CVAE's gammas")
    p.add_argument("--max_train_samples", type=int, default=20000, help="training pairs")
    p.add_argument("--max_eval_samples", type=int, default=2000, help="validation and test pairs")
    p.add_argument("--num_train_epochs", type=int, default=3)
    p.add_argument("--kl_warmup_steps", type=int, default=1000)
    p.add_argument("--max_test_contexts", type=int, default=300, help="test contexts for the sampled metrics")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--train_args", default="", help="more train_dialogue.py flags, in one string")
    args = p.parse_args(argv)
    check_finite(p, args)
    if any(g <= 0 for g in args.gammas):
        p.error(f"--gammas {args.gammas}: every gamma must be > 0 (gamma 0 is the CVAE, already in the table)")
    return args


def runs(args):
    """(key, train_dialogue.py method flags) of every run, in the table's order."""
    yield "cvae", ["--method", "cvae"]
    yield "cvae_bow", ["--method", "cvae_bow"]
    for gamma in args.gammas:
        yield f"bncvae_{gamma:g}", ["--method", "bncvae", "--gamma", f"{gamma:g}"]


def train_missing(args):
    data = Path(args.data_dir)
    if not all((data / f"{split}.jsonl").exists() for split in ("train", "valid", "test")):
        prepare_chitchat.main(["--output_dir", str(data)])
    common = [
        "--train_file", str(data / "train.jsonl"), "--validation_file", str(data / "valid.jsonl"),
        "--test_file", str(data / "test.jsonl"), "--max_train_samples", str(args.max_train_samples),
        "--max_eval_samples", str(args.max_eval_samples), "--num_train_epochs", str(args.num_train_epochs),
        "--kl_warmup_steps", str(args.kl_warmup_steps), "--max_test_contexts", str(args.max_test_contexts),
        "--seed", str(args.seed),
    ]  # fmt: skip
    results = {}
    for key, flags in runs(args):
        folder = Path(args.output_dir) / "dialogue_models" / key
        if read_results(folder) is None:
            print(f"[train] {key}", flush=True)
            train_dialogue.main([*common, *shlex.split(args.train_args), *flags, "--output_dir", str(folder)])
        else:
            print(f"[skip] {key}: trained", flush=True)
        results[key] = read_results(folder)
    return results


def figure(results, key):
    """A run's test figure; runs of hf_bnvae 0.3 named ppl_posterior "ppl" and had no ppl_elbo (None)."""
    legacy = {"ppl_posterior": "test_ppl"}
    return results.get(f"test_{key}", results.get(legacy.get(key, "")))


def table(results):
    """Markdown: our figures with the paper's beside them, then five test contexts with 3 samples per method."""
    lines = [
        "| method | PPL, z from q(z\\|c,x) | PPL, ELBO bound | KL | BLEU-4 P / R | A-bow P / R | E-bow P / R | distinct-1 / 2 | paper: PPL / KL / BLEU-4 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        paper = PAPER.get(key.split("_")[0] if key.startswith("bncvae") else key, {})
        cited = f"{paper['ppl']:.2f} / {paper['kl']:.2f} / {paper['bleu_4']:.2f}" if paper else "-"
        if "a_bow" in paper:
            cited += f"; A-bow {paper['a_bow']}, E-bow {paper['e_bow']}"
        elbo = f"{figure(r, 'ppl_elbo'):.2f}" if figure(r, "ppl_elbo") is not None else "-"
        lines.append(
            f"| {r.get('method_label', key)} | {figure(r, 'ppl_posterior'):.2f} | {elbo} | {r['test_kl']:.2f} | "
            f"{r['test_bleu_precision'][3]:.2f} / {r['test_bleu_recall'][3]:.2f} | "
            f"{100 * r['test_a_bow_precision']:.2f} / {100 * r['test_a_bow_recall']:.2f} | "
            f"{100 * r['test_e_bow_precision']:.2f} / {100 * r['test_e_bow_recall']:.2f} | "
            f"{r['test_distinct_1']:.3f} / {r['test_distinct_2']:.3f} | {cited} |"
        )
    lines += [
        "",
        "BLEU: sacrebleu sentence BLEU with effective order, so a response shorter than 4 words gets a BLEU-4"
        " from the orders it has (chitchat responses are short): not comparable with the paper's NLTK BLEU."
        " A-bow / E-bow in percent (cosine x 100). Paper: Switchboard, its sizes. PPL, z from q(z|c,x): the"
        " reference decoded with a z that has seen it (the paper's PPL; it favours the latent models); PPL,"
        " ELBO bound: exp((reconstruction + KL) / words), which pays for what z knows of the reference.",
    ]
    first = next(iter(results.values()))
    for i, example in enumerate(first["examples"]):
        lines += ["", f"**Context {i + 1}**: " + " / ".join(example["context"]), f"reference: {example['reference']}"]
        for key, r in results.items():
            lines.append(f"- {r.get('method_label', key)}: " + " | ".join(r["examples"][i]["samples"][:3]))
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start = time.perf_counter()
    results = train_missing(args)
    methods = {key: {k: figure(r, k) for k in KEYS} for key, r in results.items()}
    report = {
        "methods": methods,
        "command": shlex.join(["python", "training/reproduce_dialogue.py", *argv]),
        "seconds": sum(r["seconds"] for r in results.values()),
        "settings": recorded_arguments(args),
    }
    output = Path(args.output_dir)
    write_atomically(output / "dialogue.json", json.dumps(report, indent=2))
    write_atomically(output / "dialogue.md", table(results))
    print(f"this call: {time.perf_counter() - start:.0f} s; all runs: {report['seconds']:.0f} s")
    print(table(results))
    return report


if __name__ == "__main__":
    main()
