"""Local `evaluate` modules for the dataset-level metrics: evaluate.load(path_of("active_units"))."""

from pathlib import Path


def path_of(name):
    """Folder of the local evaluate module `name` ("active_units", "mutual_information", "classification")."""
    path = Path(__file__).resolve().parent / name
    if not (path / f"{name}.py").is_file():
        raise ValueError(f"no evaluate module {name!r}; available: active_units, mutual_information, classification")
    return str(path)
