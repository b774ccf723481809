"""Run by `accelerate launch` in test_training.py: trains, then every rank saves its parameters and the
sentences its training batches held."""

import sys

import torch
import train

if __name__ == "__main__":
    output_dir = sys.argv[1]
    seen, training_loaders = [], []
    make_loader = train.sentence_loader

    def recording_loader(dataset, tokenizer, batch_size, seed=None, collate_fn=None):
        loader = make_loader(dataset, tokenizer, batch_size, seed, collate_fn)
        if seed is not None and not training_loaders:  # the training loader (the first seeded one; aggressive
            training_loaders.append(loader)  # training makes a second): record the indices of each batch
            inner = loader.collate_fn

            def record(indices):
                seen.extend(indices)
                return inner(indices)

            loader.collate_fn = record
        return loader

    train.sentence_loader = recording_loader
    model, results = train.main(sys.argv[2:])
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save(
        {
            "state": model.state_dict(),
            "num_processes": results["num_processes"],
            "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
            "steps": results["optimizer_steps"],
            "history": results["history"],
            "seen": seen,
        },
        f"{output_dir}/rank{rank}.pt",
    )
