"""The documentation is true: the usage example runs, CI runs the README's test command, every command of
the README, RESULTS.md, CHANGELOG.md and the pages in docs/ runs as written, on tiny sizes (long jobs: their
arguments parse), and every relative link and anchor they hold leads somewhere."""

import re
import shlex

import app
import bag_of_words
import classification_recipes
import converged
import eval_speed
import evaluate_model
import generate
import iw_convergence
import latency
import mi_noise
import official_step
import output_layer
import precision
import prepare_brown
import prepare_chitchat
import prepare_rotten_tomatoes
import prepare_yelp
import pytest
import reproduce
import reproduce_dialogue
import saving_by_position
import semi_supervised
import show_outputs
import step_profile
import train
import train_classifier
import train_dialogue
import train_speed
import train_with_trainer
import trainer_parity

from hf_bnvae import hub

# Appended to every train.py command: tiny sizes and data, a measured IW-NLL (the card needs one).
TINY_TRAINING = ("--max_train_samples", "16", "--iw_samples", "3", "--max_iw_eval_samples", "4")
# Too long to run here (the reproduction, the benchmarks, the data preparation): their arguments must parse.
PARSED_ONLY = {
    "training/reproduce.py": reproduce.parse_args,
    "training/reproduce_dialogue.py": reproduce_dialogue.parse_args,
    "training/converged.py": converged.parse_args,
    "training/prepare_brown.py": prepare_brown.parse_args,
    "training/prepare_rotten_tomatoes.py": prepare_rotten_tomatoes.parse_args,
    "training/prepare_chitchat.py": prepare_chitchat.parse_args,
    # its default data files exist once prepare_chitchat.py has run: the arguments only
    "training/train_dialogue.py": train_dialogue.build_parser().parse_args,
    "training/train_classifier.py": train_classifier.parse_args,
    "training/train_with_trainer.py": train_with_trainer.parse_args,
    "training/semi_supervised.py": semi_supervised.parse_args,
    "training/classification_recipes.py": classification_recipes.parse_args,
    "training/prepare_yelp.py": prepare_yelp.parse_args,
    "training/bag_of_words.py": bag_of_words.parse_args,
    "benchmarks/train_speed.py": train_speed.parse_args,
    "benchmarks/official_step.py": official_step.parse_args,
    "benchmarks/output_layer.py": output_layer.parse_args,
    "benchmarks/step_profile.py": step_profile.parse_args,
    "benchmarks/eval_speed.py": eval_speed.parse_args,
    "benchmarks/trainer_parity.py": trainer_parity.parse_args,
    "benchmarks/mi_noise.py": mi_noise.parse_args,
    "benchmarks/iw_convergence.py": iw_convergence.parse_args,
    "benchmarks/saving_by_position.py": saving_by_position.parse_args,
    "benchmarks/precision.py": precision.parse_args,
    "demo/app.py": app.parse_args,  # serves until stopped (tests/test_demo.py runs it)
    "demo/latency.py": latency.parse_args,  # needs a trained model (tests/test_demo.py runs it on a tiny one)
}


def documents(root):
    """The README first (its main job writes the model the other documents' commands use), then the other
    top-level documents and every page in docs/, so a new page is checked without naming it here."""
    others = sorted(path for path in root.glob("*.md") if path.name != "README.md")
    return [root / "README.md", *others, *sorted((root / "docs").glob("*.md"))]


def documented_commands(root):
    """Every `accelerate launch ...` and `python ...` command in the documents' code blocks and inline code,
    in the order they appear (inline commands may wrap over lines)."""
    commands = []
    for path in documents(root):
        text = path.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            commands += [line.strip() for line in block.splitlines() if line.strip()]
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        commands += [" ".join(code.split()) for code in re.findall(r"`((?:accelerate launch|python) [^`]+)`", text)]
    return commands


def test_documents_are_found(root):
    names = {path.relative_to(root).as_posix() for path in documents(root)}
    pages = {"docs/training.md", "docs/classification.md", "docs/dialogue.md", "docs/evaluation.md"}
    pages |= {"docs/demo.md", "docs/hub.md", "docs/speed.md"}
    assert {"README.md", "RESULTS.md", "CHANGELOG.md"} | pages <= names


