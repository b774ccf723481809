"""Reading sentence corpora and batching them by length, for train.py and evaluate.py.

Files hold one sentence per line (the PTB / Yahoo / Yelp format); `label<TAB>text` lines are accepted
and the label is kept. Blank lines are dropped and counted. Batches group sentences of similar length
(little padding), their order is shuffled per epoch with a fixed seed, and no batch holds a single
sentence (BN cannot normalise it).
"""

import random
from dataclasses import dataclass, field

import torch


@dataclass
class Corpus:
    """Sentences of one split: texts, optional labels, and how many blank lines were dropped."""

    texts: list
    labels: list = field(default_factory=list)
    blank_lines: int = 0
    source: str = ""


def read_text_file(path):
    """Read a one-sentence-per-line file into a Corpus.

    Raises FileNotFoundError for a missing file and ValueError naming the file (and line) for an empty
    file, bytes that are not UTF-8, or a file with nothing but blank lines.
    """
    try:
        raw = open(path, "rb").read()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    if not raw:
        raise ValueError(f"data file is empty: {path}")
    texts, labels, blank = [], [], 0
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}, line {number}: bytes that are not UTF-8 ({error.reason} at byte {error.start})") from None
        if "\t" in line:
            label, line = line.split("\t", 1)
            labels.append(label.strip())
        if not line.strip():
            blank += 1
            if len(labels) > len(texts):
                labels.pop()
            continue
        texts.append(line.strip())
    if not texts:
        raise ValueError(f"data file has no sentences, only {blank} blank lines: {path}")
    if labels and len(labels) != len(texts):
        raise ValueError(f"{path}: some lines have a `label<TAB>` prefix and some do not")
    return Corpus(texts, labels, blank, str(path))


def read_hub_dataset(name, config_name, split, text_column):
    """A split of a `datasets` dataset (hub id, or a local script/folder) as a Corpus; blank texts counted."""
    import datasets

    data = datasets.load_dataset(name, config_name, split=split)
    if text_column not in data.column_names:
        raise ValueError(f"dataset {name} has no column {text_column!r}; its columns are {data.column_names}")
    texts, blank = [], 0
    for text in data[text_column]:
        if text is None or not str(text).strip():
            blank += 1
        else:
            texts.append(str(text).strip())
    if not texts:
        raise ValueError(f"dataset {name} split {split} has no non-blank text in column {text_column!r}")
    return Corpus(texts, [], blank, f"{name}:{split}")


def encode_corpus(tokenizer, texts, max_length=None):
    """Token id lists `<s> ... </s>`; sentences longer than max_length tokens (if set) are truncated
    to their first max_length - 1 tokens plus `</s>`."""
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    if max_length is not None:
        ids = [seq if len(seq) <= max_length else seq[: max_length - 1] + [seq[-1]] for seq in ids]
    return ids


def length_bucketed_batches(lengths, batch_size, seed=None, epoch=0, min_batch_size=2):
    """Batches of sentence indices with similar lengths.

    Sentences are sorted by length (ties shuffled when seed is given), cut into batches of batch_size,
    and the batch order is shuffled with Random(seed + epoch). A last batch smaller than
    min_batch_size is merged into the one before it. seed None keeps length order (evaluation).
    """
    order = list(range(len(lengths)))
    rng = random.Random(None if seed is None else seed + epoch)
    if seed is not None:
        rng.shuffle(order)
    order.sort(key=lambda i: lengths[i])  # stable: ties stay shuffled
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_batch_size:
        batches[-2].extend(batches.pop())
    if seed is not None:
        rng.shuffle(batches)
    return batches


def collate(sequences, indices, pad_token_id):
    """Right-padded (B, T) input_ids and attention_mask, plus the sentence indices (B,)."""
    width = max(len(sequences[i]) for i in indices)
    input_ids = torch.full((len(indices), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        input_ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
        attention_mask[row, : len(sequences[i])] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "index": torch.tensor(indices)}


def shard(batches, process_index, num_processes):
    """This process's batches: every num_processes-th, after dropping the remainder so all
    processes take the same number of steps."""
    usable = len(batches) - len(batches) % num_processes
    return batches[process_index:usable:num_processes]
