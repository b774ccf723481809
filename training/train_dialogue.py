"""Train a CVAE, CVAE + bag-of-words loss or BN-CVAE for dialogue responses, then test it.

    accelerate launch training/train_dialogue.py --method bncvae --gamma 0.6 --output_dir outputs/bncvae-chitchat

Data: conversations in the JSON-lines format of `hf_bnvae.dialogue_data` (default: the chitchat splits
of `training/prepare_chitchat.py`); every turn after the first is a response to the turns before it.
The recipe of Zhao et al. (2017): Adam (lr 1e-3), batch 30, gradient norm clipped at 5, the KL(q || p)
weight raised linearly from 0 to 1 over --kl_warmup_steps (10,000 in the paper on Switchboard's ~200k
pairs; default here 2,000, about two epochs of --max_train_samples 30,000), and the epoch with the
lowest validation loss (KL weight 1, z drawn from the recognition network with a fixed seed) kept.
Test: the reference response's per-word perplexity (words + `</s>`) with z drawn from q(z | c, x), which has
seen the reference (`ppl_posterior`, the paper's figure), and the ELBO's bound on it, which has not
(`ppl_elbo`); the KL; then for --max_test_contexts test contexts (a seeded random sample), --num_samples responses each
from z ~ p(z | c) (greedy decoding per z, `METRIC_DECODING`), scored with `hf_bnvae.dialogue_metrics` (BLEU-1..4 precision / recall, A-bow and E-bow with
word2vec vectors trained on the training split unless --word_vectors gives a file, distinct-1/2).
Writes the model (save_pretrained), all_results.json (metrics, history, sample responses).
"""

import argparse
import logging
import math
import random
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from hf_bnvae import BNCVAEConfig, BNCVAEForConditionalGeneration, build_word_tokenizer
from hf_bnvae.checkpoints import fingerprint
from hf_bnvae.configuration_bncvae import DIALOGUE_PRESETS
from hf_bnvae.dialogue_data import DialogueDataset, dialogue_collate, dialogue_pairs, read_conversations
from hf_bnvae.evaluation import perplexity
from hf_bnvae.methods import METHODS, methods_of, resolve_method
from hf_bnvae.saving import recorded_arguments
from hf_bnvae.trainer_utils import (
    BestWeightsKeeper,
    PlateauRule,
    add_training_arguments,
    average_bn_statistics,
    check_paths,
    check_training_arguments,
    checkpoint_epoch,
    make_accelerator,
    optimizer_step,
    parse_config_overrides,
    resume_state,
    run_definition,
    save_run,
    warn_unfinished_warmup,
)

