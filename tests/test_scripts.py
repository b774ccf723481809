"""training/evaluate.py and training/generate.py on a tiny checkpoint."""

import json
from tests.conftest import CORPUS
from tests.test_checkpoints import trained
from tests.test_training import fresh_accelerate_state  # noqa: F401  (autouse fixture)
from tests.training_helpers import FIXTURE, ROOT



def load_script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_script_writes_json_and_table(model, batch, tokenizer, tmp_path, capsys):
    trained(model, batch, steps=5)
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    script = load_script("evaluate")
    metrics = script.main(["--model_name_or_path", str(tmp_path / "ckpt"), "--test_file", str(FIXTURE),
                           "--max_eval_samples", "12", "--iw_samples", "4"])
    saved = json.loads((tmp_path / "ckpt" / "eval_results.json").read_text())
    assert saved["num_sentences"] == 12 and saved["iw_samples"] == 4 and saved["nll"] == metrics["nll"]
    printed = capsys.readouterr().out
    assert "| NLL (IW) |" in printed and "| AU |" in printed


def test_generate_script(model, batch, tokenizer, tmp_path):
    trained(model, batch, steps=5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    script = load_script("generate")
    assert len(script.main(["--model_name_or_path", str(tmp_path), "sample", "--num_samples", "3"])) == 3
    sampled = ["--model_name_or_path", str(tmp_path), "--do_sample", "--top_p", "0.9", "--seed", "4", "sample"]
    assert script.main(sampled) == script.main(sampled)
    lines = script.main(["--model_name_or_path", str(tmp_path), "--num_beams", "3", "reconstruct", CORPUS[0], CORPUS[1]])
    assert len(lines) == 2 and lines[0].startswith(CORPUS[0] + "\t->\t")
    assert len(script.main(["--model_name_or_path", str(tmp_path), "interpolate", CORPUS[0], CORPUS[1], "--steps", "4"])) == 4


def test_scripts_name_a_missing_model_folder(tmp_path):
    import pytest

    for name in ("evaluate", "generate"):
        extra = [] if name == "evaluate" else ["sample"]
        with pytest.raises(FileNotFoundError, match="no such model folder"):
            load_script(name).main(["--model_name_or_path", str(tmp_path / "missing"), *extra])
