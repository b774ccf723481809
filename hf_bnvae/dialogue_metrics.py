"""Response-generation metrics of Zhao et al. (2017) with one reference: for each context, N sampled
hypotheses h_1..h_N are scored against the reference r with a similarity s; precision = mean_i s(r, h_i)
and recall = max_i s(r, h_i); both are averaged over the contexts.

- BLEU-n (n = 1..4): sacrebleu's sentence BLEU with max order n, its `exp` smoothing (sacrebleu's
  sentence-level default) and effective order (a hypothesis shorter than n words is scored on the orders
  it has), on the already tokenised text; in percent (0-100).
- A-bow / E-bow: cosine similarity of bag-of-words embeddings, the average of the word vectors (A-bow)
  or their extrema (E-bow: per dimension, the value of largest magnitude), words without a vector
  skipped, 0 when either side has none. Vectors: any word2vec-format file, or `train_word_vectors`
  (gensim word2vec on the training split; GloVe cannot be downloaded here).
- distinct-1 / distinct-2: distinct n-grams / all n-grams over every hypothesis of every context.

Needs the `dialogue` extra (sacrebleu, gensim).
"""

import numpy as np
from sacrebleu.metrics import BLEU


def bleu_scorers(max_order=4):
    return [
        BLEU(max_ngram_order=n, effective_order=True, tokenize="none", smooth_method="exp")
        for n in range(1, max_order + 1)
    ]


def sentence_bleu(scorers, hypothesis, reference):
    """BLEU-1..len(scorers) of one hypothesis against one reference, in percent."""
    return [scorer.sentence_score(hypothesis, [reference]).score for scorer in scorers]


def bow_embeddings(words, vectors):
    """(average, extrema) of the vectors of the words that have one, or None when none has."""
    known = [vectors[w] for w in words if w in vectors]
    if not known:
        return None
    stacked = np.stack(known)
    extrema = np.where(stacked.max(0) >= -stacked.min(0), stacked.max(0), stacked.min(0))
    return stacked.mean(0), extrema


def cosine(a, b):
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 0 else 0.0


def distinct(hypotheses, n):
    """Distinct n-grams / all n-grams over the hypotheses (lists of words); 0 when there is none."""
    grams = [tuple(words[i : i + n]) for words in hypotheses for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def response_metrics(samples, references, vectors):
    """Zhao et al.'s metrics. samples: per context a list of N hypothesis strings; references: one string per
    context; vectors: a mapping word -> vector (gensim KeyedVectors). Returns a dict of floats and lists:
    bleu_precision / bleu_recall (BLEU-1..4, percent), a_bow_precision, a_bow_recall, e_bow_precision,
    e_bow_recall, distinct_1, distinct_2, num_contexts, num_samples."""
    if len(samples) != len(references) or not references:
        raise ValueError(f"{len(samples)} sample lists for {len(references)} references (need as many, and >= 1)")
    if any(not hypotheses for hypotheses in samples):
        raise ValueError("every context needs at least one sampled hypothesis")
    scorers = bleu_scorers()
    totals = {key: np.zeros(4) for key in ("bleu_precision", "bleu_recall")}
    bow = {key: 0.0 for key in ("a_bow_precision", "a_bow_recall", "e_bow_precision", "e_bow_recall")}
    for hypotheses, reference in zip(samples, references):
        bleu = np.array([sentence_bleu(scorers, h, reference) for h in hypotheses])  # (N, 4)
        totals["bleu_precision"] += bleu.mean(0)
        totals["bleu_recall"] += bleu.max(0)
        ref = bow_embeddings(reference.split(), vectors)
        scores = np.zeros((len(hypotheses), 2))
        for i, h in enumerate(hypotheses):
            hyp = bow_embeddings(h.split(), vectors)
            if ref is not None and hyp is not None:
                scores[i] = cosine(ref[0], hyp[0]), cosine(ref[1], hyp[1])
        bow["a_bow_precision"] += scores[:, 0].mean()
        bow["a_bow_recall"] += scores[:, 0].max()
        bow["e_bow_precision"] += scores[:, 1].mean()
        bow["e_bow_recall"] += scores[:, 1].max()
    count = len(references)
    words = [h.split() for hypotheses in samples for h in hypotheses]
    return {
        **{key: (value / count).tolist() for key, value in totals.items()},
        **{key: value / count for key, value in bow.items()},
        "distinct_1": distinct(words, 1),
        "distinct_2": distinct(words, 2),
        "num_contexts": count,
        "num_samples": len(words),
    }


def train_word_vectors(sentences, vector_size=200, seed=0, workers=1):
    """gensim word2vec (skip-gram, window 5, min count 1, 5 epochs) on tokenised sentences (lists of
    words); workers=1 makes it deterministic for the seed. Returns its KeyedVectors."""
    from gensim.models import Word2Vec

    model = Word2Vec(sentences, vector_size=vector_size, window=5, min_count=1, sg=1, seed=seed, workers=workers)
    return model.wv


def load_word_vectors(path):
    """Vectors of a word2vec-format file (text, or binary when the name ends in .bin)."""
    from gensim.models import KeyedVectors

    return KeyedVectors.load_word2vec_format(str(path), binary=str(path).endswith(".bin"))
