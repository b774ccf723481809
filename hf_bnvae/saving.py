"""Saving and loading checkpoints safely: atomic saves, sha256 checksums, and a verified loader.

`save_pretrained_atomically` writes a model and its tokenizer so that a crash never leaves a
half-written file where a good one was, and records the sha256 of every weights file in
checksums.json. `load_pretrained` checks those sums before loading (local folders and hub
repositories, the offline cache included), so flipped bytes or a truncated file raise an OSError
naming the file. `from_pretrained` itself verifies nothing beyond what safetensors parses.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import cached_file

CHECKSUMS_NAME = "checksums.json"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path, text):
    """Write text to path through a temporary file and os.replace: readers see the old or the new file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_checksums(directory):
    """Record the sha256 of every weights file of a saved model in checksums.json (written atomically)."""
    directory = Path(directory)
    sums = {p.name: file_sha256(p) for p in sorted(directory.glob("*.safetensors"))}
    write_atomically(directory / CHECKSUMS_NAME, json.dumps(sums, indent=2))


def save_pretrained_atomically(model, tokenizer, output_dir):
    """save_pretrained (model and tokenizer) into a temporary folder, checksums included, then move each
    file into output_dir with os.replace, checksums last: a crash mid-save never leaves a half-written
    model.safetensors where a good one was."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    temporary = output / ".saving"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    write_checksums(temporary)
    for path in sorted(temporary.iterdir(), key=lambda p: p.name == CHECKSUMS_NAME):
        os.replace(path, output / path.name)
    temporary.rmdir()


def verify_checksums(path_or_repo_id, revision=None):
    """Raise OSError if a weights file differs from the sha256 recorded in checksums.json.

    Works for local folders and hub repositories (including the offline cache). Checkpoints
    without checksums.json are not checked (a truncated file still fails to parse when loaded).
    """
    record = cached_file(
        path_or_repo_id, CHECKSUMS_NAME, revision=revision, _raise_exceptions_for_missing_entries=False
    )
    if record is None:
        return
    for name, expected in json.loads(Path(record).read_text()).items():
        try:
            weights = cached_file(path_or_repo_id, name, revision=revision)
        except OSError as error:
            raise OSError(
                f"{path_or_repo_id} has no weights file {name} (listed in {CHECKSUMS_NAME}): {error}"
            ) from error
        actual = file_sha256(weights)
        if actual != expected:
            raise OSError(
                f"weights file {weights} is corrupted or truncated: its sha256 is {actual[:12]}..., "
                f"but {CHECKSUMS_NAME} records {expected[:12]}...; re-download or re-save the checkpoint"
            )


def load_pretrained(name_or_path, revision=None, auto_class=AutoModelForCausalLM):
    """(model in eval mode, tokenizer) from a save_pretrained folder or a hub id, weights verified first.

    A name that is neither an existing folder nor a valid hub id raises FileNotFoundError naming it;
    corrupted weights raise OSError naming the file.
    """
    import hf_bnvae  # noqa: F401  (registers the Auto classes)

    if not Path(name_or_path).expanduser().is_dir():
        try:
            validate_repo_id(name_or_path)
        except HFValidationError:
            raise FileNotFoundError(f"{name_or_path}: no such model folder (and not a hub id 'org/name')") from None
    where = f"{name_or_path} (revision {revision or 'main'})"
    try:
        verify_checksums(name_or_path, revision)
        model = auto_class.from_pretrained(name_or_path, revision=revision).eval()
    except Exception as error:
        if type(error).__name__ == "SafetensorError" or "deserializ" in str(error):  # it does not name the file
            raise OSError(
                f"cannot read the weights of {where}: the file is corrupted or truncated ({error})"
            ) from error
        if isinstance(error, OSError) and str(name_or_path) not in str(error):
            raise OSError(f"cannot load {where}: {error}") from error
        raise
    return model, AutoTokenizer.from_pretrained(name_or_path, revision=revision)


__all__ = ["load_pretrained", "save_pretrained_atomically", "verify_checksums", "write_atomically", "write_checksums"]
