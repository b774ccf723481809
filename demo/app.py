"""A latent-space explorer for hf_bnvae checkpoints: a Gradio app, ready to run as a Hugging Face Space.

    python demo/app.py                                   # outputs/bnvae-demo, else the main job's outputs/bnvae-brown
    python demo/app.py --model_name_or_path PATH_OR_HUB_ID --server_port 7860
    BNVAE_MODEL=org/bnvae-brown python demo/app.py       # how a Space chooses its model

Tabs for a language model: encode and reconstruct, sample from the prior, interpolate, the latent map
(PCA of held-out posterior means, coloured by Brown's genres) and diagnostics (per-dimension KL with
the BN bound, active units); a classifier gets a classify tab, a BN-CVAE a respond tab. Bad input shows
a message in the page (`explorer.InputError`); any other failure too, and the app keeps serving.
"""

import argparse
import functools
import logging
import os

import gradio as gr
from explorer import (
    DEFAULT_MAP_FILE,
    Explorer,
    InputError,
    default_model,
    demo_model_hint,
)  # beside this file, also in a Space

logger = logging.getLogger(__name__)
TITLE = "BN-VAE latent-space explorer"


def page_errors(function):
    """Run a tab's function; errors become a message in the page (gr.Error), never a traceback."""

    @functools.wraps(function)
    def run(*args):
        try:
            return function(*args)
        except InputError as error:  # expected: one log line, no traceback on the server's console
            logger.info("%s: %s", function.__name__, error)
            raise gr.Error(str(error), print_exception=False) from None
        except Exception as error:  # the page must keep serving whatever happens
            logger.exception("%s failed", function.__name__)
            raise gr.Error(f"Something went wrong ({type(error).__name__}: {error}). Try other input.") from None

    return run


def language_model_tabs(explorer):
    with gr.Tab("Encode and reconstruct"):
        text = gr.Textbox(label="Sentence", value="the man walked slowly to the river .", elem_id="reconstruct-input")
        button = gr.Button("Reconstruct", elem_id="reconstruct-button")
        greedy = gr.Textbox(label="Greedy reconstruction", elem_id="reconstruct-greedy")
        sampled = gr.Textbox(label="Sampled reconstruction (top-p 0.9)", elem_id="reconstruct-sampled")
        beam = gr.Textbox(label="Beam reconstruction (5 beams)", elem_id="reconstruct-beam")
        mean = gr.Textbox(label="Posterior mean E[z|x]", elem_id="reconstruct-mean")

        @page_errors
        def reconstruct(sentence):
            mu, decoded = explorer.reconstruct(sentence)
            return decoded["greedy"], decoded["sampled"], decoded["beam"], str(mu)

        button.click(reconstruct, text, [greedy, sampled, beam, mean])
    with gr.Tab("Sample from the prior"):
        with gr.Row():
            count = gr.Slider(1, 20, value=5, step=1, label="Sentences")
            temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.1, label="Temperature")
            top_p = gr.Slider(0.1, 1.0, value=0.9, step=0.05, label="Top-p")
            seed = gr.Number(value=0, precision=0, label="Seed")
        button = gr.Button("Sample", elem_id="sample-button")
        samples = gr.Textbox(label="Sentences from z ~ N(0, I)", lines=6, elem_id="sample-output")
        button.click(page_errors(lambda *a: "\n".join(explorer.sample(*a))), [count, temperature, top_p, seed], samples)
    with gr.Tab("Interpolate"):
        with gr.Row():
            first = gr.Textbox(label="From", value="the man walked slowly to the river .", elem_id="interpolate-a")
            second = gr.Textbox(label="To", value="she said that it was a good idea .", elem_id="interpolate-b")
        steps = gr.Slider(2, 12, value=5, step=1, label="Steps", elem_id="interpolate-steps")
        button = gr.Button("Interpolate", elem_id="interpolate-button")
        path = gr.Textbox(label="Decoded path (greedy)", lines=6, elem_id="interpolate-output")
        button.click(page_errors(lambda *a: "\n".join(explorer.interpolate(*a))), [first, second, steps], path)
    map_and_diagnostics_tabs(explorer)


