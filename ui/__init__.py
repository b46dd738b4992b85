"""The clinician UI: a Gradio app over the public API (mounted at ``/ui`` by ``infimed serve``, or ``infimed ui``)."""

from __future__ import annotations

__all__ = ["UIConfig", "build_ui", "launch_ui", "mount_ui"]


def __getattr__(name: str):  # Gradio is imported only when the app is built
    if name in __all__:
        from ui import app

        return getattr(app, name)
    raise AttributeError(name)
