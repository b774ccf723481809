"""Word-level tokenizer: whitespace-split, lower-cased words, `<pad> <s> </s> <unk>`, built from a corpus.

The paper's corpora are already tokenised and lower-cased, so a word vocabulary is what the
reference code uses. The vocabulary is trained by the `tokenizers` library's WordLevelTrainer
(words ranked by frequency, ties alphabetical, so the same corpus always gives the same ids). The
result is a `PreTrainedTokenizerFast`: `save_pretrained` writes tokenizer.json next to the model
and `AutoTokenizer.from_pretrained` loads it back.
"""

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer
from transformers import PreTrainedTokenizerFast

# ids 0-3, in this order
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def build_word_tokenizer(texts, vocab_size=None, min_frequency=1, lowercase=True):
    """Tokenizer whose vocabulary is the special tokens (ids 0-3) then the corpus words by frequency.

    texts: iterable of sentences (str). vocab_size caps the total size (special tokens included);
    words seen fewer than min_frequency times map to `<unk>`. Encoding adds `<s>` and `</s>` around
    every sentence.
    """
    specials = list(SPECIAL_TOKENS.values())
    if vocab_size is not None and vocab_size <= len(specials):
        raise ValueError(f"vocab_size={vocab_size} leaves no room for words after the {len(specials)} special tokens")
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency} must be >= 1")
    backend = Tokenizer(WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.normalizer = normalizers.Lowercase() if lowercase else None
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = WordLevelTrainer(
        vocab_size=vocab_size or 2**31 - 1, min_frequency=min_frequency, special_tokens=specials, show_progress=False
    )
    # A corpus may hold the special tokens as words (PTB writes `<unk>` for rare words): they are not
    # counted, so they keep ids 0-3 and the words' ids stay contiguous.
    reserved = set(specials)
    backend.train_from_iterator(
        (" ".join(w for w in (t.lower() if lowercase else t).split() if w not in reserved) for t in texts), trainer
    )
    if backend.get_vocab_size() == len(specials):
        raise ValueError(f"cannot build a vocabulary: no word occurs {min_frequency}+ times (is the corpus empty?)")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[(token, backend.token_to_id(token)) for token in ("<s>", "</s>")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, padding_side="right", **SPECIAL_TOKENS)


__all__ = ["SPECIAL_TOKENS", "build_word_tokenizer"]
