"""Messages about a result file that a sandboxed run wrote, from a fixed vocabulary.

A container on the Hidden tier writes ``/output/result.h5`` after reading measurements nobody
may see, and its owner reads why the file was refused. :func:`validate_result`'s messages are
precise for an upload (the participant's own file) but quote what the file holds: a dataset's
shape, a compound dtype's field names, a scene's or a link's name. Each of those is text the
container chose, so a refused output would carry a kilobyte of anything it read back to its
owner. Here the message is rebuilt from the error's machine-readable ``rule``, ``where`` and
``attribute`` alone: rule sentences written here, paths the contract defines (``/scenes/<one of
the tier's scene ids>/x_hat`` …), attribute names of the format, and numbers the server itself
fixed (the expected shape, the caps). Nothing the file holds is ever quoted, so the number of
messages a run can produce is finite: :func:`output_error_messages` lists them all, and
``docs/sandbox.md`` counts their log2 in the run's exfiltration budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from harness.errors import FormatError
from harness.tiers import SPEC_PARAMETERS

from ._layout import FORMAT_VERSION, RESULT_FORMAT
from ._result import MAX_METHOD_CHARS, ResultExpectation, validate_result
from ._safety import MAX_CHUNK_BYTES, human_bytes

__all__ = ["OUTPUT_RULES", "output_error_message", "output_error_messages", "validate_output"]

#: What a location the message may not name is called instead.
_UNNAMED = "an object the format does not define (its name is not shown)"
_ROOT_ATTRIBUTES = ("format", "format_version", "method")

#: rule → sentence; ``{loc}`` is a contract path (or ``_UNNAMED``), the rest is fixed here.
OUTPUT_RULES = {
    "size_cap": "it is larger than the {cap} output limit",
    "not_hdf5": "it is not an HDF5 file that libhdf5 can open; write it with h5py",
    "unsafe": "it could not be read safely (the HDF5 library failed on it)",
    "timeout": "it could not be read safely (reading it took too long)",
    "link": "it contains a soft, external or user-defined link; store every object itself",
    "too_many_objects": "it holds more objects, or deeper groups, than a result needs",
    "virtual": "{loc} is a virtual dataset; write the values themselves",
    "external_storage": "{loc} keeps its data in external raw files; store the data in the file",
    "filter": "{loc} uses a filter other than gzip, lzf and shuffle",
    "chunk_size": "{loc} has chunks over {max_chunk}; use one element map per chunk",
    "unreadable": "{loc} could not be read (corrupt or unsupported HDF5 content)",
    "missing": "{loc} is missing or is not the required kind of object (group or dataset)",
    "missing_scene": "{loc} is missing; every scene of the tier ({scenes}) needs a result",
    "extra_scene": "/scenes holds a scene that is not one of the tier's ({scenes}); its name is not shown",
    "format": "the root attribute 'format' is not {result_format!r}",
    "format_version": "the root attribute 'format_version' is not {format_version}",
    "attribute": "{loc} is missing or has the wrong type (spec parameters: one real number each; "
    "'method': a string of at most {max_method} characters)",
    "nonfinite": "{loc} holds NaN or inf; every value must be finite (use 0 where there is no estimate)",
    "shape": "{loc} has the wrong shape; the tier expects {shape} (elements, height, width)",
    "dtype": "{loc} has the wrong dtype; x_hat must be float32 or float64",
}
_OTHER = "it breaks the {result_format} format"


def _paths(expect: ResultExpectation) -> list[str]:
    out = ["/", "/scenes"]
    for scene_id in expect.scene_ids:
        out += [f"/scenes/{scene_id}", f"/scenes/{scene_id}/x_hat", f"/scenes/{scene_id}/spec"]
    return out


def _attributes(path: str, expect: ResultExpectation) -> tuple[str, ...]:
    if path == "/":
        return _ROOT_ATTRIBUTES
    if path in {f"/scenes/{s}/spec" for s in expect.scene_ids}:
        return SPEC_PARAMETERS
    return ()


def _name(path: str) -> str:
    return "the root" if path == "/" else path


def _location(where: str, attribute: str | None, expect: ResultExpectation) -> str:
    """``where`` (and its attribute) if the contract defines it, else :data:`_UNNAMED`."""
    if where == "file":
        return "the file"
    if where not in _paths(expect):
        return _UNNAMED
    if attribute is None:
        return "the root group" if where == "/" else where
    if attribute in _attributes(where, expect):
        return f"{_name(where)} attribute {attribute!r}"
    return _UNNAMED


def _sentence(rule: str, loc: str, expect: ResultExpectation) -> str:
    template = OUTPUT_RULES.get(rule, _OTHER)
    return template.format(
        loc=loc,
        cap=human_bytes(expect.max_bytes),
        max_chunk=human_bytes(MAX_CHUNK_BYTES),
        max_method=MAX_METHOD_CHARS,
        scenes=", ".join(expect.scene_ids),
        shape=expect.shape,
        result_format=RESULT_FORMAT,
        format_version=FORMAT_VERSION,
    )


def output_error_message(exc: FormatError, expect: ResultExpectation) -> str:
    """Why a sandboxed run's result file was refused, without a word from the file.

    Parameters
    ----------
    exc : FormatError
        What :func:`validate_result` raised; only its ``rule``, ``where`` and ``attribute``
        are used, never its ``message``.
    expect : ResultExpectation
        The tier's expectation: its scene ids are the only scene names a message may contain.
    """
    return _sentence(exc.rule, _location(exc.where, exc.attribute, expect), expect)


def output_error_messages(expect: ResultExpectation) -> frozenset[str]:
    """Every message :func:`output_error_message` can return for ``expect``: its vocabulary."""
    locations = ["the file", _UNNAMED]
    for path in _paths(expect):
        locations.append("the root group" if path == "/" else path)
        locations += [f"{_name(path)} attribute {a!r}" for a in _attributes(path, expect)]
    rules = [*OUTPUT_RULES, "any other rule"]
    return frozenset(_sentence(rule, loc, expect) for rule in rules for loc in locations)


def validate_output(
    path: str | os.PathLike,
    expect: ResultExpectation,
    *,
    validate: Callable[[str | os.PathLike, ResultExpectation], None] = validate_result,
) -> None:
    """:func:`validate_result` for a file a sandboxed run wrote: a refusal is raised as a
    :class:`FormatError` whose message is :func:`output_error_message`'s, with the same rule and
    a ``where`` the contract defines (``"file"`` otherwise). ``validate`` does the checking: the
    worker passes :func:`validate_result_isolated`, so libhdf5 never inflates a hostile chunk in
    the worker's own process."""
    try:
        validate(path, expect)
    except FormatError as exc:
        where = exc.where if exc.where in _paths(expect) else "file"
        raise FormatError(output_error_message(exc, expect), where=where, rule=exc.rule) from None
