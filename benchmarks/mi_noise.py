"""Sampling noise of the mutual-information estimator on trained models' test posteriors.

    python benchmarks/mi_noise.py training/reproduction/models/vae training/reproduction/models/bnvae_0.6

For each model folder: encode the Brown test split, then run He et al. (2019)'s MI estimator
(`hf_bnvae.evaluation.mutual_information`) with --seeds different noise seeds, with one z per
sentence (He et al.) and with --samples_per_sentence; prints the mean, standard deviation and range
of the estimates, in nats.
"""

import argparse

import torch

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, read_text_file, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import mutual_information


@torch.no_grad()
def posteriors(model, tokenizer, texts, batch_size=64):
    """(mu, logvar), each (N, n), of the sentences in `texts`."""
    batches = sentence_loader(tokenize_texts(tokenizer, texts), tokenizer, batch_size)
    parts = [model.encode_posterior(batch["input_ids"], batch["attention_mask"]) for batch in batches]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="save_pretrained folders or hub ids")
    parser.add_argument("--test_file", default=str(BROWN_DIR / "test.txt"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--samples_per_sentence", type=int, default=10)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    texts = read_text_file(args.test_file).texts
    print(f"MI estimates over {args.seeds} noise seeds, {len(texts)} sentences of {args.test_file} (nats)")
    for name in args.models:
        model, tokenizer = load_pretrained(name)
        mu, logvar = posteriors(model, tokenizer, texts)
        for samples in sorted({1, args.samples_per_sentence}):
            values = torch.tensor(
                [
                    mutual_information(mu, logvar, torch.Generator().manual_seed(s), samples)[0]
                    for s in range(args.seeds)
                ]
            )
            print(
                f"{name}, {samples} z per sentence: mean {values.mean():.3f}, std {values.std():.3f}, "
                f"min {values.min():.3f}, max {values.max():.3f}"
            )


if __name__ == "__main__":
    main()
