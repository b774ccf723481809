"""The README's usage example runs as written (on a tiny checkpoint instead of the main job's)."""

import re
from pathlib import Path

from tests.test_checkpoints import trained

README = Path(__file__).resolve().parents[1] / "README.md"


def usage_example():
    text = README.read_text()
    section = text[text.index("## Usage") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_usage_example_runs(model, batch, tokenizer, tmp_path, capsys):
    trained(model, batch, steps=5)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    code = usage_example()
    assert 'model_dir = "outputs/bnvae-brown"' in code
    exec(code.replace('model_dir = "outputs/bnvae-brown"', f"model_dir = {str(tmp_path)!r}"), {})
    printed = capsys.readouterr().out
    assert "torch.Size([1, 8])" in printed  # out.mu.shape of the tiny model


def test_ci_runs_the_readme_test_command():
    readme = README.read_text()
    command = re.search(r"The tests:\n\n```bash\n(.*?)\n```", readme, re.S).group(1)
    ci = (README.parent / ".ci" / "run").read_text()
    assert command in ci
