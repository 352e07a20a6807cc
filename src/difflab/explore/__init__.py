"""The explorer: a local web page to see diffusion at work (``difflab explore [RUN]``).

Panels: the forward process (x_t of an image under several schedules, with alpha_t, sigma_t and log-SNR
marked on the schedule plot), the reverse process (a sampler's every step: the state x_t and the
denoiser's x0_hat, the NFE counted), samplers side by side at one NFE budget from the same noise, and the
learned score field of a 2-D model with samples moving along it; a class selector and guidance scale
appear when the model is class-conditional.

Why a small server of our own rather than Gradio: Python's ``http.server.ThreadingHTTPServer`` with JSON
endpoints and one static page of plain JavaScript (no framework, nothing fetched from the internet, so it
works offline) adds no dependency to difflab, starts in a fraction of a second, and is easy to test: the
API is a class whose methods tests call directly, and the page is driven by a real browser in
``tests/test_explore_browser.py``.  Gradio would bring a large dependency tree and a front end that loads
assets we do not control, for widgets (sliders, images, a canvas) that take a few lines of plain JS.

Long actions (sampling, first-use training of the built-in models, :mod:`.builtin`) are server-side jobs
(:mod:`.jobs`) with progress the page polls and a cancel flag; errors reach the page as one-line messages.
The server listens on 127.0.0.1 unless told otherwise.  The library never imports this package; only
``difflab.cli`` does.
"""
from .app import Explorer
from .server import make_server, serve

__all__ = ["Explorer", "make_server", "serve"]
