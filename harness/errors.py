"""The harness's exception taxonomy.

Every error carries a stable machine ``code`` and a user-safe ``message``: the API turns
them into ``{"error": {"code", "message"}}`` and the CLI prints the message. A message
never contains hidden data (truth maps, hidden spec values); it names the file part and
the rule that was broken so a participant can fix the file.
"""

from __future__ import annotations

__all__ = [
    "EdxArenaError",
    "FileTooLargeError",
    "FormatError",
    "ImageError",
    "PlatformError",
]


class EdxArenaError(Exception):
    """Base class: ``code`` is stable for machines, ``message`` is safe to show a user."""

    code = "edx_arena_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FormatError(EdxArenaError):
    """An HDF5 file breaks the ``edx-arena-v1`` format (design §4).

    ``where`` names the offending object (``/scenes/s0/x_hat``) or ``"file"``;
    ``rule`` is a short stable identifier of the broken rule (``"nan"``, ``"shape"``…);
    ``attribute`` the attribute of ``where`` at fault, if any. The three let a caller rebuild
    the message from a fixed vocabulary (:func:`harness.formats.output_error_message`) where
    ``message``, which may quote names from the file, must not be shown.
    """

    code = "invalid_file"

    def __init__(
        self, message: str, *, where: str = "file", rule: str = "format", attribute: str | None = None
    ) -> None:
        super().__init__(message)
        self.where = where
        self.rule = rule
        self.attribute = attribute


class FileTooLargeError(FormatError):
    """A file is over the configured size cap."""

    code = "file_too_large"

    def __init__(self, message: str, *, where: str = "file") -> None:
        super().__init__(message, where=where, rule="size_cap")


class ImageError(EdxArenaError):
    """A submitted container image (or archive) cannot be run: outcome ``image_invalid``."""

    code = "image_invalid"


class PlatformError(EdxArenaError):
    """The platform failed (daemon unreachable, disk full…): not the participant's fault,
    so the run is retried and not charged."""

    code = "platform_error"
