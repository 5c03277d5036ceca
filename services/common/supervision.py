"""The restart counts of the process supervisor, for ``/stats``.

``make run`` (tools/stack.py, ``Supervisor``) restarts a service whose process
exits, as compose's ``restart: unless-stopped`` does, and writes how often it
restarted each one to a JSON file, replaced atomically on every change:
``{"restarts": {"cache": 1, "api1": 0, ...}, "updatedAt": <epoch ms>}``. Every
service it starts finds the file through ``SUPERVISOR_STATUS``. Under Docker
there is no such file (compose counts its own restarts), and a reader must not
care: the figures are informative, so anything unexpected reads as "none".
"""

from __future__ import annotations

import json

# The variable naming the file, set by tools/stack.py for every service.
ENV = "SUPERVISOR_STATUS"


def restarts(path: str | None) -> dict[str, int]:
    """Restarts by service name from the supervisor's file at ``path`` (the
    caller passes ``os.environ.get(ENV)``); an empty dict when unset, missing,
    unreadable or malformed. Never raises: /stats must answer whatever the
    file holds."""
    if not path:
        return {}
    try:
        with open(path, "rb") as file:
            document = json.loads(file.read())
        counts = document["restarts"]
        # bool is an int to Python but not a count; anything else is dropped alone.
        return {str(name): count for name, count in counts.items()
                if isinstance(count, int) and not isinstance(count, bool) and count >= 0}
    except Exception:  # OSError, bad JSON, wrong shape: all mean "no figures"
        return {}