DATA = Path(__file__).resolve().parent / "data" / "chitchat"
LOWER_BOUNDS = {
    "gamma": (0, True, "the BN scale of BN-CVAE"),
    "vocab_size": (5, False, "tokens, the 4 special ones included"),
    "max_train_samples": (2, False, "pairs"),
    "max_eval_samples": (1, False, "pairs"),
    "kl_warmup_steps": (0, False, "steps (0: KL weight 1 from the start)"),
    "num_samples": (1, False, "responses per test context"),
    "max_test_contexts": (0, False, "contexts (0: skip the sampled metrics)"),
}
logger = logging.getLogger(__name__)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train_file", default=str(DATA / "train.jsonl"))
    p.add_argument("--validation_file", default=str(DATA / "valid.jsonl"))
    p.add_argument("--test_file", default=str(DATA / "test.jsonl"))
    p.add_argument("--method", choices=methods_of("bncvae"), default="bncvae", help="hf_bnvae.methods' table")
    gamma = METHODS["bncvae"].flags["gamma"]
    p.add_argument("--gamma", type=float, default=None, help=f"bncvae: {gamma.help} (default {gamma.default})")
    p.add_argument("--preset", choices=sorted(DIALOGUE_PRESETS), default="small")
    p.add_argument(
        "--config_overrides",
        default=None,
        help="config fields over the preset, as in transformers' run_clm.py: embedding_size=64,latent_size=16",
    )
    p.add_argument("--vocab_size", type=int, default=10000)
    p.add_argument("--max_context_turns", type=int, default=10)
    p.add_argument("--max_utterance_length", type=int, default=40, help="words kept per utterance")
    p.add_argument("--max_train_samples", type=int, default=None, help="the first N training pairs")
    p.add_argument("--max_eval_samples", type=int, default=None, help="the first N validation and test pairs")
    p.add_argument("--kl_warmup_steps", type=int, default=2000)
    p.add_argument("--num_samples", type=int, default=10, help="responses drawn per test context")
    p.add_argument("--max_test_contexts", type=int, default=500, help="test contexts for the sampled metrics")
    p.add_argument("--max_new_tokens", type=int, default=40)
    p.add_argument("--word_vectors", default=None, help="word2vec-format vectors for A-bow / E-bow")
    add_training_arguments(
        p, per_device_train_batch_size=30, learning_rate=1e-3, num_train_epochs=5, plateau_max_decays=0
    )  # Zhao et al.'s Adam, batch 30; the best epoch kept, the lr never decayed
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_training_arguments(parser, args, LOWER_BOUNDS, mid_epoch_checkpoints=False)
    check_paths(parser, args)
    try:
        args.recipe = resolve_method(args.method, gamma=args.gamma)
    except ValueError as error:
        parser.error(str(error))
    args.gamma = args.recipe.config["gamma"]
    try:
        args.overrides = parse_config_overrides(args.config_overrides, BNCVAEConfig)
    except ValueError as error:
        parser.error(str(error))
    for flag in ("train_file", "validation_file", "test_file", "word_vectors"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            hint = " (python training/prepare_chitchat.py makes the chitchat splits)" if flag != "word_vectors" else ""
            parser.error(f"--{flag} {path}: file not found{hint}")
    return args


def load_pairs(path, args, limit):
    conversations, counts = read_conversations(path)
    pairs, truncated = dialogue_pairs(conversations, args.max_context_turns)
    counts.update(truncated)
    logger.info(
        "%s: %d conversations, %d pairs%s; %s", path, len(conversations), len(pairs),
        f" (first {limit} used)" if limit and limit < len(pairs) else "",
        ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "nothing dropped",
    )  # fmt: skip
    return pairs[:limit] if limit else pairs


def loader(dataset, batch_size, pad_token_id, generator=None):
    """Batches of pairs, shuffled by `generator` when given (a training loader; its state is the shuffle
    of the next epochs, kept in checkpoints); a training epoch never ends on a batch of one (BN cannot
    normalise it)."""
    shuffle = generator is not None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=shuffle and len(dataset) % batch_size == 1,
        collate_fn=lambda items: dialogue_collate(items, pad_token_id),
    )


@torch.no_grad()
def evaluate_pairs(model, batches, accelerator, sample_latent, seed=0):
    """Per-response means over the pairs of all processes (nats): the loss at KL weight 1, reconstruction,
    KL(q || p); two per-word perplexities and the pair count. `ppl_posterior` decodes the reference with
    z from q(z | c, x), which has seen that reference (the figure the paper reports, favouring the latent
    models); `ppl_elbo` = exp((reconstruction + KL) / words), the upper bound on the perplexity of
    p(x | c) the ELBO gives, which pays for what z carries about the reference. The per-pair figures are
    gathered with accelerate's gather_for_metrics, which drops the pairs repeated to even out the last
    batches."""
    model.eval()
    torch.manual_seed(seed)
    gamma = accelerator.unwrap_model(model).config.gamma
    rows = []
    for batch in batches:
        out = model(**batch, sample_latent=sample_latent)
        loss = out.reconstruction_loss + out.kl  # each pair's loss at KL weight 1, as in the model's mean
        if out.bow_loss is not None:
            loss = loss + out.bow_loss
        if gamma > 0:
            loss = loss + out.prior_kl
        per_pair = torch.stack([loss, out.reconstruction_loss, out.kl, out.num_tokens.float()], dim=-1)
        rows.append(accelerator.gather_for_metrics(per_pair.double()))
    loss, reconstruction, kl, tokens = torch.cat(rows).sum(0).tolist()
    pairs = sum(len(r) for r in rows)
    return {
        "loss": loss / pairs,
        "reconstruction": reconstruction / pairs,
        "kl": kl / pairs,
        "ppl_posterior": perplexity(reconstruction, tokens),
        "ppl_elbo": perplexity(reconstruction + kl, tokens),
        "num_pairs": pairs,
    }


