"""The calibration baseline of the classification tables: a bag-of-words logistic regression.

    python -m pip install -e '.[classification]'
    python training/bag_of_words.py --train_file training/data/yelp/train.txt \
        --validation_file training/data/yelp/valid.txt --test_file training/data/yelp/test.txt \
        --max_train_samples 100 --seed 1

Word 1- and 2-grams counted by scikit-learn's CountVectorizer (the texts are already tokenised: tokens
are split on whitespace), a logistic regression (L2, lbfgs), and its inverse regularisation strength C
chosen on the validation set (highest accuracy; ties: the smaller C) from `C_GRID`. The label budget is
the same stratified draw as train_classifier.py's for the same seed, so the rows of a table compare
classifiers trained on the same sentences. Accuracies are fractions.
"""

import argparse
import json

from train_classifier import labelled, stratified_subset  # training/ is on the path

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def bag_of_words(train, valid, test, c_grid=C_GRID):
    """{"valid_accuracy", "test_accuracy", "C"} of the C in c_grid with the best validation accuracy;
    train, valid, test: (texts, label ids) pairs."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    if len(set(train[1])) < 2:
        raise ValueError(f"the training labels hold one class only ({sorted(set(train[1]))}): nothing to separate")
    vectorizer = CountVectorizer(ngram_range=(1, 2), token_pattern=None, tokenizer=str.split, lowercase=False)
    features = vectorizer.fit_transform(train[0])
    best = None
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=2000).fit(features, train[1])
        accuracy = model.score(vectorizer.transform(valid[0]), valid[1])
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    accuracy, c, model = best
    return {"valid_accuracy": accuracy, "test_accuracy": model.score(vectorizer.transform(test[0]), test[1]), "C": c}


def run(train_file, validation_file, test_file, budget, seed):
    """bag_of_words on the label budget (None: the whole pool) drawn with `seed` from `train_file`."""
    pool_texts, pool_labels, label2id = labelled(train_file)
    chosen = stratified_subset(pool_labels, budget or len(pool_labels), seed)
    train = ([pool_texts[i] for i in chosen], [pool_labels[i] for i in chosen])
    valid = labelled(validation_file, label2id)[:2]
    test = labelled(test_file, label2id)[:2]
    return bag_of_words(train, valid, test)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_file", required=True, help="label<TAB>text lines: the labelled pool")
    p.add_argument("--validation_file", required=True)
    p.add_argument("--test_file", required=True)
    p.add_argument("--max_train_samples", type=int, default=None, help="the label budget (default: the whole pool)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.max_train_samples is not None and args.max_train_samples < 1:
        p.error(f"--max_train_samples {args.max_train_samples}: must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    result = run(args.train_file, args.validation_file, args.test_file, args.max_train_samples, args.seed)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
