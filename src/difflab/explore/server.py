"""The explorer's HTTP server: JSON endpoints over :class:`~.app.Explorer` and one static page.

:func:`make_server` puts an :class:`~.app.Explorer` behind ``http.server.ThreadingHTTPServer``:

==========================  ====  ==========================================================================
``/``                       GET   the page (``static/index.html``, ``explore.js``, ``explore.css``)
``/api/state``              GET   both models (ready, training with progress, missing, or an error message)
``/api/schedules``          GET   alpha, sigma and log-SNR curves of the forward panel's schedules
``/api/forward``            GET   ``t``, ``index``, ``seed`` -> x0 and x_t under each schedule
``/api/score``              GET   ``sampler``, ``steps``, ``seed`` -> the 2-D model's score field along a trajectory
``/api/sample``             POST  ``sampler``, ``steps``, ``seed`` (``label``, ``guidance``) -> a job
``/api/compare``            POST  ``nfe``, ``seed`` (``label``, ``guidance``) -> a job
``/api/train``              POST  ``role`` -> (re)start the first-use training of a built-in model
``/api/jobs/ID``            GET   a job's state, progress, ETA, and its result once done
``/api/jobs/ID/cancel``     POST  cancel it
==========================  ====  ==========================================================================

Errors come back as JSON ``{"error": "one line"}`` (status 400 for a :class:`DifflabError`, 500 otherwise,
with the traceback on the server's terminal only).  Bound to the loopback address, the server also
refuses requests whose ``Host`` is not a loopback name (DNS rebinding), and POSTs must be JSON (so a
page of another site cannot post a form to it).
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from ..errors import DifflabError
from .app import Explorer

__all__ = ["make_server", "serve", "url_of", "LOOPBACK"]

STATIC = Path(__file__).with_name("static")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8"}


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the :class:`Explorer` of the server; answers JSON."""

    server_version = "difflab-explore"
    explorer: Explorer
    loopback_only: bool = True
    quiet: bool = True

    def _routes(self) -> dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]]:
        ex = self.explorer
        return {("GET", "/api/state"): ex.state, ("GET", "/api/schedules"): ex.schedules,
                ("GET", "/api/forward"): ex.forward, ("GET", "/api/score"): ex.score,
                ("POST", "/api/sample"): ex.start_sample, ("POST", "/api/compare"): ex.start_compare,
                ("POST", "/api/train"): ex.start_training}

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def _host_ok(self) -> bool:
        if not self.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip()
        name = host[1:host.index("]")] if host.startswith("[") and "]" in host else host.rsplit(":", 1)[0]
        return name in LOOPBACK

    def _dispatch(self, method: str) -> None:
        try:
            self._answer(method)
        except (BrokenPipeError, ConnectionResetError):
            pass    # the page went away (reloaded, closed) before its answer was written

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            if not self._host_ok():
                return self._json(403, {"error": "this explorer answers requests to the loopback address only"})
            if method == "GET" and not url.path.startswith("/api/"):
                return self._static(url.path)
            params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if method == "POST":
                params.update(self._body())
            m = re.fullmatch(r"/api/jobs/([\w-]+)(/cancel)?", url.path)
            if m and method == ("POST" if m.group(2) else "GET"):
                ex = self.explorer
                return self._json(200, ex.cancel(m.group(1)) if m.group(2) else ex.job_status(m.group(1)))
            fn = self._routes().get((method, url.path))
            if fn is None:
                return self._json(404, {"error": f"no such endpoint: {method} {url.path}"})
            return self._json(200, fn(params))
        except DifflabError as e:
            return self._json(400, {"error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as e:  # noqa: BLE001 - one line to the page, the traceback to the terminal
            traceback.print_exc(file=sys.stderr)
            return self._json(500, {"error": f"internal error: {type(e).__name__}: {e}".splitlines()[0]})

    def _body(self) -> dict[str, Any]:
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise DifflabError("POST bodies must be JSON (Content-Type: application/json)")
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 16:
            raise DifflabError("request body too large")
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            raise DifflabError("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise DifflabError("request body must be a JSON object")
        return body

    def _static(self, path: str) -> None:
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        f = STATIC / name
        if "/" in name or f.suffix not in STATIC_TYPES or not f.is_file():
            return self._json(404, {"error": f"no such page: {path}"})
        self._send(200, f.read_bytes(), STATIC_TYPES[f.suffix])


def make_server(explorer: Explorer | None, host: str = "127.0.0.1", port: int = 8765,
                quiet: bool = True) -> ThreadingHTTPServer:
    """An HTTP server for ``explorer`` listening on ``host:port`` (port 0: any free port), not started yet;
    ``explorer`` may be set later as ``server.RequestHandlerClass.explorer`` (so a busy port is reported
    before any model is opened)."""
    handler = type("ExplorerHandler", (Handler,), {"explorer": explorer, "loopback_only": host in LOOPBACK,
                                                   "quiet": quiet})

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    try:
        return Server((host, port), handler)
    except OSError as e:
        raise DifflabError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port") from None


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(run: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True,
          log: Callable[[str], None] = print) -> None:
    """Start the explorer for ``run`` (None: the built-in models) and serve until Ctrl-C."""
    if host not in LOOPBACK:
        print(f"difflab: warning: listening on {host}, reachable from other machines; the explorer has no login",
              file=sys.stderr)
    server = make_server(None, host, port)
    explorer = server.RequestHandlerClass.explorer = Explorer(run)
    url = url_of(server)
    for slot in (explorer.main, explorer.toy):
        if slot.error:
            log(f"{slot.role}: {slot.error}")
        elif slot.status == "training":
            log(f"{slot.role}: training the built-in {slot.builtin} model on first use; the page shows its progress")
    log(f"difflab explorer at {url} (Ctrl-C to stop)")
    if open_browser:
        import webbrowser
        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    old = _stop_on_signals()
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        log("stopping")
    finally:
        server.server_close()
        explorer.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> dict[int, Any]:
    """Ctrl-C (SIGINT) and ``kill`` (SIGTERM) both stop the server cleanly: first-use training is cancelled and
    its temporary folder removed.  SIGINT is taken even where the process started with it ignored (``&`` in a
    script, ``nohup``), as ``difflab train`` does, since the page and the log say "Ctrl-C to stop".  Returns
    the handlers to put back (none off the main thread, where Python allows no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