# How the sampled responses are decoded for the metrics: greedy per z, as Zhao et al., without the model's
# no-repeated-trigram default; <pad>, <s> and <unk> stay suppressed (an <unk> would vanish from the text).
METRIC_DECODING = {"do_sample": False, "num_beams": 1, "no_repeat_ngram_size": 0}


def sampled_metrics(model, tokenizer, pairs, args, vectors):
    """Zhao et al.'s metrics over --max_test_contexts test pairs drawn with the seed, and five examples."""
    from hf_bnvae.dialogue_metrics import response_metrics

    chosen = random.Random(args.seed).sample(pairs, min(args.max_test_contexts, len(pairs)))
    samples = []
    for start in range(0, len(chosen), 16):
        part = chosen[start : start + 16]
        samples += model.sample_responses(
            [context for context, _, _ in part],
            tokenizer,
            num_samples=args.num_samples,
            speakers=[speakers for _, speakers, _ in part],
            max_new_tokens=args.max_new_tokens,
            **METRIC_DECODING,
        )
    metrics = response_metrics(samples, [response for _, _, response in chosen], vectors)
    examples = [
        {"context": context, "reference": response, "samples": hypotheses}
        for (context, _, response), hypotheses in list(zip(chosen, samples))[:5]
    ]
    return metrics, examples


