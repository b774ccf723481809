"""Prepare the paper's classification data, short Yelp sentences, from a clone of Shen et al.'s repository.

    git clone https://github.com/shentianxiao/language-style-transfer
    python training/prepare_yelp.py --source language-style-transfer

The paper's Table 3 uses He et al.'s `short_yelp` (100,000 / 10,000 / 10,000 labelled sentences), drawn
from the Yelp sentiment sentences of Shen et al. (2017). Those are read here from the clone's
`data/yelp/sentiment.{dev,test}.{0,1}` (tokenised, lower-cased, at most about 15 words, one per line;
suffix 0 = negative, 1 = positive). The train files are used too when they are there (a full clone
has them; some mirrors do not). Blank lines, lines that are not UTF-8, exact duplicates and sentences
that occur under both labels are dropped and counted. The sentences are shuffled with a fixed seed and
split into test (--test_size), validation (--valid_size) and the training pool (at most --train_size):
`label<TAB>text` lines, labels `negative` and `positive`. The pool's text without its labels is the
unlabelled corpus for pretraining. `source.json` records the files read, the clone's commit and the counts.

The sentences come from the Yelp dataset, whose terms restrict redistribution: the output is not part
of the repository (training/data/yelp is git-ignored).
"""

import argparse
import json
import subprocess
from collections import Counter
from pathlib import Path

from corpus_splits import seeded_splits  # training/ is on the path

LABELS = {"0": "negative", "1": "positive"}
SPLITS = ("train", "dev", "test")  # Shen et al.'s file names; all of them are pooled and re-split here


def source_files(source):
    """{(split, suffix): path} of the sentiment files present under `source` (a clone of the repository);
    FileNotFoundError naming what is missing when no dev/test pair is there."""
    folder = Path(source) / "data" / "yelp"
    found = {
        (split, suffix): folder / f"sentiment.{split}.{suffix}"
        for split in SPLITS
        for suffix in LABELS
        if (folder / f"sentiment.{split}.{suffix}").is_file()
    }
    if not any(split in ("dev", "test") for split, _ in found):
        raise FileNotFoundError(
            f"{folder}: no sentiment.{{dev,test}}.{{0,1}} files; --source must be a clone of"
            " https://github.com/shentianxiao/language-style-transfer"
        )
    return found


def read_sentences(files):
    """(label, text) pairs of every file (labels from the file suffix), in file order, and a Counter of
    what was dropped and why (blank lines, undecodable lines, duplicates, sentences under both labels)."""
    dropped, labels_of, order = Counter(), {}, []
    for (_, suffix), path in sorted(files.items()):
        for line in path.read_bytes().splitlines():
            try:
                text = " ".join(line.decode("utf-8").split())
            except UnicodeDecodeError:
                dropped["lines that are not UTF-8"] += 1
                continue
            if not text:
                dropped["blank lines"] += 1
                continue
            if text in labels_of:
                dropped["duplicates"] += 1
                labels_of[text].add(LABELS[suffix])
                continue
            labels_of[text] = {LABELS[suffix]}
            order.append(text)
    pairs = []
    for text in order:
        if len(labels_of[text]) > 1:
            dropped["sentences under both labels"] += 1
        else:
            pairs.append((next(iter(labels_of[text])), text))
    return pairs, dropped


def commit_of(source):
    """The clone's HEAD commit, or None when `source` is not the top of a git work tree (an unpacked
    archive, or a folder inside another repository)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True
        )
    except FileNotFoundError:
        return None
    if out.returncode != 0:
        return None
    top, commit = out.stdout.split()
    return commit if Path(top).resolve() == Path(source).resolve() else None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="a clone of shentianxiao/language-style-transfer")
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "data" / "yelp"))
    parser.add_argument("--train_size", type=int, default=100000, help="at most this many pool sentences")
    parser.add_argument("--valid_size", type=int, default=1000)
    parser.add_argument("--test_size", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("train_size", "valid_size", "test_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    files = source_files(args.source)
    pairs, dropped = read_sentences(files)
    splits = seeded_splits(pairs, args.test_size, args.valid_size, args.seed, args.source, "usable sentences")
    splits["train"] = splits["train"][: args.train_size]
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in splits.items():
        (output / f"{name}.txt").write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
        per_label = Counter(label for label, _ in rows)
        counts[name] = {"sentences": len(rows), **{label: per_label[label] for label in LABELS.values()}}
        print(f"{name}: {len(rows)} sentences ({', '.join(f'{n} {label}' for label, n in per_label.items())})")
    record = {
        "repository": "https://github.com/shentianxiao/language-style-transfer",
        "commit": commit_of(args.source),
        "files": {path.name: sum(1 for _ in path.open("rb")) for path in files.values()},
        "usable_sentences": len(pairs),
        "dropped": dict(dropped),
        "splits": counts,
        "seed": args.seed,
    }
    (output / "source.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print("dropped: " + (", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())) or "nothing"))
    return record


if __name__ == "__main__":
    main()
