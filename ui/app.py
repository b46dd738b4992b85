"""The clinician UI: a Gradio app that is a client of the public API (mounted at ``/ui`` or run alone).

    infimed serve --model DIR            # the gateway mounts this app at /ui (login printed at start-up)
    infimed ui --api-url http://127.0.0.1:8000/v1 --api-key-file key.txt --username u --password p

``build_ui(config)`` returns the ``gr.Blocks``; ``mount_ui(app, api_url=…, api_key=…, username=…,
password=…)`` mounts it on a FastAPI app with login, analytics off, a queue sized for many clinicians,
a private upload cache and per-session folders deleted when the session ends. The API key stays in
this process; the browser only ever sees the UI's own routes.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ui._html import CSS, options, preview_html, settings_lines, study_html, study_key
from ui.api import APIClient, APIFailure, pinned_context
from ui.examples import Example, available_examples
from ui.feedback import FeedbackStore
from ui.ingest import ingest_uploads
from ui.isolation import SessionMismatch, guard_mount, login_keys, sweep_raw_uploads
from ui.messages import WINDOW_PRESETS, ImagingOptions, StreamText, Turn, build_messages, chat_display, image_parts
from ui.report import INTENDED_USE, ReportStamp, write_report
from ui.sessions import Session, Sessions

log = logging.getLogger(__name__)

DISCLAIMER = (
    "⚠️ Not a medical device; not for diagnosis without a clinician. Answers may be wrong — review every image yourself."
)


def default_data_dir() -> Path:
    """Where feedback is kept: ``$INFIMED_UI_DATA_DIR``, else ``$XDG_DATA_HOME/infimed/ui`` (``~/.local/share``)."""
    env = os.environ.get("INFIMED_UI_DATA_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "infimed" / "ui"


@dataclass
class UIConfig:
    """Everything the UI needs; the API key never leaves the server process."""

    api_url: str | Callable[[], str]
    api_key: str
    data_dir: Path = field(default_factory=default_data_dir)  # feedback (kept)
    work_dir: Path | None = (
        None  # private temp root: upload cache, sessions, exports (deleted); None = a fresh temp dir
    )
    api_verify: bool | str | ssl.SSLContext = True  # TLS trust for the API: system CAs, a CA file, a context
    concurrency: int = 64  # events of one kind served at once (Gradio's default is 1)
    default_max_tokens: int = 512
    title: str = "InfiMed — clinician assistant"

    def __post_init__(self) -> None:
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="infimed-ui-"))
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.work_dir, 0o700)
        self.data_dir = Path(self.data_dir)


def build_ui(config: UIConfig) -> Any:
    """The clinician app as a ``gr.Blocks`` (not yet launched or mounted)."""
    assert config.work_dir is not None
    # Gradio's upload cache is process-wide and keyed by content hash: give it a private folder (0700),
    # never the shared /tmp/gradio. Raw uploads are deleted as soon as they are de-identified.
    cache = config.work_dir / "gradio"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    api = APIClient(config.api_url, config.api_key, verify=config.api_verify)
    # De-identified study files (never served) and, inside Gradio's cache, one download folder per session
    # (reports), served only to the login that opened the session (ui.isolation); both go when it ends.
    sessions = Sessions(config.work_dir / "sessions", cache / "s")
    feedback = FeedbackStore(config.data_dir / "feedback")
    examples = available_examples(config.work_dir / "examples")
    version: dict[str, str] = {}

    def session(request: gr.Request) -> Session:
        try:
            return sessions.get(request.session_hash, login_keys(getattr(request, "cookies", None) or {}))
        except SessionMismatch:
            raise gr.Error("this page belongs to another login: reload it") from None

    async def refresh_preview(s: Session, opts: ImagingOptions) -> str:
        if not s.items:
            s.preview, s.preview_error, s.preview_key = None, None, ""
            return preview_html(None, None, [])
        key = study_key(s.items, opts)
        if key != s.preview_key:
            try:
                parts = await asyncio.to_thread(image_parts, s.items, opts)
                s.preview, s.preview_error = await api.render(parts), None
            except (APIFailure, ValueError, OSError) as e:
                s.preview, s.preview_error = None, str(e)
            s.preview_key = key
        return preview_html(s.preview, s.preview_error, settings_lines(s.items, opts))

    def frame_slider(s: Session) -> Any:
        n = max((it.frames_total for it in s.items), default=1)
        return gr.update(maximum=max(n - 1, 1), value=0, visible=n > 1, label=f"Slice / frame (0–{n - 1})")

    # ------------------------------------------------------------------ handlers
    async def on_load(request: gr.Request):
        sessions.sweep()
        await asyncio.to_thread(sweep_raw_uploads, cache)
        session(request)
        try:
            names = await api.models()
            version["server"] = await api.version()
            status = f"Connected · server {version['server']} · {len(names)} model(s)"
        except APIFailure as e:
            names, status = [], f"⚠️ {e}"
        return gr.update(choices=names, value=names[0] if names else None), status

    async def on_upload(files: list[str] | None, window: str, center: float, width: float, composite: bool, frame_mode: str, frame: float,
                        uniform_n: float, request: gr.Request):  # fmt: skip
        s = session(request)
        paths = [Path(f) for f in (files or [])]
        await asyncio.to_thread(sweep_raw_uploads, cache)  # raw uploads a closed tab left behind
        return await load_study(
            s, paths, (window, center, width, composite, frame_mode, frame, uniform_n), delete_sources=True
        )

    async def load_study(s: Session, paths: list[Path], controls: tuple[Any, ...], *, delete_sources: bool):
        res = await asyncio.to_thread(
            ingest_uploads, paths, s.dir, s.deid, start_index=s.files_written, delete_sources=delete_sources
        )
        s.files_written += sum(len(it.paths) for it in res.items)
        if res.items:  # a new upload replaces the study; the conversation stays
            for it in s.items:
                for p in it.paths:
                    p.unlink(missing_ok=True)
            s.items = res.items
            s.attached_key = ""
        preview = await refresh_preview(s, options(*controls))
        return None, study_html(s.items, res.warnings), preview, frame_slider(s)

    async def on_example_load(name: str, window: str, center: float, width: float, composite: bool, frame_mode: str, frame: float,
                              uniform_n: float, request: gr.Request):  # fmt: skip
        ex: Example | None = next((e for e in examples if e.name == name), None)
        if ex is None:
            raise gr.Error("pick an example first")
        controls = (window, center, width, composite, frame_mode, frame, uniform_n)
        s = session(request)
        try:
            src = await asyncio.to_thread(ex.files, config.work_dir / "examples")  # type: ignore[operator]
        except (FileNotFoundError, OSError, ImportError) as e:
            raise gr.Error(f"example {ex.name!r} is not available here ({type(e).__name__})") from None
        _, study, preview, slider = await load_study(s, src, controls, delete_sources=False)
        return study, preview, slider, ex.question

    async def on_controls(window: str, center: float, width: float, composite: bool, frame_mode: str, frame: float, uniform_n: float,
                          request: gr.Request):  # fmt: skip
        s = session(request)
        return await refresh_preview(s, options(window, center, width, composite, frame_mode, frame, uniform_n))

    def on_window(preset: str):
        cw = WINDOW_PRESETS.get(preset)
        if cw is None:
            return gr.update(), gr.update()
        return gr.update(value=cw[0]), gr.update(value=cw[1])

    async def on_slider(window: str, center: float, width: float, composite: bool, frame_mode: str, frame: float, uniform_n: float,
                        request: gr.Request):  # fmt: skip
        # Moving centre/width means a custom window.
        s = session(request)
        opts = options("custom", center, width, composite, frame_mode, frame, uniform_n)
        return "custom", await refresh_preview(s, opts)

    async def ask(question: str, model: str | None, window: str, center: float, width: float, composite: bool, frame_mode: str,
                  frame: float, uniform_n: float, temperature: float, top_p: float, max_tokens: float | None, ignore_eos: bool,
                  system: str, request: gr.Request):  # fmt: skip
        controls = (window, center, width, composite, frame_mode, frame, uniform_n)
        s = session(request)
        question = (question or "").strip()
        if not question:
            raise gr.Error("type a question first")
        if not model:
            raise gr.Error("no model available: check the server")
        opts = options(*controls)
        turn = Turn(question=question, model=model, request_id="ui-" + uuid.uuid4().hex[:24])
        key = study_key(s.items, opts)
        if s.items and key != s.attached_key:
            preview_out = await refresh_preview(s, opts)
            turn.settings = settings_lines(s.items, opts)
            if s.preview_error:
                turn.error = f"the images were refused: {s.preview_error}"
            else:
                turn.attachments = await asyncio.to_thread(image_parts, s.items, opts)
                turn.preview = list(s.preview.images) if s.preview else []
                s.attached_key = key
        else:
            preview_out = gr.update()
        s.turns.append(turn)
        if turn.error:
            yield chat_display(s.turns), "", preview_out, _answer_choices(s), gr.update(interactive=True)
            return
        # Ask is disabled while an answer streams (Stop or the end of the answer enables it again).
        yield (
            chat_display(s.turns),
            "",
            preview_out,
            _answer_choices(s),
            gr.update(interactive=False, value="Answering…"),
        )
        params = {
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": int(max_tokens) if max_tokens else None,
            "ignore_eos": bool(ignore_eos),
        }
        acc = StreamText()
        last = 0.0
        messages = build_messages(s.turns, system=system)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        # The stream is read by its own task, so that Stop (a flag on the turn) is noticed within a quarter
        # second even when no token arrives, and this generator itself shows the final state: no race with
        # Gradio delivering a stale update after the Stop handler's.
        pump = asyncio.create_task(
            _pump(api.stream_chat(messages, model=model, request_id=turn.request_id, params=params), queue)
        )
        try:
            while not turn.stopped:
                try:
                    kind, item = await asyncio.wait_for(queue.get(), timeout=0.25)
                except TimeoutError:
                    continue
                if kind == "end":
                    turn.finish_reason, turn.records = acc.finish_reason or "ended", acc.records
                    break
                if kind == "error":
                    turn.error = str(item)
                    if turn.attachments:
                        s.attached_key = ""  # the images did not get through: send them again next time
                    break
                if acc.feed(item):
                    turn.answer = acc.text
                    if time.monotonic() - last > 0.2:  # 5 updates a second: readable, and light on a busy browser
                        last = time.monotonic()
                        yield chat_display(s.turns), gr.update(), gr.update(), gr.update(), gr.update()
        finally:
            pump.cancel()  # closes the HTTP stream: the gateway aborts the generation in the engine
        yield (
            chat_display(s.turns),
            gr.update(),
            gr.update(),
            _answer_choices(s),
            gr.update(interactive=True, value="Ask"),
        )

    def on_stop(request: gr.Request):
        s = session(request)
        if s.turns and s.turns[-1].finish_reason is None and not s.turns[-1].error:
            s.turns[-1].stopped = True
            log.info("stop: generation of request %s stopped by the user", s.turns[-1].request_id)
        else:
            log.info("stop: nothing to stop (%s)", "no question yet" if not s.turns else "the answer had finished")
        # Only the button: the running answer shows its own final state within a quarter second. Writing the
        # chat from here too would race with it, and Gradio applies a generator's updates as diffs against
        # its own previous output, so a diff landing on this handler's chat garbles the text.
        return gr.update(interactive=True, value="Ask")

    def on_clear(request: gr.Request):
        s = session(request)
        running = any(t.finish_reason is None and not t.stopped and not t.error for t in s.turns)
        for t in s.turns:
            t.stopped = t.stopped or t.finish_reason is None  # a running answer ends
        s.turns.clear()
        s.attached_key = ""
        if running:  # the running answer shows the empty conversation itself (see on_stop: no racing diffs)
            return gr.update(), gr.update(), gr.update()
        return [], _answer_choices(s), gr.update(interactive=True, value="Ask")

    def on_feedback(answer: str | None, rating: str, comment: str, link: bool, request: gr.Request):
        s = session(request)
        idx = _answer_index(answer, s)
        code = {"helpful": "up", "not helpful": "down", "flag": "flag"}.get(rating)
        if code is None:
            raise gr.Error("choose helpful, not helpful or flag first")
        seen = next((t for t in reversed(s.turns[: idx + 1]) if t.attachments), None)  # the images in context
        rec = feedback.add(s.turns[idx], rating=code, comment=comment or "", link=bool(link), seen=seen)
        s.turns[idx].feedback.append(code)
        note = " (question and answer linked, de-identified)" if link else ""
        return (
            "",
            f"Thank you: feedback {rating} on answer {idx + 1} recorded{note}. Comment stored as: “{html.escape(rec['comment'])}”",
        )

    def on_like(data: gr.LikeData, request: gr.Request):
        s = session(request)
        idx = (data.index[0] if isinstance(data.index, (list, tuple)) else data.index) // 2
        if 0 <= idx < len(s.turns) and data.liked in (True, False):
            feedback.add(s.turns[idx], rating="up" if data.liked else "down")
            return f"Feedback {'helpful' if data.liked else 'not helpful'} on answer {idx + 1} recorded."
        return gr.update()

    async def on_export(request: gr.Request):
        s = session(request)
        if not s.turns:
            raise gr.Error("nothing to export: ask a question first")
        if "server" not in version:
            version["server"] = await api.version()
        from infimed import __version__

        paths = write_report(s.turns, ReportStamp(server_version=version["server"], ui_version=__version__), s.public)
        return [str(p) for p in paths]

    def on_unload(request: gr.Request):
        s = sessions.peek(request.session_hash)
        if s is None or (s.owner and not s.owner & login_keys(getattr(request, "cookies", None) or {})):
            return
        for t in s.turns:
            t.stopped = t.stopped or t.finish_reason is None  # the tab is gone: end a running answer
        sessions.end(request.session_hash)  # its study files and its reports
        log.info("session ended: its files are deleted")

    # ------------------------------------------------------------------ layout
    with gr.Blocks(title=config.title, analytics_enabled=False, fill_width=True) as demo:
        gr.HTML(f"<div id='disclaimer'>{html.escape(DISCLAIMER)}</div>", elem_id="disclaimer-box")
        with gr.Row():
            gr.Markdown(f"### {html.escape(config.title)}")
            status = gr.Markdown("Connecting…", elem_id="status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                upload = gr.File(label="Upload images: PNG/JPEG, DICOM file(s), a series, or a .zip of a series", file_count="multiple",
                                 type="filepath", elem_id="upload")  # fmt: skip
                with gr.Row():
                    example = gr.Dropdown(
                        [e.name for e in examples], label="Example cases", value=None, elem_id="example", scale=3
                    )
                    example_btn = gr.Button("Load example", elem_id="example-load", scale=1)
                study = gr.HTML(study_html([], []), elem_id="study")
                with gr.Accordion("Imaging controls (CT / MR / X-ray)", open=True):
                    window = gr.Dropdown(
                        [*WINDOW_PRESETS, "custom"], value="auto", label="Window preset", elem_id="window"
                    )
                    with gr.Row():
                        center = gr.Slider(-1500, 3000, value=40, step=1, label="Centre (HU)", elem_id="center")
                        width = gr.Slider(1, 4000, value=400, step=1, label="Width (HU)", elem_id="width")
                    composite = gr.Checkbox(
                        False,
                        label="CT 3-window composite (lung · mediastinum · bone into R, G, B)",
                        elem_id="composite",
                    )
                    frame_mode = gr.Radio(
                        ["auto", "this slice/frame", "evenly spaced"],
                        value="auto",
                        label="Slices / frames sent",
                        elem_id="frame-mode",
                    )
                    frame = gr.Slider(0, 1, value=0, step=1, label="Slice / frame", visible=False, elem_id="frame")
                    uniform_n = gr.Slider(1, 8, value=4, step=1, label="How many, evenly spaced", elem_id="uniform-n")
                gr.Markdown("**What the model sees** (rendered by the server, de-identified)")
                preview = gr.HTML(preview_html(None, None, []), elem_id="preview")
            with gr.Column(scale=3, min_width=420):
                model = gr.Dropdown(
                    [], label="Model (base or fine-tuned adapter)", elem_id="model", allow_custom_value=False
                )
                chatbot = gr.Chatbot(
                    label="Conversation",
                    height=460,
                    elem_id="chat",
                    buttons=["copy"],
                    feedback_options=("Like", "Dislike"),
                )
                question = gr.Textbox(
                    label="Question", placeholder="Ask about the images…", lines=2, elem_id="question"
                )
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    clear = gr.Button("New conversation", elem_id="clear")
                with gr.Accordion("Sampling settings", open=False, elem_id="sampling"):
                    temperature = gr.Slider(0, 2, value=0.2, step=0.05, label="Temperature", elem_id="temperature")
                    top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p", elem_id="top-p")
                    max_tokens = gr.Number(
                        value=config.default_max_tokens,
                        precision=0,
                        minimum=1,
                        label="Max tokens",
                        elem_id="max-tokens",
                    )
                    system = gr.Textbox(label="System prompt (optional)", lines=2, elem_id="system")
                    ignore_eos = gr.Checkbox(
                        False,
                        label="Advanced: ignore end-of-sequence (testing only: always generate max tokens)",
                        elem_id="ignore-eos",
                    )
                with gr.Accordion("Feedback on an answer", open=True):
                    with gr.Row():
                        answer_pick = gr.Dropdown([], label="Answer", elem_id="fb-answer", scale=1)
                        rating = gr.Radio(
                            ["helpful", "not helpful", "flag"], label="Rating", elem_id="fb-rating", scale=2
                        )
                    comment = gr.Textbox(
                        label="Comment (identifiers are removed before storing)", lines=2, elem_id="fb-comment"
                    )
                    link = gr.Checkbox(
                        False,
                        label="Also keep the de-identified question, answer and images (so flagged answers can be curated)",
                        elem_id="fb-link",
                    )
                    fb_send = gr.Button("Send feedback", elem_id="fb-send")
                    fb_status = gr.Markdown("", elem_id="fb-status")
                with gr.Row():
                    export = gr.Button("Export report (HTML + Markdown)", elem_id="export")
                report = gr.File(label="Report", file_count="multiple", interactive=False, elem_id="report")
        gr.Markdown(
            f"<small>{html.escape(INTENDED_USE)} Uploads are de-identified before display and deleted when you close the tab.</small>"
        )

        controls = [window, center, width, composite, frame_mode, frame, uniform_n]
        sampling = [temperature, top_p, max_tokens, ignore_eos, system]

        demo.load(on_load, outputs=[model, status])
        upload.upload(on_upload, [upload, *controls], [upload, study, preview, frame])
        example_btn.click(on_example_load, [example, *controls], [study, preview, frame, question])
        window.change(on_window, window, [center, width]).then(on_controls, controls, preview)
        for c in (composite, frame_mode):
            c.change(on_controls, controls, preview)
        for c in (frame, uniform_n):
            c.release(on_controls, controls, preview)
        for c in (center, width):
            c.release(on_slider, controls, [window, preview])
        ask_outputs = [chatbot, question, preview, answer_pick, send]
        send.click(ask, [question, model, *controls, *sampling], ask_outputs)
        question.submit(ask, [question, model, *controls, *sampling], ask_outputs)
        # Stop sets a flag the running answer checks (see ask); Gradio's own cancel would kill the generator
        # before it can show the final state.
        stop.click(on_stop, None, send)
        clear.click(on_clear, None, [chatbot, answer_pick, send])
        fb_send.click(on_feedback, [answer_pick, rating, comment, link], [comment, fb_status])
        chatbot.like(on_like, None, fb_status)
        export.click(on_export, None, report)
        demo.unload(on_unload)
    demo.queue(default_concurrency_limit=config.concurrency, max_size=None)
    demo.infimed_api = api  # type: ignore[attr-defined]  # for tests and clean shutdown
    demo.infimed_sessions = sessions  # type: ignore[attr-defined]  # for the mount's guard and tests
    demo.infimed_cache = cache  # type: ignore[attr-defined]
    return demo


async def _pump(chunks: Any, queue: asyncio.Queue[tuple[str, Any]]) -> None:
    """Move streamed chunks into ``queue``, then ``("end", None)`` or ``("error", APIFailure)``."""
    try:
        async for chunk in chunks:
            await queue.put(("chunk", chunk))
        await queue.put(("end", None))
    except APIFailure as e:
        await queue.put(("error", e))
    finally:
        await chunks.aclose()


def _answer_choices(s: Session) -> Any:
    choices = [f"Answer {i + 1}" for i in range(len(s.turns))]
    return gr.update(choices=choices, value=choices[-1] if choices else None)


def _answer_index(answer: str | None, s: Session) -> int:
    if not s.turns:
        raise gr.Error("no answer yet to give feedback on")
    try:
        idx = int((answer or "").rsplit(" ", 1)[-1]) - 1
    except ValueError:
        idx = len(s.turns) - 1
    if not 0 <= idx < len(s.turns):
        raise gr.Error("that answer no longer exists")
    return idx


def mount_ui(app: Any, *, api_url: str | Callable[[], str], api_key: str, username: str, password: str,
             data_dir: Path | None = None, path: str = "/ui", api_cert: Path | None = None,
             api_ca_file: Path | None = None) -> None:  # fmt: skip
    """Mount the clinician UI on the FastAPI ``app`` at ``path`` (default ``/ui``) behind a login.

    ``api_url`` (``…/v1``) may be a callable returning it, read at the first request (the port of
    ``--port 0`` is known only once the server has started). ``data_dir`` keeps feedback
    (default :func:`default_data_dir`). TLS to the API: ``api_cert`` is the gateway's own certificate
    when the UI is mounted on an HTTPS gateway (trusted alone, see :func:`ui.api.pinned_context`);
    ``api_ca_file`` a private CA bundle for a gateway elsewhere; neither: the system's CAs.
    """
    if not username or not password:
        raise ValueError("the UI needs a username and a password")
    verify: bool | str | ssl.SSLContext = (
        pinned_context(api_cert) if api_cert else str(api_ca_file) if api_ca_file else True
    )
    config = UIConfig(api_url=api_url, api_key=api_key, data_dir=data_dir or default_data_dir(), api_verify=verify)
    demo = build_ui(config)
    gr.mount_gradio_app(app, demo, path=path, auth=(username, password), auth_message="InfiMed clinician UI — " + DISCLAIMER,
                        footer_links=[], run_history=False, ssr_mode=False, show_error=True, mcp_server=False,
                        blocked_paths=[str(config.data_dir)], css=CSS, theme=_theme())  # fmt: skip
    sessions: Sessions = demo.infimed_sessions
    guard_mount(app, path, cache=demo.infimed_cache, owner_of=sessions.owner_of, served_dirs=sessions.served_dirs)
    app.state.ui = demo  # for tests and introspection; holds no secret the browser could see
    log.info("clinician UI mounted at %s (feedback in %s)", path, config.data_dir)


def _theme() -> Any:
    """The default theme with system fonts only: nothing is fetched from a font CDN."""
    system = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Default(font=system, font_mono=mono)


def launch_ui(*, api_url: str, api_key: str, host: str, port: int, username: str, password: str,
              data_dir: Path | None = None, api_ca_file: Path | None = None) -> None:  # fmt: skip
    """Run the UI alone (``infimed ui``): a FastAPI app with only ``/ui``, served by uvicorn."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    mount_ui(app, api_url=api_url, api_key=api_key, username=username, password=password, data_dir=data_dir,
             api_ca_file=api_ca_file)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