def word_vectors(args, pairs):
    from hf_bnvae.dialogue_metrics import load_word_vectors, train_word_vectors

    if args.word_vectors:
        return load_word_vectors(args.word_vectors)
    texts = {text for context, _, response in pairs for text in (*context, response)}
    return train_word_vectors([text.split() for text in sorted(texts)], seed=args.seed)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    accelerator = make_accelerator(args)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    logging.getLogger("gensim").setLevel(logging.WARNING)
    set_seed(args.seed)
    train_pairs = load_pairs(args.train_file, args, args.max_train_samples)
    valid_pairs = load_pairs(args.validation_file, args, args.max_eval_samples)
    test_pairs = load_pairs(args.test_file, args, args.max_eval_samples)
    turns = [text for context, _, response in train_pairs for text in (*context, response)]
    tokenizer = build_word_tokenizer(turns, vocab_size=args.vocab_size)
    config = BNCVAEConfig.from_preset(
        args.preset,
        vocab_size=len(tokenizer),
        **args.recipe.config,
        max_context_turns=args.max_context_turns,
        max_utterance_length=args.max_utterance_length,
        **args.overrides,
    )
    model = BNCVAEForConditionalGeneration(config)
    datasets = {
        name: DialogueDataset(pairs, tokenizer, args.max_utterance_length)
        for name, pairs in (("train", train_pairs), ("valid", valid_pairs), ("test", test_pairs))
    }
    for name, data in datasets.items():
        if data.counts:
            logger.info("%s: %s", name, ", ".join(f"{n} {reason}" for reason, n in data.counts.items()))
    pad = tokenizer.pad_token_id
    shuffle = torch.Generator().manual_seed(args.seed)
    train_loader = loader(datasets["train"], args.per_device_train_batch_size, pad, generator=shuffle)
    valid_loader = loader(datasets["valid"], args.per_device_eval_batch_size, pad)
    test_loader = loader(datasets["test"], args.per_device_eval_batch_size, pad)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    model, optimizer, train_loader, valid_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, valid_loader, test_loader
    )
    accelerator.print(
        f"{args.recipe.label}: {len(datasets['train'])} training pairs, "
        f"vocabulary {len(tokenizer)}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    warn_unfinished_warmup(accelerator, args.kl_warmup_steps, args.num_train_epochs * steps_per_epoch)
    unwrapped = accelerator.unwrap_model(model)
    keeper = BestWeightsKeeper(PlateauRule.from_args(args))
    train_items = datasets["train"].items  # (context ids, speakers, response ids) per pair
    run = run_definition(
        accelerator,
        args,
        tokenizer,
        config,
        train_pairs=len(train_items),
        train_data=fingerprint(train_items),
        method=args.method,
    )
    state = {"epoch": 0, "optimizer_steps": 0, "history": [], "finished": False, "train_seconds": 0.0}
    resumed = resume_state(accelerator, args, run)
    if resumed is not None:
        keeper.load_state_dict({key: resumed.pop(key) for key in ("plateau", "best_weights")})
        shuffle.set_state(resumed.pop("shuffle")["state"])
        state.update(resumed)
    history = state["history"]
    while state["epoch"] < args.num_train_epochs and not state["finished"]:
        tick, epoch = time.perf_counter(), state["epoch"]
        model.train()
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}", disable=not accelerator.is_local_main_process)
        for batch in progress:
            step = state["optimizer_steps"]
            kl_weight = min(1.0, step / args.kl_warmup_steps) if args.kl_warmup_steps else 1.0
            with accelerator.accumulate(model):
                out = model(**batch, kl_weight=kl_weight)
                state["optimizer_steps"] += optimizer_step(accelerator, model, optimizer, out.loss, args.max_grad_norm)
            progress.set_postfix(
                loss=f"{out.loss.item():.2f}", kl=f"{out.kl.mean().item():.2f}", kl_w=f"{kl_weight:.2f}"
            )
        average_bn_statistics(model, accelerator)  # every process evaluates and keeps the same model
        valid = evaluate_pairs(model, valid_loader, accelerator, sample_latent=True, seed=args.seed)
        lr = optimizer.param_groups[0]["lr"]
        action = keeper.update(unwrapped, optimizer, epoch, valid["loss"])
        history.append(
            {
                "epoch": epoch,
                "step": state["optimizer_steps"],
                "lr": lr,
                **{f"valid_{k}": v for k, v in valid.items()},
                "plateau_action": action,
            }
        )
        accelerator.print(
            f"epoch {epoch + 1}: valid loss {valid['loss']:.3f}, ppl (z from q) {valid['ppl_posterior']:.2f}, ppl (ELBO) {valid['ppl_elbo']:.2f}, KL {valid['kl']:.3f} [{action}]"
        )
        state["epoch"], state["finished"] = epoch + 1, action in ("stop", "diverged")
        state["train_seconds"] += time.perf_counter() - tick
        shuffle_state = {"state": shuffle.get_state()}
        checkpoint_epoch(
            accelerator, args, state["optimizer_steps"], {**state, **keeper.state_dict(), "shuffle": shuffle_state}, run
        )
    keeper.restore_best(unwrapped)
    best, step = keeper.rule.best_epoch, state["optimizer_steps"]
    test = evaluate_pairs(model, test_loader, accelerator, sample_latent=True, seed=args.seed)
    results = {
        "task": "dialogue",
        "method": args.method,
        "method_label": args.recipe.label,
        "gamma": config.gamma,
        "use_bow": config.use_bow,
        "best_epoch": best,
        "steps": step,
        "train_pairs": len(datasets["train"]),
        **{f"test_{k}": v for k, v in test.items()},
        "history": history,
        "train_seconds": state["train_seconds"],
        "training_args": recorded_arguments(args),  # the parsed overrides and recipe are not JSON: left out
    }
    if accelerator.is_main_process:
        if args.max_test_contexts:
            kept = [test_pairs[i] for i in datasets["test"].kept]  # responses of unknown words only are not references
            metrics, examples = sampled_metrics(
                unwrapped.eval(), tokenizer, kept, args, word_vectors(args, train_pairs)
            )
            decoding = "greedy per z ~ p(z|c), <pad> <s> <unk> suppressed, no n-gram blocking"
            results.update({f"test_{k}": v for k, v in metrics.items()}, examples=examples, decoding=decoding)
        results["seconds"] = time.perf_counter() - start
    output = save_run(accelerator, unwrapped, tokenizer, args, results)
    accelerator.print(
        f"best epoch {best + 1}: test ppl (z from q) {test['ppl_posterior']:.2f}, ppl (ELBO) {test['ppl_elbo']:.2f}, KL {test['kl']:.3f}; saved to {output}"
    )
    return unwrapped, results


if __name__ == "__main__":
    main()
