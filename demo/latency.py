"""How long a user of the explorer (demo/app.py) waits for each action, on a trained checkpoint.

    python demo/latency.py outputs/bnvae-brown

Loads the checkpoint as the demo does (`demo/explorer.Explorer`: Auto classes with trust_remote_code,
the latent map's 300 sentences encoded at start-up), then times each action of its tabs --repeats
times on the same inputs and prints the median and the slowest in seconds, with the start-up time.
Language models: reconstruct, sample, interpolate, latent map, diagnostics (the figure, drawn to PNG); classifiers:
classify; BN-CVAE: respond. The first call of each action is a warm-up and not counted.
"""

import argparse
import io
import statistics
import time

import torch
from explorer import Explorer  # demo/, this script's folder, is on the path

SENTENCE = "the jury said it did find that the city 's election was conducted ."
OTHER = "he was a good man , and he was not afraid ."


def actions(explorer):
    """{name: zero-argument callable} of the actions the checkpoint's tabs offer."""
    if explorer.kind == "classifier":
        return {"classify": lambda: explorer.classify(SENTENCE)}
    if explorer.kind == "dialogue":
        return {"respond (5 samples)": lambda: explorer.respond(f"{SENTENCE}\n{OTHER}")}
    return {
        "reconstruct": lambda: explorer.reconstruct(SENTENCE),
        "sample (5 sentences)": lambda: explorer.sample(5),
        "interpolate (5 steps)": lambda: explorer.interpolate(SENTENCE, OTHER),
        "latent map": lambda: explorer.latent_map(SENTENCE),
        "diagnostics figure": lambda: rendered(explorer.diagnostics_figure()),
    }


def rendered(figure):
    """Draw a matplotlib figure to PNG, as the page's plot does."""
    figure.savefig(io.BytesIO(), format="png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a save_pretrained folder or hub id the demo can load")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    explorer = Explorer(args.model)
    startup = time.perf_counter() - start
    print(f"{args.model} ({explorer.kind}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"start-up (load + latent map): {startup:.2f} s\n")
    print("| action | median s | slowest s |")
    print("|---|---|---|")
    rows = {}
    for name, action in actions(explorer).items():
        action()
        times = []
        for _ in range(args.repeats):
            tick = time.perf_counter()
            action()
            times.append(time.perf_counter() - tick)
        rows[name] = (statistics.median(times), max(times))
        print(f"| {name} | {rows[name][0]:.3f} | {rows[name][1]:.3f} |", flush=True)
    return {"startup": startup, "actions": rows}


if __name__ == "__main__":
    main()
