"""Saving and loading checkpoints safely: atomic saves, sha256 checksums, a verified loader, and the
results file every script writes beside a model (all_results.json).

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
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import cached_file

CHECKSUMS_NAME = "checksums.json"
# Every script's results file in a model folder (transformers' name), with the task that picks the card.
RESULTS_NAME = "all_results.json"
TASKS = ("language-modeling", "text-classification", "dialogue")
# Read when a folder has no all_results.json: train.py's results and evaluate_model.py's figures before 0.4.
LEGACY_RESULTS_NAME, LEGACY_EVALUATION_NAME = "metrics.json", "eval_results.json"
# What each of the package's heads is for: named when a script is given a checkpoint of another head.
USES = {
    "BNVAEForLanguageModeling": "a sentence VAE: training/evaluate_model.py, training/generate.py, the explorer",
    "BNVAEForSequenceClassification": "a classifier: the text-classification pipeline (docs/classification.md)",
    "BNCVAEForConditionalGeneration": "a dialogue model: training/train_dialogue.py's evaluation (docs/dialogue.md)",
}


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


def portable_path(value):
    """An absolute path under the current directory shown relative to it (results files and cards must
    not carry machine-specific prefixes such as /home/user/...); any other value unchanged."""
    if isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(Path.cwd()):
        return os.path.relpath(value)
    return value


def names_file(recorded, path):
    """Whether a path a results file recorded (see recorded_arguments) names the file `path`: an absolute
    one must be that file; a relative one was relative to the unknown directory the run started from, so
    it must be `path`'s tail (``data/brown/train.txt`` names ``.../training/data/brown/train.txt``); none
    (None or "") names no file."""
    if not recorded:
        return False
    recorded, path = Path(recorded), Path(path).resolve()
    return recorded.resolve() == path if recorded.is_absolute() else path.match(recorded.as_posix())


def recorded_arguments(args, exclude=()):
    """A script's parsed flags as its results file records them: every flag but `exclude` whose value is
    JSON (numbers, strings, booleans, None and lists of them; an object such as a recipe is left out),
    with paths under the current directory relative to it (portable_path), so a record written in one
    checkout reads the same in another."""

    def recordable(value):
        if isinstance(value, (list, tuple)):
            return all(recordable(item) for item in value)
        return value is None or isinstance(value, (int, float, str, bool))

    def portable(value):
        return [portable_path(item) for item in value] if isinstance(value, (list, tuple)) else portable_path(value)

    return {k: portable(v) for k, v in vars(args).items() if k not in exclude and recordable(v)}


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON results file ({error})") from None


def read_results(folder):
    """The results a training script wrote into `folder` (a dict with "task"; "evaluation" once
    evaluate_model.py has measured it), or None when there are none. Folders written before 0.4 hold
    train.py's metrics.json (task language-modeling) and evaluate_model.py's eval_results.json: they are
    read as if they were one all_results.json. A file that is not JSON raises ValueError naming it."""
    folder = Path(folder)
    if (folder / RESULTS_NAME).exists():
        return _read_json(folder / RESULTS_NAME)
    results = None
    if (folder / LEGACY_RESULTS_NAME).exists():
        results = {"task": "language-modeling", **_read_json(folder / LEGACY_RESULTS_NAME)}
    if (folder / LEGACY_EVALUATION_NAME).exists():
        results = {"task": "language-modeling", **(results or {})}
        results["evaluation"] = _read_json(folder / LEGACY_EVALUATION_NAME)
    return results


def write_results(folder, results):
    """Write `results` (a dict naming its task, one of TASKS) as folder/all_results.json, atomically."""
    if results.get("task") not in TASKS:
        raise ValueError(f"results must name their task, one of {TASKS}; got {results.get('task')!r}")
    write_atomically(Path(folder) / RESULTS_NAME, json.dumps(results, indent=2))


def write_checksums(directory):
    """Record the sha256 of every weights file of a saved model in checksums.json (written atomically)."""
    directory = Path(directory)
    sums = {p.name: file_sha256(p) for p in sorted(directory.glob("*.safetensors"))}
    write_atomically(directory / CHECKSUMS_NAME, json.dumps(sums, indent=2))


def give_default_modes(folder):
    """chmod every file in folder (recursively) to what open() would give it under the umask (0644 under
    the usual 022): safetensors writes its files 0600, which other users and processes (a web server,
    a shared cache) cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~umask)


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
    give_default_modes(temporary)
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


def check_head(name_or_path, revision, auto_class, where):
    """ValueError when the checkpoint was saved from another head than the one auto_class builds (e.g. a
    classifier given to a language-model script, whose decoder would be random): transformers would load
    it with the missing weights freshly initialised, or fail with a bare KeyError."""
    config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    saved = (config.architectures or [None])[0]
    wanted = auto_class._model_mapping.get(type(config), None)
    if saved is None or (wanted is not None and saved == wanted.__name__):
        return
    needed = wanted.__name__ if wanted is not None else f"a model {auto_class.__name__} builds"
    uses = USES.get(saved, "")
    raise ValueError(
        f"{where} is a {saved} checkpoint (model_type {config.model_type}), and this needs {needed}"
        + (f"; that checkpoint is {uses}" if uses else "")
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
        check_head(name_or_path, revision, auto_class, where)
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


__all__ = [
    "RESULTS_NAME",
    "load_pretrained",
    "portable_path",
    "read_results",
    "recorded_arguments",
    "save_pretrained_atomically",
    "verify_checksums",
    "write_atomically",
    "write_checksums",
    "write_results",
]
