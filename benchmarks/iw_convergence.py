"""How far the importance-weighted NLL is from converged in K, on trained models' test texts.

    python benchmarks/iw_convergence.py training/reproduction/converged_models/bnvae_0.6_seed42

For each model folder: the IW-NLL (Burda et al., 2016; `hf_bnvae.evaluation.evaluate_language_model`)
of the same --num_texts test texts (a seeded random sample of --test_file) at each K of --iw_samples, in
nats per text. The estimate is an upper bound on the NLL in expectation and falls toward it as K grows;
its bias falls about as 1/K once K is large (Burda et al.; Nowozin, 2018), so the fall between the two
largest K, K_a -> K_b, from a to b nats, leaves about (a - b) / (K_b / K_a - 1) above the NLL at K_b,
which is printed as "left at K". A language model without a latent has no K: its figures are equal.
"""

import argparse

import torch
from common import sample_texts

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, sentence_loader, tokenize_texts
from hf_bnvae.evaluation import evaluate_language_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="save_pretrained folders or hub ids")
    parser.add_argument("--test_file", default=str(BROWN_DIR / "test.txt"))
    parser.add_argument("--num_texts", type=int, default=200, help="test texts, a seeded random sample")
    parser.add_argument("--iw_samples", type=int, nargs="+", default=[5, 50, 500], help="the K to compare")
    parser.add_argument("--sample_seed", type=int, default=0, help="seed of the sample of texts")
    parser.add_argument("--seed", type=int, default=0, help="seed of the z draws")
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.num_texts < 1 or min(args.iw_samples) < 1 or args.batch_size < 1:
        parser.error("--num_texts, --iw_samples and --batch_size must be at least 1")
    args.iw_samples = sorted(set(args.iw_samples))
    return args


def left_at_largest(nll_by_k):
    """What the IW-NLL at the largest K still lies above the NLL if its bias falls as 1/K, from the fall
    between the two largest K (nats per text); None with one K."""
    if len(nll_by_k) < 2:
        return None
    (k_a, a), (k_b, b) = sorted(nll_by_k.items())[-2:]
    return (a - b) / (k_b / k_a - 1)


@torch.no_grad()
def iw_nll_by_k(model, tokenizer, texts, iw_samples, seed=0, batch_size=16):
    """{K: IW-NLL (nats per text, mean over `texts`)} of one model at each K of `iw_samples`."""
    data = tokenize_texts(tokenizer, texts)
    return {
        k: evaluate_language_model(model, sentence_loader(data, tokenizer, batch_size), iw_samples=k, seed=seed)["nll"]
        for k in iw_samples
    }


def main(argv=None):
    args = parse_args(argv)
    texts = sample_texts(args.test_file, args.num_texts, args.sample_seed)
    print(f"IW-NLL of {args.num_texts} texts of {args.test_file} (nats per text) at K = {args.iw_samples}")
    results = {}
    for name in args.models:
        model, tokenizer = load_pretrained(name)
        results[name] = iw_nll_by_k(model, tokenizer, texts, args.iw_samples, args.seed, args.batch_size)
        left = left_at_largest(results[name])
        figures = ", ".join(f"K = {k}: {v:.3f}" for k, v in results[name].items())
        print(f"{name}: {figures}" + (f"; left at K = {args.iw_samples[-1]}: {left:.3f}" if left is not None else ""))
    return results


if __name__ == "__main__":
    main()
