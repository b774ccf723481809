"""The latent-space explorer (demo/): the functions behind each tab, and the app itself driven in headless
Chromium with Playwright (the browser test; screenshots of each tab in its output directory)."""

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from explorer import (
    DEMO_COMMAND,
    DEMO_KL_BOUND,
    DEMO_MODEL,
    MAIN_JOB_MODEL,
    MAX_WORDS,
    Explorer,
    InputError,
    default_model,
)

from hf_bnvae import BNCVAEConfig, BNCVAEForConditionalGeneration, BNVAEForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def map_file(tmp_path, corpus):
    path = tmp_path / "map.txt"
    path.write_text("".join(f"{'ab'[i % 2]}\t{sentence}\n" for i, sentence in enumerate(corpus)))
    return path


@pytest.fixture
def explorer(saved, map_file):
    return Explorer(saved, map_file)


def test_reconstruct_sample_and_interpolate(explorer, trained):
    mean, decoded = explorer.reconstruct("the cat sat on the mat")
    assert len(mean) == trained.config.latent_size and set(decoded) == {"greedy", "sampled", "beam"}
    model, tokenizer = explorer.model, explorer.tokenizer
    z = model.encode(["the cat sat on the mat"], tokenizer)
    assert mean == pytest.approx(z[0].tolist(), abs=1e-3)
    assert decoded["greedy"] == model.decode(z, tokenizer)[0]  # the tab shows the model's own decodings
    assert decoded["beam"] == model.decode(z, tokenizer, num_beams=5)[0]
    first, second = explorer.sample(3, 0.8, 0.9, 7), explorer.sample(3, 0.8, 0.9, 7)
    assert len(first) == 3 and first == second  # seeded
    assert explorer.sample(3, 0.8, 0.9, 8) != first  # and the seed matters
    path = explorer.interpolate("the cat sat on the mat", "a dog ran in the park", 4)
    ends = model.reconstruct(["the cat sat on the mat", "a dog ran in the park"], tokenizer)
    assert len(path) == 4 and [path[0], path[-1]] == ends  # the ends are the two sentences' reconstructions


def test_latent_map_projects_on_the_principal_components(explorer, corpus):
    frame = explorer.latent_map("the dog sat on a log")
    assert (
        list(frame["label"][:-1]) == ["ab"[i % 2] for i in range(len(corpus))]
        and frame["label"].iloc[-1] == "your sentence"
    )
    # the first axis carries the largest variance of the map sentences, and the projection is centred
    points = torch.tensor(frame[["x", "y"]].to_numpy()[:-1], dtype=torch.float64)
    torch.testing.assert_close(points.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0)
    assert points[:, 0].var() >= points[:, 1].var()
    total = (explorer.map_means - explorer.map_means.mean(0)).pow(2).sum(1).mean()
    assert points.pow(2).sum(1).mean() <= total + 1e-5


def test_diagnostics_are_the_kl_and_active_units(explorer):
    from hf_bnvae.evaluation import active_units
    from hf_bnvae.modeling_bnvae import gaussian_kl_per_dimension

    d = explorer.diagnostics()
    expected_kl = gaussian_kl_per_dimension(explorer.map_means, explorer.map_logvars).mean(0)
    torch.testing.assert_close(torch.tensor(d["frame"]["kl"].to_numpy()), expected_kl)
    assert d["active_units"] == active_units(explorer.map_means)[0]
    assert d["bound_per_dimension"] == pytest.approx(explorer.model.config.gamma**2 / 2)
    import matplotlib.pyplot as plt

    open_figures = plt.get_fignums()
    figure = explorer.diagnostics_figure()
    assert figure.axes[0].get_lines()  # the bound is drawn
    png = io.BytesIO()
    figure.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")
    assert plt.get_fignums() == open_figures  # outside pyplot: nothing left open per click


def test_diagnostics_show_each_learned_scale_and_its_floor(tmp_path, tiny_config, tokenizer, map_file):
    from hf_bnvae import BNVAEForLanguageModeling

    torch.manual_seed(0)
    model = BNVAEForLanguageModeling(tiny_config(gamma_mode="learned", gamma=0.6, gamma_min=0.2)).eval()
    with torch.no_grad():
        model.bnvae.latent_head.gamma_offset.copy_(torch.linspace(-2.0, 1.0, model.config.latent_size))
    model.save_pretrained(tmp_path / "learned")
    tokenizer.save_pretrained(tmp_path / "learned")
    d = Explorer(tmp_path / "learned", map_file).diagnostics()
    scales = model.bnvae.latent_head.scale().detach()
    torch.testing.assert_close(torch.tensor(d["frame"]["gamma"].to_numpy()), scales)
    torch.testing.assert_close(torch.tensor(d["frame"]["bound"].to_numpy()), scales**2 / 2)
    assert d["learned_gamma"] and d["bound_per_dimension"] == pytest.approx(0.2**2 / 2)
    figure = Explorer(tmp_path / "learned", map_file).diagnostics_figure()
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["bound gamma_i^2 / 2 (learned gamma_i)", "floor gamma_min^2 / 2"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the text box is empty"),
        ("   ", "the text box is empty"),
        ("zebra quokka", "vocabulary"),
        ("the " * (MAX_WORDS + 1), "at most"),
    ],
)
def test_bad_input_gets_a_message(explorer, text, message):
    with pytest.raises(InputError, match=message):
        explorer.reconstruct(text)
    with pytest.raises(InputError, match=message):
        explorer.interpolate("the cat", text, 3)


