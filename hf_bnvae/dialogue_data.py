"""Dialogue data for BN-CVAE: conversations in JSON lines, (context, response) pairs, and batches.

The file format (UTF-8, one conversation per line; blank lines are skipped):

    {"id": "conv-17", "turns": [{"speaker": "A", "text": "hi , how are you ?"},
                                {"speaker": "B", "text": "fine , thanks . you ?"}, ...]}

`text` is the turn's tokens separated by spaces (lower-cased and tokenised as the model should see
them: `training/prepare_chitchat.py` does it for the chitchat corpus); `speaker` is any string or number
naming who speaks. Consecutive turns of one speaker are merged into one turn (their texts joined), turns
with empty text are dropped, and so are conversations left with fewer than two turns; each of these is
counted. A line that is not a JSON object with a `turns` list of `{"speaker", "text"}` objects is an
error naming the file and line. Switchboard or DailyDialog users write their conversations in this
format; the pairs are made here: every turn after the first is a response, its context the turns
before it (the last `max_context_turns`, the rest truncated and counted), each context turn marked 1
when its speaker is the responder.
"""

import json
from collections import Counter
from pathlib import Path

import torch

from .modeling_bncvae import pad_contexts


def merge_turns(turns):
    """[(speaker, text)] with empty texts dropped and consecutive turns of one speaker joined.
    Returns the turns and a Counter of what was dropped or merged."""
    merged, counts = [], Counter()
    for speaker, text in turns:
        text = " ".join(str(text).split())
        if not text:
            counts["empty turns dropped"] += 1
        elif merged and merged[-1][0] == speaker:
            merged[-1] = (speaker, f"{merged[-1][1]} {text}")
            counts["consecutive turns of one speaker merged"] += 1
        else:
            merged.append((speaker, text))
    return merged, counts


def read_conversations(path):
    """Conversations [{"id", "turns": [(speaker, text)]}] of a JSON-lines file, and a Counter of what was
    dropped or changed (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: conversation file not found")
    conversations, counts = [], Counter()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}, line {number}: not UTF-8 ({error.reason} at byte {error.start})") from None
            if not line.strip():
                counts["blank lines"] += 1
                continue
            conversation_id, turns = _parse_record(line, path, number)
            turns, changes = merge_turns(turns)
            counts.update(changes)
            if len(turns) < 2:
                counts["conversations with fewer than 2 turns dropped"] += 1
                continue
            conversations.append({"id": conversation_id, "turns": turns})
    if not conversations:
        raise ValueError(f"{path}: no conversation with at least two turns")
    return conversations, counts


def _parse_record(line, path, number):
    """(id, [(speaker, text)]) of one line; the id defaults to the line number."""
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("turns"), list):
        raise ValueError(f'{where}: expected an object with a "turns" list')
    turns = []
    for k, turn in enumerate(record["turns"]):
        if not isinstance(turn, dict) or "speaker" not in turn or not isinstance(turn.get("text"), str):
            raise ValueError(f'{where}: turn {k} is not an object with "speaker" and a "text" string')
        if isinstance(turn["speaker"], bool) or not isinstance(turn["speaker"], (str, int)):
            raise ValueError(
                f"{where}: turn {k}'s speaker is {json.dumps(turn['speaker'])}; a speaker is a string or an integer"
            )
        turns.append((turn["speaker"], turn["text"]))
    return str(record.get("id", number)), turns


def write_conversations(path, conversations):
    """Write conversations ({"id", "turns": [(speaker, text)]}) in the JSON-lines format."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for conversation in conversations:
            turns = [{"speaker": speaker, "text": text} for speaker, text in conversation["turns"]]
            handle.write(json.dumps({"id": conversation["id"], "turns": turns}, ensure_ascii=False) + "\n")


def dialogue_pairs(conversations, max_context_turns):
    """(context texts, context speakers (1: the responder), response text) for every turn after the first,
    and a Counter with the number of contexts truncated to the last max_context_turns turns."""
    pairs, counts = [], Counter()
    for conversation in conversations:
        turns = conversation["turns"]
        for i in range(1, len(turns)):
            responder, response = turns[i]
            context = turns[:i]
            if len(context) > max_context_turns:
                counts["contexts truncated"] += 1
                context = context[-max_context_turns:]
            pairs.append(([text for _, text in context], [int(s == responder) for s, _ in context], response))
    return pairs, counts


class DialogueDataset(torch.utils.data.Dataset):
    """Tokenised pairs: item i is (context token-id lists, context speakers, response token ids).

    Utterances are `<s> w_1 ... w_m </s>` with at most max_utterance_length words. Pairs whose response
    is only unknown words are dropped and counted in `self.counts` (`self.kept`: the indices of the rest) (a model would learn to answer `<unk>`);
    context utterances of unknown words only are kept (they still mark a turn).
    """

    def __init__(self, pairs, tokenizer, max_utterance_length):
        max_length = max_utterance_length + 2
        unk, specials = tokenizer.unk_token_id, set(tokenizer.all_special_ids)
        responses = tokenizer([response for _, _, response in pairs], truncation=True, max_length=max_length)
        self.items, self.kept, self.counts = [], [], Counter()  # kept: the indices of the pairs kept
        for index, ((context, speakers, _), response) in enumerate(zip(pairs, responses["input_ids"])):
            words = [t for t in response if t == unk or t not in specials]
            if all(t == unk for t in words):
                self.counts["responses of unknown words only dropped"] += 1
                continue
            context_ids = tokenizer(context, truncation=True, max_length=max_length)["input_ids"]
            self.items.append((context_ids, speakers, response))
            self.kept.append(index)
        if not self.items:
            raise ValueError("no (context, response) pair is left after dropping responses of unknown words only")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def dialogue_collate(items, pad_token_id):
    """A batch for BNCVAEForConditionalGeneration from DialogueDataset items: the context tensors of
    `pad_contexts`, input_ids / attention_mask (B, T) of the responses (right-padded) and labels = input_ids."""
    context_ids, speakers, responses = zip(*items)
    context = pad_contexts(list(context_ids), list(speakers), pad_token_id)
    input_ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(r) for r in responses], batch_first=True, padding_value=pad_token_id
    )
    lengths = torch.tensor([len(r) for r in responses])
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    names = ("context_input_ids", "context_attention_mask", "context_speakers")
    return {**dict(zip(names, context)), "input_ids": input_ids, "attention_mask": attention_mask, "labels": input_ids}
