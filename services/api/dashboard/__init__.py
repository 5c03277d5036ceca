"""The live dashboard (``GET /dashboard``): one static page, its script and
its style sheet, read once at import from this package's folder and served
as they are. The page polls ``GET /stats`` and draws it; nothing is fetched
from anywhere but the stack itself."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

_FILES = ("index.html", "dashboard.js", "dashboard.css")


def _load() -> dict[str, tuple[bytes, str]]:
    assets: dict[str, tuple[bytes, str]] = {}
    for name in _FILES:
        path = _HERE / name
        if path.is_file():
            assets[name] = (path.read_bytes(), _TYPES[path.suffix])
    return assets


_ASSETS = _load()


def asset(path: str) -> tuple[bytes, str] | None:
    """The body and Content-Type (with its charset) for a request path:
    ``/dashboard`` and ``/dashboard/`` are the page, ``/dashboard/<file>``
    one of its files; None for anything else (the caller answers 404)."""
    if path in ("/dashboard", "/dashboard/", "/dashboard/index.html"):
        return _ASSETS.get("index.html")
    prefix = "/dashboard/"
    if not path.startswith(prefix):
        return None
    name = path[len(prefix):]
    if name not in _FILES:  # only the files we ship: no traversal, no listing
        return None
    return _ASSETS.get(name)
