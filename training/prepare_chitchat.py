"""Prepare the chitchat dataset (PyPI chitchat-dataset 0.9.0, MIT) as conversation splits for BN-CVAE.

    python -m pip install chitchat-dataset==0.9.0 && python training/prepare_chitchat.py
    python training/prepare_chitchat.py --source_file dataset.json

The package's data file is found with importlib. Each conversation's messages are grouped by sender;
the messages of one speaker in a row become one turn. Text is lower-cased and tokenised like the other
corpora (`prepare_rotten_tomatoes.tokenize`). Conversations are shuffled with a fixed seed and split by
conversation (no conversation in two splits): test and validation get --test_size and --valid_size
conversations, training the rest. Writes train/valid/test.jsonl in the format of
`hf_bnvae.dialogue_data` (one conversation per line), a NOTICE with the data's licence, and prints what
was dropped (empty turns, conversations with fewer than two turns).
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from corpus_splits import installed_data_file, seeded_splits  # training/ is on the path
from prepare_rotten_tomatoes import tokenize  # training/ is on the path when a training script runs

from hf_bnvae.dialogue_data import merge_turns, write_conversations

NOTICE = """The chitchat dataset (Chit Chat Challenge, BYU PCCL), from the chitchat-dataset package 0.9.0
(https://pypi.org/project/chitchat-dataset/0.9.0/, file chitchat_dataset/dataset.json), MIT License.
Modified by training/prepare_chitchat.py: messages grouped into turns, text lower-cased and tokenised,
conversations shuffled and split.
"""


def read_chitchat(path):
    """Conversations {"id", "turns": [(speaker, tokenised text)]} with at least two turns, and a Counter of
    what was dropped or merged. The file maps conversation ids to {"messages": [[{"text", "sender"}]]}."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping conversation ids to conversations")
    conversations, counts = [], Counter()
    for conversation_id, conversation in data.items():
        messages = [m for group in conversation.get("messages", []) for m in group]
        turns, changes = merge_turns((m.get("sender"), " ".join(tokenize(m.get("text") or ""))) for m in messages)
        counts.update(changes)
        if len(turns) < 2:
            counts["conversations with fewer than 2 turns dropped"] += 1
            continue
        conversations.append({"id": conversation_id, "turns": turns})
    return conversations, counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source_file", help="a copy of chitchat_dataset/dataset.json (default: the installed one)")
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "data" / "chitchat"))
    parser.add_argument("--test_size", type=int, default=500, help="conversations")
    parser.add_argument("--valid_size", type=int, default=500, help="conversations")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    source = Path(
        args.source_file
        or installed_data_file(
            "chitchat_dataset", "dataset.json", "chitchat-dataset==0.9.0", "python -m pip install -e '.[dialogue]'"
        )
    )
    conversations, counts = read_chitchat(source)
    conversations.sort(key=lambda c: c["id"])  # the file's order does not matter, the seed does
    splits = seeded_splits(conversations, args.test_size, args.valid_size, args.seed, source, "conversations")
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_conversations(output / f"{name}.jsonl", rows)
        turns = sum(len(c["turns"]) for c in rows)
        print(f"{name}: {len(rows)} conversations, {turns} turns, {turns - len(rows)} (context, response) pairs")
    (output / "NOTICE").write_text(NOTICE, encoding="utf-8")
    print("dropped or merged: " + (", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "nothing"))


if __name__ == "__main__":
    main()
