"""Where in a text a latent code helps: the decoder's saving over a language model, by token position.

    python benchmarks/saving_by_position.py training/reproduction/converged_models/lm_seed42 training/reproduction/converged_models/bnvae_0.6_seed42

For --num_texts test texts (a seeded random sample of --test_file): the LM's -log p(w_t | w_<t) minus the
latent model's -log p(w_t | w_<t, z) with z the text's own posterior mean, in nats, averaged per token
over the tokens at positions 1-5, 6-10, 11-20, 21-40, 41-80 and 81 on (the end token included), and
summed per text. The total is what the code saves the decoder on these texts (converged.py's LM NLL
minus `nll_own_z`, on the same texts); the KL is what it costs. The two models must share a tokenizer.
"""

import argparse

import torch
from common import sample_texts

from hf_bnvae import load_pretrained
from hf_bnvae.data import BROWN_DIR, sentence_loader, tokenize_texts
from hf_bnvae.modeling_bnvae import shifted_token_nll

BUCKETS = ((1, 5), (6, 10), (11, 20), (21, 40), (41, 80), (81, None))  # token positions, 1-based, inclusive


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lm", help="the language model (save_pretrained folder or hub id)")
    parser.add_argument("model", help="the latent model, with the LM's tokenizer")
    parser.add_argument("--test_file", default=str(BROWN_DIR / "test.txt"))
    parser.add_argument("--num_texts", type=int, default=1000, help="test texts, a seeded random sample")
    parser.add_argument("--sample_seed", type=int, default=0)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    if args.num_texts < 1 or args.batch_size < 1:
        parser.error("--num_texts and --batch_size must be at least 1")
    return args


def token_nll(model, input_ids, attention_mask, latent=None):
    """-log p(w_t | w_<t[, z]) of every target token, nats, (B, T - 1), 0 at padding (the models' own
    shifted_token_nll), and the mask of the tokens that count, (B, T - 1)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, latent=latent).logits
    return shifted_token_nll(logits, input_ids, attention_mask)


@torch.no_grad()
def saving_by_position(lm, model, tokenizer, texts, batch_size=32):
    """{"buckets": [{"positions": (first, last or None), "tokens", "per_token", "per_text"}], "per_text": the
    total saving per text, "texts": N}: LM token NLL minus the latent model's given z = the posterior mean,
    nats (positive: the code helps)."""
    sums, counts = torch.zeros(len(BUCKETS), dtype=torch.float64), torch.zeros(len(BUCKETS), dtype=torch.long)
    lm.eval()
    model.eval()
    for batch in sentence_loader(tokenize_texts(tokenizer, texts), tokenizer, batch_size):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        mu, _ = model.encode_posterior(ids, mask)
        plain, real = token_nll(lm, ids, mask)
        saving = plain - token_nll(model, ids, mask, mu)[0]
        position = torch.arange(1, saving.shape[1] + 1)[None, :].expand_as(saving)
        for i, (first, last) in enumerate(BUCKETS):
            chosen = real & (position >= first) & (position <= (last or saving.shape[1]))
            sums[i] += saving[chosen].double().sum()
            counts[i] += chosen.sum()
    buckets = [
        {"positions": b, "tokens": int(c), "per_token": float(s / c) if c else None, "per_text": float(s) / len(texts)}
        for b, s, c in zip(BUCKETS, sums, counts)
    ]
    return {"buckets": buckets, "per_text": float(sums.sum()) / len(texts), "texts": len(texts)}


def main(argv=None):
    args = parse_args(argv)
    texts = sample_texts(args.test_file, args.num_texts, args.sample_seed)
    lm, tokenizer = load_pretrained(args.lm)
    model, model_tokenizer = load_pretrained(args.model)
    if model_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"{args.lm} and {args.model} have different vocabularies: the savings would not compare")
    result = saving_by_position(lm, model, tokenizer, texts, args.batch_size)
    print(f"{args.model} against {args.lm}, {len(texts)} texts of {args.test_file}: saving in nats")
    print("| positions | tokens | per token | per text |\n|---|---|---|---|")
    for b in result["buckets"]:
        first, last = b["positions"]
        per_token = f"{b['per_token']:+.3f}" if b["per_token"] is not None else "-"
        print(f"| {first}-{last or ''} | {b['tokens']} | {per_token} | {b['per_text']:+.2f} |")
    print(f"| all | | | {result['per_text']:+.2f} |")
    return result


if __name__ == "__main__":
    main()
