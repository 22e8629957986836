"""Sandboxed container runs for the Hidden tier (design §5), through the Docker SDK."""

from harness.sandbox.images import (
    ImageReference,
    check_image_archive,
    load_image_archive,
    parse_reference,
    pull_image,
    registry_of,
)
from harness.sandbox.model import ImageInfo, Outcome, RunLimits, RunResult, RunSpec
from harness.sandbox.runner import RUN_LABEL, inspect_image, remove_leftovers, run_container
from harness.sandbox.tree import remove_tree

__all__ = [
    "RUN_LABEL",
    "ImageInfo",
    "ImageReference",
    "Outcome",
    "RunLimits",
    "RunResult",
    "RunSpec",
    "check_image_archive",
    "inspect_image",
    "load_image_archive",
    "parse_reference",
    "pull_image",
    "registry_of",
    "remove_leftovers",
    "remove_tree",
    "run_container",
]
