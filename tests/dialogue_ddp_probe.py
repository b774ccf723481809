"""Run by `accelerate launch` in test_dialogue_data.py: trains a tiny dialogue model, then every rank saves
the pair counts its evaluations gathered."""

import json
import sys

import torch
import train_dialogue

if __name__ == "__main__":
    output_dir = sys.argv[1]
    _, results = train_dialogue.main(sys.argv[2:])
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    counts = {"test": results["test_num_pairs"], "valid": [h["valid_num_pairs"] for h in results["history"]]}
    with open(f"{output_dir}/rank{rank}.json", "w") as handle:
        json.dump({**counts, "test_loss": results["test_loss"]}, handle)
