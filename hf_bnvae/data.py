"""The one data path of every script: read sentences, tokenise them with `datasets.map`, batch them by length.

Files hold one sentence per line (the PTB / Yahoo / Yelp format); `label<TAB>text` lines are accepted
and the label is kept. Blank lines are dropped and counted. Batches group sentences of similar length
(little padding), their order is shuffled per epoch with a fixed seed, and no batch holds a single
sentence (BN cannot normalise it). The token ids are read out of the dataset once and `collate` pads
each batch from them (torch's `pad_sequence`). The DataLoader is meant to go through
`accelerator.prepare`, which shards the batches over processes.
"""

import random
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Sampler

# The Brown corpus splits that ship with the repository (training/prepare_brown.py): every script's default
# data. Only a source checkout (pip install -e .) has them.
BROWN_DIR = Path(__file__).resolve().parents[1] / "training" / "data" / "brown"


@dataclass
class Corpus:
    """Sentences of one split: texts, optional labels, and how many blank lines were dropped."""

    texts: list
    labels: list = field(default_factory=list)
    blank_lines: int = 0
    source: str = ""

    def head(self, n):
        """The first n sentences (and their labels); all of them when n is None."""
        return Corpus(self.texts[:n], self.labels[:n], self.blank_lines, self.source)


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
            raise ValueError(
                f"{path}, line {number}: bytes that are not UTF-8 ({error.reason} at byte {error.start})"
            ) from None
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


def tokenize_texts(tokenizer, texts, max_length=None):
    """A `datasets.Dataset` of `<s> ... </s>` token ids with columns input_ids, attention_mask and index
    (the sentence's position in texts). Sentences longer than max_length tokens (if set) keep their first
    max_length - 2 words."""
    dataset = datasets.Dataset.from_dict({"text": list(texts), "index": list(range(len(texts)))})
    return dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=max_length is not None, max_length=max_length),
        batched=True,
        remove_columns=["text"],
        desc="tokenising",
    )


def length_grouped_batches(lengths, batch_size, seed=None, epoch=0, min_batch_size=2):
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


class LengthGroupedBatchSampler(Sampler):
    """`length_grouped_batches` as a batch sampler: a new shuffle each epoch (`set_epoch`), or length
    order when seed is None. It has no fixed batch_size, so Accelerate shards whole batches over processes."""

    def __init__(self, lengths, batch_size, seed=None):
        self.lengths, self.max_batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0
        self.num_batches = len(length_grouped_batches(self.lengths, batch_size))  # the same every epoch

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(length_grouped_batches(self.lengths, self.max_batch_size, self.seed, self.epoch))

    def __len__(self):
        return self.num_batches


def column(dataset, name="input_ids"):
    """A dataset column as a Python list, read at once (indexing a `datasets` Column reads Arrow row by row)."""
    return dataset[name][:]


def collate(sequences, indices, pad_token_id, columns=None):
    """The right-padded batch of the sentences `sequences[i]` for i in indices.

    sequences: token-id lists (`<s> w_1 ... w_m </s>`); columns: optional {name: one value per sentence}
    gathered alongside (e.g. the dataset's `index` and `labels`). Returns input_ids and attention_mask
    (B, T) with T the batch's longest sentence, `index` (B,) (the positions unless columns has its own)
    and each column (B,), all long tensors.
    """
    rows = [torch.tensor(sequences[i]) for i in indices]
    batch = {
        "input_ids": pad_sequence(rows, batch_first=True, padding_value=pad_token_id),
        "attention_mask": pad_sequence([torch.ones_like(r) for r in rows], batch_first=True),
        "index": torch.tensor(indices),
    }
    for name, values in (columns or {}).items():
        batch[name] = torch.tensor([values[i] for i in indices])
    return batch


def sentence_loader(dataset, tokenizer, batch_size, seed=None, collate_fn=None):
    """DataLoader of right-padded batches {input_ids, attention_mask (B, T), index (B,), labels (B,) if the
    dataset has them} over a `tokenize_texts` dataset, grouped by length (shuffled per epoch with seed;
    length order without). collate_fn(indices) replaces `collate` over the dataset's own columns."""
    sequences = column(dataset)  # read once: batches are padded from Python lists, not Arrow rows
    sampler = LengthGroupedBatchSampler([len(ids) for ids in sequences], batch_size, seed)
    if collate_fn is None:
        columns = {name: column(dataset, name) for name in ("index", "labels") if name in dataset.column_names}

        def collate_fn(indices):
            return collate(sequences, indices, tokenizer.pad_token_id, columns)

    # A private generator: creating the loader's iterator draws a seed from it, not from torch's global
    # RNG, so batching never shifts the dropout masks and z samples of training.
    return DataLoader(range(len(sequences)), batch_sampler=sampler, collate_fn=collate_fn, generator=torch.Generator())


__all__ = [
    "BROWN_DIR",
    "Corpus",
    "collate",
    "column",
    "LengthGroupedBatchSampler",
    "length_grouped_batches",
    "read_hub_dataset",
    "read_text_file",
    "sentence_loader",
    "tokenize_texts",
]
