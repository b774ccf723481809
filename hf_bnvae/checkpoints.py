"""Training checkpoints that cannot run code, belong to one run, and are never half-written.

A checkpoint is a folder `checkpoints/step_<n>` holding:

- what Accelerate's `save_state` writes for the model, the optimizer, the samplers and the random states
  (safetensors and torch files that `load_state` reads back with `weights_only=True`, which refuses any
  pickled object that is not plain data);
- `training_state.json`: the training loop's numbers (epoch, batch, plateau rule, history, ...);
- `<key>.safetensors` for each value of the training state that is a dict of tensors (the best weights);
- `run.json`: what defines the run (a fingerprint of the training data and the vocabulary, the model's
  sizes, the method, the batch size, ...). Resuming with another run's definition is refused with a
  message naming what differs.

Nothing here unpickles anything but plain data: the training state is never registered with Accelerate,
whose custom-object checkpoint (`custom_checkpoint_<i>.pkl`) is loaded with `weights_only=False`.
Checkpoints written by hf_bnvae 0.3 (training state in `custom_checkpoint_0.pkl`, no `run.json`) resume
through `torch.load(weights_only=True)`: a crafted pickle there is refused, not executed.

Each checkpoint is written into a hidden temporary folder and renamed into place only once complete, so an
interrupted save never replaces or corrupts the last good checkpoint.
"""

import hashlib
import json
import logging
import pickle
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .saving import give_default_modes

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step_(\d+)$")
STATE_FILE = "training_state.json"
RUN_FILE = "run.json"
LEGACY_STATE_FILE = "custom_checkpoint_0.pkl"  # hf_bnvae 0.3: the state pickled by Accelerate


def fingerprint(value):
    """sha256 (hex) of a JSON-serialisable value, e.g. the token ids of the training set or a vocabulary."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def cpu_state_dict(model):
    """A copy of the model's parameters and buffers on the CPU, detached (the best epoch kept in memory)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def is_tensor_dict(value):
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def save_checkpoint(accelerator, checkpoints_dir, step, state, run, keep=2):
    """Write checkpoints_dir/step_<step> atomically and keep the newest `keep` checkpoints.

    state: the training loop's state, JSON-serialisable except values that are dicts of tensors (each
    written as <key>.safetensors; None is kept in the JSON). run: a JSON-serialisable dict of what defines
    the run, checked by load_checkpoint. Every process calls this; the main process writes the files."""
    checkpoints_dir = Path(checkpoints_dir)
    final = checkpoints_dir / f"step_{step}"
    temporary = checkpoints_dir / f".tmp-step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    if accelerator.is_main_process:
        numbers = {k: v for k, v in state.items() if not is_tensor_dict(v)}
        for key, tensors in state.items():
            if is_tensor_dict(tensors):
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary / f"{key}.safetensors"))
        numbers["tensor_files"] = sorted(k for k, v in state.items() if is_tensor_dict(v))
        (temporary / STATE_FILE).write_text(json.dumps(numbers))
        (temporary / RUN_FILE).write_text(json.dumps(run, indent=2, sort_keys=True))
        give_default_modes(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        temporary.rename(final)
        for old in list_checkpoints(checkpoints_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path, run):
    """Check that the checkpoint folder `path` is complete and belongs to this run, restore Accelerate's
    objects (model, optimizer, samplers, random states) and return the training state dict.

    ValueError when the folder is not a complete checkpoint, when its run differs from `run` (naming each
    difference), or when a legacy pickled state holds anything but plain data."""
    path = Path(path)
    if path.name.startswith(".tmp-"):
        raise ValueError(f"{path}: a checkpoint that was still being written (half-written); resume from 'latest'")
    state_file, legacy_file = path / STATE_FILE, path / LEGACY_STATE_FILE
    if not state_file.is_file() and not legacy_file.is_file():
        raise ValueError(
            f"{path}: not a complete training checkpoint (no {STATE_FILE}); pass a step_<n> folder of a"
            " run's checkpoints/, or 'latest'"
        )
    pickles = sorted(p.name for p in path.glob("custom_checkpoint_*.pkl"))
    if state_file.is_file() and pickles:
        raise ValueError(
            f"{path} holds {', '.join(pickles)}, which this package never writes (Accelerate would unpickle it"
            " with weights_only=False, which can run code): delete it, or do not resume from this folder"
        )
    check_run(path, run)
    if state_file.is_file():
        state = read_state(path)
        accelerator.load_state(str(path))
        return state
    state = read_legacy_state(legacy_file)
    with tempfile.TemporaryDirectory() as view:  # Accelerate's files without the pickle it would load
        for entry in path.iterdir():
            if entry.name not in pickles:
                (Path(view) / entry.name).symlink_to(entry.resolve())
        accelerator.load_state(view)
    return state


def check_run(path, run):
    """ValueError naming what differs between the checkpoint's run.json and `run`; a checkpoint without
    one (hf_bnvae 0.3) is accepted with a warning."""
    run_file = path / RUN_FILE
    if not run_file.is_file():
        logger.warning(f"{path}: written before checkpoints recorded their run ({RUN_FILE}); not checked")
        return
    stored = json.loads(run_file.read_text())
    run = json.loads(json.dumps(run))  # as it would be stored: tuples become lists
    if isinstance(stored.get("model_config"), dict) and isinstance(run.get("model_config"), dict):
        run["model_config"] = without_new_defaults(stored["model_config"], run["model_config"])
    differs = [
        f"{key} {describe(stored.get(key))} (here {describe(run.get(key))})"
        for key in sorted(set(stored) | set(run))
        if stored.get(key) != run.get(key)
    ]
    if differs:
        raise ValueError(
            f"{path} is a checkpoint of another run: {'; '.join(differs)}. Resume with the run's own data and"
            " flags, or start a new --output_dir"
        )


def without_new_defaults(stored, current):
    """current (a model config as a dict) without the fields the stored one lacks and current keeps at the
    config class's default: fields added to the config after the checkpoint was written (e.g. gamma_mode)
    do not make it another run."""
    added = set(current) - set(stored)
    if not added or "model_type" not in current:
        return current
    from transformers import AutoConfig

    defaults = AutoConfig.for_model(current["model_type"]).to_dict()
    return {k: v for k, v in current.items() if not (k in added and k in defaults and defaults[k] == v)}


def describe(value):
    """A short form of a run.json value for an error message: dicts by their differing keys' values."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, str) and len(value) == 64:  # a fingerprint
        return value[:12]
    return value


def read_state(path):
    state = json.loads((path / STATE_FILE).read_text())
    for key in state.pop("tensor_files", []):
        state[key] = load_file(str(path / f"{key}.safetensors"))
    return state


def read_legacy_state(file):
    """The training state of an hf_bnvae 0.3 checkpoint, unpickled as plain data only."""
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ValueError(
            f"{file}: refusing to load it: it holds objects other than plain data, which is not a training"
            f" state this package wrote ({first_line})"
        ) from None


def list_checkpoints(checkpoints_dir):
    """Complete checkpoints (step_<n> folders) in step order; temporary folders are ignored."""
    path = Path(checkpoints_dir)
    if not path.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in path.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(spec, checkpoints_dir):
    """The folder named by --resume_from_checkpoint: a path, or "latest" in checkpoints_dir."""
    if spec == "latest":
        found = list_checkpoints(checkpoints_dir)
        if not found:
            raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {checkpoints_dir}")
        return found[-1]
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint folder {spec}")
    return path
