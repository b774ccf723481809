"""Atomic training checkpoints with Accelerate's save_state/load_state.

A checkpoint is written into a hidden temporary folder and renamed into place only once complete,
so an interrupted save never replaces or corrupts the last good checkpoint.
"""

import re
import shutil
from pathlib import Path

STEP_DIR = re.compile(r"^step_(\d+)$")


def save_checkpoint(accelerator, checkpoints_dir, step, keep=2):
    """save_state into checkpoints_dir/step_<step> atomically; keep the newest `keep` checkpoints."""
    checkpoints_dir = Path(checkpoints_dir)
    final = checkpoints_dir / f"step_{step}"
    temporary = checkpoints_dir / f".tmp-step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        temporary.rename(final)
        for old in list_checkpoints(checkpoints_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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
