"""Training checkpoints: no code runs from a checkpoint, a checkpoint of another run is refused, half-written
and legacy (hf_bnvae 0.3) checkpoints are handled (hf_bnvae.checkpoints through train.py)."""

import json
import os
import pickle
import shutil

import pytest
import torch
from conftest import tiny_train_args
from test_checkpoints import assert_default_modes

from hf_bnvae.checkpoints import LEGACY_STATE_FILE, RUN_FILE, STATE_FILE, list_checkpoints


class Exploit:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path, marker):
    torch.save({"state": Exploit(marker)}, path)


@pytest.fixture
def checkpointed(tmp_path, train_run):
    """A run stopped at step 4 with checkpoints at steps 2 and 4; returns the last checkpoint folder."""
    train_run("--max_train_steps", "4", "--checkpointing_steps", "2", name="run")
    return list_checkpoints(tmp_path / "run" / "checkpoints")[-1]


def test_a_checkpoint_holds_no_pickled_training_state(checkpointed):
    names = {p.name for p in checkpointed.iterdir()}
    assert {STATE_FILE, RUN_FILE, "model.safetensors"} <= names
    assert not any(name.startswith("custom_checkpoint") for name in names)
    assert_default_modes(checkpointed)
    assert_default_modes(checkpointed.parent.parent)  # the saved model too
    state = json.loads((checkpointed / STATE_FILE).read_text())
    assert state["optimizer_steps"] == 4 and state["batches_done"] == 4
    run = json.loads((checkpointed / RUN_FILE).read_text())
    assert run["method"] == "bnvae" and run["train_sentences"] > 0 and len(run["train_data"]) == 64


@pytest.mark.parametrize(
    "name, refused",
    [
        # Accelerate would unpickle it with weights_only=False: refused before anything is read
        (LEGACY_STATE_FILE, (ValueError, "custom_checkpoint_0.pkl, which this package never writes")),
        # read by Accelerate with weights_only=True: its unpickler refuses the object
        ("optimizer.bin", (pickle.UnpicklingError, "Weights only load failed")),
        # Accelerate's random states: the same unpickler; an unreadable file is skipped and the run goes on
        ("random_states_0.pkl", None),
    ],
)
def test_a_crafted_pickle_in_a_checkpoint_is_never_executed(tmp_path, checkpointed, train_run, name, refused):
    """Accelerate loads custom_checkpoint_<i>.pkl with weights_only=False; the training state is no longer
    registered with it, and its own files are read with weights_only=True."""
    marker = tmp_path / "pwned"
    plant(checkpointed / name, marker)
    resume = ("--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    if refused is None:
        _, results = train_run(*resume, name="run")
        assert results["train_step_losses"] and len(results["train_step_losses"]) == 6
    else:
        with pytest.raises(refused[0], match=refused[1]):
            train_run(*resume, name="run")
    assert not marker.exists()


def test_a_legacy_checkpoint_resumes_through_the_plain_data_unpickler(tmp_path, checkpointed, train_run):
    """hf_bnvae 0.3 kept the state in custom_checkpoint_0.pkl: still resumed, to the same losses."""
    _, straight = train_run("--max_train_steps", "6", name="straight")
    state = json.loads((checkpointed / STATE_FILE).read_text())
    assert state.pop("tensor_files") == ["best_weights"] or state["best_weights"] is None
    if "best_weights" not in state:
        state["best_weights"] = None
    torch.save(state, checkpointed / LEGACY_STATE_FILE)
    (checkpointed / STATE_FILE).unlink()
    (checkpointed / RUN_FILE).unlink()
    _, resumed = train_run("--max_train_steps", "6", "--resume_from_checkpoint", "latest", name="run")
    assert resumed["train_step_losses"] == pytest.approx(straight["train_step_losses"], abs=1e-6)


def test_a_crafted_legacy_state_is_refused_with_a_message(tmp_path, checkpointed, train_run):
    marker = tmp_path / "pwned"
    (checkpointed / STATE_FILE).unlink()
    plant(checkpointed / LEGACY_STATE_FILE, marker)
    with pytest.raises(ValueError, match="refusing to load it: it holds objects other than plain data"):
        train_run("--max_train_steps", "6", "--resume_from_checkpoint", "latest", name="run")
    assert not marker.exists()


def test_a_checkpoint_of_other_data_is_refused_naming_what_differs(tmp_path, checkpointed):
    import train

    other = tiny_train_args(tmp_path / "run", "--max_train_samples", "40", "--resume_from_checkpoint", "latest")
    with pytest.raises(ValueError, match=r"checkpoint of another run: train_data .*; train_sentences \d+ \(here 40\)"):
        train.main([*other, "--max_train_steps", "6"])


def test_a_checkpoint_of_other_sizes_is_refused_before_torch_loads_it(tmp_path, checkpointed):
    import train

    other = tiny_train_args(tmp_path / "run", "--latent_size", "3", "--resume_from_checkpoint", "latest")
    with pytest.raises(ValueError, match=r"model_config .*latent_size: \d+.*\(here .*latent_size: 3"):
        train.main([*other, "--max_train_steps", "6"])


def test_a_half_written_or_foreign_folder_gets_a_clear_error(tmp_path, checkpointed):
    import train

    half = checkpointed.parent / ".tmp-step_6"
    shutil.copytree(checkpointed, half)
    with pytest.raises(ValueError, match="still being written"):
        train.main([*tiny_train_args(tmp_path / "run", "--resume_from_checkpoint", str(half))])
    (checkpointed / STATE_FILE).unlink()
    with pytest.raises(ValueError, match="not a complete training checkpoint"):
        train.main([*tiny_train_args(tmp_path / "run", "--resume_from_checkpoint", str(checkpointed))])


def test_a_config_field_added_since_the_checkpoint_keeps_it_resumable_at_its_default(tmp_path, checkpointed):
    """A run.json written before BNVAEConfig had gamma_mode / gamma_min (the runs of issue 26) still resumes
    when this run keeps their defaults; one that learns gamma is another run."""
    import train

    run_file = checkpointed / RUN_FILE
    stored = json.loads(run_file.read_text())
    for field in ("gamma_mode", "gamma_min"):
        del stored["model_config"][field]
    run_file.write_text(json.dumps(stored))
    _, results = train.main(
        [*tiny_train_args(tmp_path / "run", "--resume_from_checkpoint", "latest"), "--max_train_steps", "6"]
    )
    assert results["optimizer_steps"] == 6
    learned = tiny_train_args(
        tmp_path / "run", "--method", "bnvae_learned", "--resume_from_checkpoint", str(checkpointed)
    )
    with pytest.raises(ValueError, match=r"checkpoint of another run: .*model_config .*gamma_mode: learned"):
        train.main([*learned, "--max_train_steps", "8"])
