"""Error types of the imaging core (re-exported by ``core.dicom`` and ``core.render``)."""

from __future__ import annotations


class RenderError(ValueError):
    """An image cannot be rendered: undecodable bytes, too many pixels, a refused request.

    The message is safe to show a user: it names the source and the problem, never pixel data or
    patient identifiers.
    """


class DicomError(RenderError):
    """A DICOM file cannot be decoded or fails a guard; the message names the file, the tag and the problem."""

    def __init__(self, source: str, problem: str, *, tag: str | None = None) -> None:
        self.source = source
        self.tag = tag
        self.problem = problem
        where = f"{source}: {tag}: " if tag else f"{source}: "
        super().__init__(where + problem)

    def __reduce__(self) -> tuple:  # picklable: errors cross the render worker pool's process boundary
        return _rebuild_dicom_error, (self.source, self.problem, self.tag)


class BurnedInTextError(RenderError):
    """The image probably carries burned-in text (patient data in pixels) and the policy refuses it.

    ``reason`` is a sentence a UI can show as is.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: refused: {reason}")

    def __reduce__(self) -> tuple:
        return BurnedInTextError, (self.source, self.reason)


def _rebuild_dicom_error(source: str, problem: str, tag: str | None) -> DicomError:
    return DicomError(source, problem, tag=tag)
