"""The version guard of our workarounds for library bugs (worker/kombu_patches.py,
worker/pool.py): each is written against named releases and refuses to start under any other,
so an upgrade is a review of the workaround, never a silent change under it."""

from __future__ import annotations


class UnsupportedVersion(RuntimeError):
    """A library we work around is at a version the workaround was not written for."""


def require_reviewed(
    library: str, installed: str, written_for: tuple[str, ...], *, what: str, review: str, remedy: str
) -> None:
    """UnsupportedVersion naming the version, the file and what to look at, unless `installed`
    is one of `written_for`."""
    if installed not in written_for:
        raise UnsupportedVersion(
            f"{library} {installed} is installed, but {what} was written for {library} "
            f"{', '.join(written_for)}. Review it against {library} {installed} ({review}), then add "
            f"the version to WRITTEN_FOR or {remedy}; see docs/upstream.md."
        )