def test_a_missing_checkpoint_says_which_command_makes_one(tmp_path):
    import app

    with pytest.raises(InputError, match="accelerate launch training/train.py --preset demo"):
        Explorer(tmp_path / "nothing-here")
    page = app.build_app(tmp_path / "nothing-here")  # the page still serves, with the message
    assert any("No model found at" in text and DEMO_COMMAND in text for text in page_texts(page))


def page_texts(page):
    """The values of a Blocks page's components, as strings."""
    return [str(getattr(block, "value", "") or "") for block in page.blocks.values()]


def test_the_explorer_opens_the_demo_model_when_it_exists(tmp_path, monkeypatch, saved, map_file):
    """Default: the demo model, else the main job's, else the demo model's folder (whose page says how to make it);
    any other language model's page says how to train the demo model."""
    import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BNVAE_MODEL", raising=False)
    assert default_model() == DEMO_MODEL
    shutil.copytree(saved, tmp_path / MAIN_JOB_MODEL)
    assert default_model() == MAIN_JOB_MODEL == app.parse_args([]).model_name_or_path
    assert any(
        DEMO_COMMAND in text and "guarantees" in text for text in page_texts(app.build_app(MAIN_JOB_MODEL, map_file))
    )
    shutil.copytree(saved, tmp_path / DEMO_MODEL)
    assert default_model() == DEMO_MODEL == app.parse_args([]).model_name_or_path
    assert not any(DEMO_COMMAND in text for text in page_texts(app.build_app(DEMO_MODEL, map_file)))
    monkeypatch.setenv("BNVAE_MODEL", "org/other")
    assert app.parse_args([]).model_name_or_path == "org/other"


def test_the_explorers_demo_figures_are_the_demo_presets():
    import train

    from hf_bnvae import BNVAEConfig

    args = train.parse_args(["--preset", "demo"])
    assert BNVAEConfig.from_preset("demo", **args.recipe.config).kl_lower_bound == DEMO_KL_BOUND
    assert args.output_dir == DEMO_MODEL and "training/train.py --preset demo" in DEMO_COMMAND