def test_readme_indexes_every_page(root):
    readme = (root / "README.md").read_text()
    index = readme[readme.index("## Documentation") :]
    for path in documents(root)[1:]:
        assert f"]({path.relative_to(root).as_posix()})" in index, f"the README's index lacks {path.name}"


def test_bash_blocks_hold_only_commands(root):
    """A shell comment in a bash block would reach the command test as arguments: say it in the prose."""
    for path in documents(root):
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
            for line in block.splitlines():
                assert not re.search(r"(^|\s)#", line), f"{path.name}: a comment in a bash block: {line}"


def anchors(text):
    """GitHub's anchors for a document's headings: lower case, punctuation dropped, spaces to hyphens,
    -1, -2, ... after a repeated one."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    seen, found = {}, set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_links_lead_somewhere(root):
    """Every relative link and image of every document names a file that exists and, after #, one of its
    headings (pages moved between folders keep their links right)."""
    for path in documents(root):
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        text = re.sub(r"`[^`]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.name}: a link to a missing file: {target}"
            if anchor:
                assert anchor in anchors(linked.read_text()), f"{path.name}: a link to a missing heading: {target}"


def test_usage_example_runs(saved, root, capsys):
    text = (root / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index("## Usage") :], re.S).group(1)
    assert 'model_dir = "outputs/bnvae-brown"' in code
    exec(code.replace('model_dir = "outputs/bnvae-brown"', f"model_dir = {str(saved)!r}"), {})
    printed = capsys.readouterr().out
    assert "torch.Size([1, 8])" in printed and "generated_text" in printed


def test_ci_runs_the_readme_test_command(root):
    readme = (root / "README.md").read_text()
    command = re.search(r"The tests:\n\n```bash\n(.*?)\n```", readme, re.S).group(1)
    assert command in (root / ".ci" / "run").read_text()


@pytest.mark.slow
def test_every_documented_command_runs(root, tmp_path, tiny_args, fake_hub, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outputs/, model_cards/ ... land in the temporary folder
    (tmp_path / "model_cards").mkdir()
    ran = []
    for command in documented_commands(root):
        words = shlex.split(command)
        if "pytest" in words:
            continue  # the test command: CI runs it
        if "&&" in words:  # a set-up line: pip installs (CI runs them), then the command
            words = words[len(words) - words[::-1].index("&&") :]
        if words[:3] == ["python", "-m", "pip"]:
            continue
        if words[:2] == ["accelerate", "launch"]:
            script = next((i for i, word in enumerate(words) if word.endswith(".py")), None)
            if script is None:
                continue  # a launcher fragment in prose ("accelerate launch --cpu --num_processes 2")
            launcher, words = words[2:script], ["python", *words[script:]]
        else:
            launcher = []
        if words[0] != "python":
            continue
        module, args = (words[2], words[3:]) if words[1] == "-m" else (words[1], words[2:])
        if module in PARSED_ONLY:
            for flag in ("--model_name_or_path", "--init_encoder_from", "--tokenizer_name"):
                if flag in args:  # a model folder a documented run made: here an empty stand-in (parsing only)
                    (tmp_path / args[args.index(flag) + 1]).mkdir(parents=True, exist_ok=True)
            PARSED_ONLY[module](args)
        elif module == "training/train.py":
            parsed = train.parse_args(args)  # as written
            if "--multi_gpu" not in launcher:  # two processes: test_two_cpu_processes_train_in_sync
                train.main(tiny_args(parsed.output_dir, *args, *TINY_TRAINING))
        elif module == "training/evaluate_model.py":
            evaluate_model.main([*args, "--max_eval_samples", "6", "--iw_samples", "3"])
        elif module == "training/generate.py":
            assert generate.main(args)
        elif module == "training/show_outputs.py":  # the models of the commands above, on a few sentences
            show_outputs.main([*args, "--num_bleu", "6"])
        elif module == "hf_bnvae.hub":
            hub.main(args)
        else:
            raise AssertionError(f"a documented command this test does not know how to run: {command}")
        ran.append(module)
    assert {"training/train.py", "training/evaluate_model.py", "training/generate.py", "hf_bnvae.hub"} <= set(ran)
    assert set(PARSED_ONLY) <= set(ran)
