"""Word-level tokenizer: whitespace-split words, `<pad> <s> </s> <unk>`, built from a corpus.

The paper's corpora are already tokenised and lower-cased, so a word vocabulary is what the
reference code uses. The result is a `PreTrainedTokenizerFast`: `save_pretrained` writes
tokenizer.json next to the model and `AutoTokenizer.from_pretrained` loads it back.
"""

from collections import Counter

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def build_word_tokenizer(texts, vocab_size=None, min_frequency=1, lowercase=True):
    """Tokenizer whose vocabulary is the special tokens (ids 0-3) then the corpus words by frequency.

    texts: iterable of sentences (str). vocab_size caps the total size (special tokens included);
    words seen fewer than min_frequency times map to `<unk>`. Ties are broken alphabetically so the
    same corpus always gives the same ids. Encoding adds `<s>` and `</s>` around every sentence.
    """
    if vocab_size is not None and vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room for words after the {len(SPECIAL_TOKENS)} special tokens")
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency} must be >= 1")
    counts = Counter()
    for text in texts:
        counts.update((text.lower() if lowercase else text).split())
    if not counts:
        raise ValueError("cannot build a vocabulary from an empty corpus (no words found)")
    specials = list(SPECIAL_TOKENS.values())
    words = [w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c >= min_frequency and w not in specials]
    if vocab_size is not None:
        words = words[: vocab_size - len(specials)]
    vocab = {token: i for i, token in enumerate(specials + words)}

    backend = Tokenizer(WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.normalizer = normalizers.Lowercase() if lowercase else None
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, padding_side="right", **SPECIAL_TOKENS)
    return tokenizer


__all__ = ["build_word_tokenizer", "SPECIAL_TOKENS"]