@pytest.fixture
def other_heads(tmp_path, tiny_config, tokenizer):
    """Folders of a tiny classifier and a tiny BN-CVAE with the fixture tokenizer."""
    torch.manual_seed(0)
    classifier = BNVAEForSequenceClassification(tiny_config(num_labels=2, id2label={0: "fresh", 1: "rotten"})).eval()
    sizes = dict(embedding_size=8, utterance_hidden_size=8, context_hidden_size=8, decoder_hidden_size=8, latent_size=4)
    dialogue = BNCVAEForConditionalGeneration(BNCVAEConfig(vocab_size=len(tokenizer), gamma=0.5, **sizes))
    for name, model in (("classifier", classifier), ("dialogue", dialogue)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    return {"classifier": tmp_path / "classifier", "dialogue": tmp_path / "dialogue"}


def test_classifier_and_dialogue_checkpoints_get_their_tabs(other_heads, map_file):
    explorer = Explorer(other_heads["classifier"], map_file)
    scores = explorer.classify("the cat sat")
    assert (
        explorer.kind == "classifier"
        and set(scores) == {"fresh", "rotten"}
        and sum(scores.values()) == pytest.approx(1)
    )
    with pytest.raises(InputError, match="this tab needs a language_model"):
        explorer.reconstruct("the cat")
    explorer = Explorer(other_heads["dialogue"])
    assert explorer.kind == "dialogue" and len(explorer.respond("the cat sat\nthe dog ran", 3)) == 3
    with pytest.raises(InputError, match="Type a conversation first"):
        explorer.respond("\n \n", 3)


# -- the app in a browser --------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model, map_args, log_path):
    """The app on a free port for `model`; yields its URL and stops it afterwards."""
    port = free_port()
    command = [sys.executable, str(ROOT / "demo" / "app.py"), "--model_name_or_path", str(model), *map_args,
               "--server_port", str(port)]  # fmt: skip
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert process.poll() is None, Path(log_path).read_text()[-3000:]
                    time.sleep(0.5)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def running_app(saved, map_file, tmp_path):
    """The app serving the tiny saved model with the fixture map, or $BNVAE_DEMO_MODEL (a real model) with
    the default map, Brown's test sentences and genres (for the docs/ screenshots)."""
    real = "BNVAE_DEMO_MODEL" in os.environ
    model, map_args = (os.environ["BNVAE_DEMO_MODEL"], []) if real else (saved, ["--map_file", str(map_file)])
    with serve(model, map_args, tmp_path / "app.log") as url:
        yield url


def chromium():
    """The system's Chromium for Playwright. Without one the browser tests skip with the reason, except
    under CI (CI=true), where .ci/run installs it and its absence is a failure."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "Chromium is missing: apt-get install chromium (.ci/run installs Debian's chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.slow
def test_the_app_in_headless_chromium(running_app, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(running_app)

        def textbox(elem_id):
            return page.locator(f"#{elem_id} textarea, #{elem_id} input").first

        page.get_by_role("tab", name="Encode and reconstruct").click()
        textbox("reconstruct-input").fill("the cat sat on the mat")
        page.locator("#reconstruct-button").click()
        expect(textbox("reconstruct-mean")).not_to_have_value("", timeout=30000)
        assert textbox("reconstruct-mean").input_value().startswith("[")
        page.screenshot(path=shots / "reconstruct.png")

        page.get_by_role("tab", name="Sample from the prior").click()
        page.locator("#sample-button").click()
        expect(textbox("sample-output")).not_to_have_value("", timeout=30000)
        page.screenshot(path=shots / "sample.png")

        page.get_by_role("tab", name="Interpolate").click()
        textbox("interpolate-a").fill("the cat sat on the mat")
        textbox("interpolate-b").fill("a dog ran in the park")
        page.locator("#interpolate-button").click()
        expect(textbox("interpolate-output")).not_to_have_value("", timeout=30000)
        assert len(textbox("interpolate-output").input_value().split("\n")) == 5  # the default 5 steps
        page.screenshot(path=shots / "interpolate.png")

        page.get_by_role("tab", name="Latent map").click()
        textbox("map-input").fill("the dog sat on a log")
        page.locator("#map-button").click()
        expect(page.locator("#map-plot img").first).to_be_visible(timeout=30000)  # the rendered figure, not a spinner
        page.screenshot(path=shots / "map.png")

        page.get_by_role("tab", name="Diagnostics").click()
        page.locator("#diagnostics-button").click()
        expect(page.locator("#diagnostics-summary")).to_contain_text("dimensions active", timeout=30000)
        expect(
            page.locator("#diagnostics-plot img, #diagnostics-plot canvas, #diagnostics-plot svg").first
        ).to_be_visible(timeout=30000)
        page.screenshot(path=shots / "diagnostics.png")

        # bad input: a message in the page, and the app keeps serving
        page.get_by_role("tab", name="Encode and reconstruct").click()
        textbox("reconstruct-input").fill("")
        page.locator("#reconstruct-button").click()
        expect(page.get_by_text("the text box is empty").first).to_be_visible(timeout=30000)
        textbox("reconstruct-input").fill("word " * 2000)
        page.locator("#reconstruct-button").click()
        expect(page.get_by_text("the explorer takes at most").first).to_be_visible(timeout=30000)
        assert "Traceback" not in page.content()
        before = textbox("reconstruct-mean").input_value()
        textbox("reconstruct-input").fill("the dog ran")
        page.locator("#reconstruct-button").click()
        expect(textbox("reconstruct-mean")).not_to_have_value(before, timeout=30000)  # still serving
        browser.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "diagnostics.png", "interpolate.png", "map.png", "reconstruct.png", "sample.png",
    ]  # fmt: skip
    # refresh docs/: BNVAE_DEMO_MODEL=<a trained model> BNVAE_DEMO_SCREENSHOTS=docs pytest tests/test_demo.py -k chromium
    if os.environ.get("BNVAE_DEMO_SCREENSHOTS"):
        target = Path(os.environ["BNVAE_DEMO_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, target / f"demo_{shot.name}")


@pytest.mark.slow
def test_the_classify_and_respond_tabs_in_headless_chromium(other_heads, map_file, tmp_path):
    """Tiny checkpoints, or real ones from $BNVAE_DEMO_CLASSIFIER / $BNVAE_DEMO_DIALOGUE for the screenshots."""
    from playwright.sync_api import expect, sync_playwright

    other_heads = {
        "classifier": os.environ.get("BNVAE_DEMO_CLASSIFIER", other_heads["classifier"]),
        "dialogue": os.environ.get("BNVAE_DEMO_DIALOGUE", other_heads["dialogue"]),
    }

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        with serve(other_heads["classifier"], ["--map_file", str(map_file)], tmp_path / "classifier.log") as url:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            page.get_by_role("tab", name="Classify").click()
            page.locator("#classify-input textarea, #classify-input input").first.fill("the cat sat on the mat")
            page.locator("#classify-button").click()
            expect(page.locator("#classify-output")).to_contain_text("%", timeout=30000)  # label confidences
            page.screenshot(path=tmp_path / "classify.png")
        with serve(other_heads["dialogue"], [], tmp_path / "dialogue.log") as url:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            page.get_by_role("tab", name="Respond").click()
            page.locator("#respond-input textarea").fill("the cat sat on the mat\na dog ran in the park")
            page.locator("#respond-button").click()
            output = page.locator("#respond-output textarea")
            expect(output).not_to_have_value("", timeout=30000)
            assert len(output.input_value().split("\n")) == 5  # the default 5 responses
            page.screenshot(path=tmp_path / "respond.png")
        browser.close()
    target = os.environ.get("BNVAE_DEMO_SCREENSHOTS")
    for name, variable in (("classify", "BNVAE_DEMO_CLASSIFIER"), ("respond", "BNVAE_DEMO_DIALOGUE")):
        if target and variable in os.environ:  # only real models' screenshots go to docs/
            shutil.copy(tmp_path / f"{name}.png", Path(target) / f"demo_{name}.png")


def test_the_latency_benchmark_times_every_tab_of_each_kind(saved, other_heads, capsys, refused):
    import latency

    language_model = latency.main([str(saved), "--repeats", "2"])
    assert set(language_model["actions"]) == {
        "reconstruct",
        "sample (5 sentences)",
        "interpolate (5 steps)",
        "latent map",
        "diagnostics figure",
    }
    assert all(0 < median <= slowest for median, slowest in language_model["actions"].values())
    assert set(latency.main([str(other_heads["classifier"]), "--repeats", "1"])["actions"]) == {"classify"}
    assert set(latency.main([str(other_heads["dialogue"]), "--repeats", "1"])["actions"]) == {"respond (5 samples)"}
    assert "| reconstruct |" in capsys.readouterr().out
    refused(lambda: latency.parse_args([str(saved), "--repeats", "0"]), "--repeats 0: must be at least 1")


def test_the_latent_map_figure_marks_your_sentence_and_keeps_its_legend_off_the_points(explorer):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = explorer.latent_map_figure("the dog sat on a log")
    ax = figure.axes[0]
    genres = [c for c in ax.collections if c.get_label() != "your sentence"]
    colours = {tuple(c.get_facecolor()[0][:3]) for c in genres}
    assert len(colours) == len(genres) == len(set(explorer.map_labels))  # one colour per genre, none shared
    (yours,) = [c for c in ax.collections if c.get_label() == "your sentence"]
    assert yours.get_sizes()[0] > 10 * genres[0].get_sizes()[0]  # a marker of its own
    assert any("the dog sat on a log" in t.get_text() for t in ax.texts)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    legend, plot_area = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert not legend.overlaps(plot_area) and legend.x0 >= 0 and legend.x1 <= figure.bbox.width
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "your sentence" in labels and set(explorer.map_labels) <= set(labels)
    diagnostics = explorer.diagnostics_figure()
    FigureCanvasAgg(diagnostics).draw()
    for axes in diagnostics.axes:
        if axes.get_legend() is not None:  # beside the bars, not on them
            assert not axes.get_legend().get_window_extent().overlaps(axes.get_window_extent())


def test_an_expected_input_error_is_one_log_line_not_a_traceback(caplog):
    """gr.Error prints its traceback on the server by default; an InputError (e.g. empty text) is expected."""
    import app
    import gradio as gr

    def empty(text):
        raise InputError("Type a sentence first.")

    with caplog.at_level("INFO"), pytest.raises(gr.Error) as raised:
        app.page_errors(empty)("")
    assert raised.value.print_exception is False and raised.value.message == "Type a sentence first."
    assert [r.getMessage() for r in caplog.records] == ["empty: Type a sentence first."]
    assert not any(r.exc_info for r in caplog.records)

    def broken(text):
        raise RuntimeError("bug")

    with pytest.raises(gr.Error) as raised:  # an unexpected failure keeps its traceback in the log
        app.page_errors(broken)("x")
    assert raised.value.print_exception is True
