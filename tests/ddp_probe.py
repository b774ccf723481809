"""Run by `accelerate launch` in test_training.py: trains, then every rank saves its parameters."""

import sys

import torch

from training_helpers import train_script

if __name__ == "__main__":
    output_dir = sys.argv[1]
    model, results = train_script.main(sys.argv[2:])
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save({"state": model.state_dict(), "num_processes": results["num_processes"],
                "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
                "steps": results["optimizer_steps"], "history": results["history"]}, f"{output_dir}/rank{rank}.pt")