def map_and_diagnostics_tabs(explorer):
    with gr.Tab("Latent map"):
        gr.Markdown(
            f"Posterior means of {len(explorer.map_texts)} held-out sentences on their first two principal "
            "components, coloured by label (Brown's genres). Add your own sentence to see where it lands."
        )
        text = gr.Textbox(label="Your sentence (optional)", elem_id="map-input")
        button = gr.Button("Show the map", elem_id="map-button")
        plot = gr.Plot(elem_id="map-plot")
        button.click(page_errors(explorer.latent_map_figure), text, plot)
    with gr.Tab("Diagnostics"):
        button = gr.Button("Measure the latent dimensions", elem_id="diagnostics-button")
        summary = gr.Markdown(elem_id="diagnostics-summary")
        figure = gr.Plot(elem_id="diagnostics-plot")

        @page_errors
        def diagnostics():
            d = explorer.diagnostics()
            text = (
                f"**{d['active_units']} of {len(d['frame'])} dimensions active** (Var of E[z|x] >= 0.01); "
                f"KL {d['kl_total']:.2f} nats per sentence on {d['num_sentences']} held-out sentences; "
                f"BN bound {d['bound_per_dimension']:.3f} nats per dimension"
                + (
                    f" (the floor of the learned gammas, now {d['frame']['gamma'].min():.3f} to {d['frame']['gamma'].max():.3f})."
                    if d["learned_gamma"]
                    else "."
                )
            )
            return text, explorer.diagnostics_figure()

        button.click(diagnostics, None, [summary, figure])


def classifier_tabs(explorer):
    with gr.Tab("Classify"):
        text = gr.Textbox(
            label="Sentence", value="a sophisticated , funny and good - natured treat .", elem_id="classify-input"
        )
        button = gr.Button("Classify", elem_id="classify-button")
        label = gr.Label(label="Prediction", elem_id="classify-output")
        button.click(page_errors(explorer.classify), text, label)
    map_and_diagnostics_tabs(explorer)


def dialogue_tabs(explorer):
    with gr.Tab("Respond"):
        conversation = gr.Textbox(
            label="Conversation, one turn per line (the last line is what to answer)",
            value="hi , how are you ?\ngood , thanks . what are you up to ?",
            lines=5,
            elem_id="respond-input",
        )
        count = gr.Slider(1, 20, value=5, step=1, label="Responses")
        button = gr.Button("Respond", elem_id="respond-button")
        responses = gr.Textbox(label="Responses, each from its own z ~ p(z | c)", lines=6, elem_id="respond-output")
        button.click(page_errors(lambda *a: "\n".join(explorer.respond(*a))), [conversation, count], responses)


def build_app(model_name_or_path, map_file=DEFAULT_MAP_FILE):
    """The Blocks app for a checkpoint; a page that says what to do when the checkpoint cannot be loaded."""
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}")
        try:
            explorer = Explorer(model_name_or_path, map_file)
        except InputError as error:
            gr.Markdown(str(error), elem_id="load-error")
            return app
        gr.Markdown(f"Model: `{explorer.name}` ({explorer.kind.replace('_', ' ')})")
        hint = demo_model_hint(explorer)
        if hint:
            gr.Markdown(hint, elem_id="demo-model-hint")
        {"language_model": language_model_tabs, "classifier": classifier_tabs, "dialogue": dialogue_tabs}[
            explorer.kind
        ](explorer)
    return app


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model_name_or_path",
        default=os.environ.get("BNVAE_MODEL") or default_model(),
        help="default: outputs/bnvae-demo (train.py --preset demo) if it exists, else outputs/bnvae-brown",
    )
    p.add_argument("--map_file", default=str(DEFAULT_MAP_FILE), help="label<TAB>sentence lines for the latent map")
    p.add_argument("--server_name", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--server_port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    build_app(args.model_name_or_path, args.map_file).launch(server_name=args.server_name, server_port=args.server_port)


if __name__ == "__main__":
    main()
