import json
import re
import subprocess
from pathlib import Path

import pytest

from services.api import admission
from tools import nginx_conf
from tools.stack import nginx_binary


def test_rendered_config_is_local_and_valid(tmp_path: Path) -> None:
    conf = nginx_conf.write(tmp_path, listen_port=19998)
    text = conf.read_text()
    assert "/run/rinha" not in text
    assert f"unix:{tmp_path}/api1.sock" in text and f"unix:{tmp_path}/api2.sock" in text
    assert "listen 127.0.0.1:19998 " in text
    result = subprocess.run([nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_drifted_config_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    drifted = tmp_path / "nginx.conf"
    drifted.write_text(nginx_conf.SOURCE.read_text().replace("listen 9999 ", "listen 8080 "))
    monkeypatch.setattr(nginx_conf, "SOURCE", drifted)
    with pytest.raises(ValueError, match="listen 9999"):
        nginx_conf.render(tmp_path)


def _error_pages(text: str) -> dict[int, str]:
    """Each status nginx.conf gives an error page, to the page (with "=NNN" when it changes the status)."""
    pages: dict[int, str] = {}
    for line in re.findall(r"^\s*error_page\s+([^;]+);", text, re.MULTILINE):
        *codes, target = line.split()
        status = next((c for c in codes if c.startswith("=")), "")
        for code in codes:
            if not code.startswith("="):
                pages[int(code)] = f"{status} {target}".strip()
    return pages


def test_every_error_nginx_answers_itself_is_json_and_none_is_a_5xx_for_bad_input() -> None:
    text = nginx_conf.SOURCE.read_text()
    pages = _error_pages(text)
    # 494: a head over large_client_header_buffers (sent as 400 unless mapped).
    for status in (400, 404, 405, 408, 411, 413, 414, 494):
        assert status in pages, f"nginx would answer {status} with its HTML page"
    # The client's fault, though nginx would call them 5XX.
    assert pages[501].startswith("=400 ") and pages[505].startswith("=400 ")
    assert pages[494].startswith("=431 ")
    for target in set(pages.values()):
        uri = target.split()[-1]
        location = re.search(rf"location (?:= )?{re.escape(uri)} \{{(.*?)\n        \}}", text, re.DOTALL)
        assert location, f"no location for {uri}"
        assert "default_type application/json;" in location[1]
        body = re.search(r"return \d+ '(.*)';", location[1])
        assert body and "error" in json.loads(body[1]), uri


def _payments_location(text: str) -> str:
    match = re.search(r"location = /payments \{(.*?)\n        \}", text, re.DOTALL)
    assert match
    return match[1]


def _ms(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(ms|s)", value).groups()  # type: ignore[union-attr]
    return int(number) * (1 if unit == "ms" else 1000)


def test_a_frozen_api_costs_a_payment_one_short_read_timeout_then_the_other_api() -> None:
    """nginx connects to a frozen (SIGSTOPped) instance's socket all the same:
    its read timeout decides. Short enough to cost a client about a second,
    longer than the API_ACK_TIMEOUT_MS (1000 ms default) a healthy instance may
    hold a 202 in "cache" ack mode; then the POST goes to the other instance."""
    location = _payments_location(nginx_conf.SOURCE.read_text())
    read_timeout = _ms(re.search(r"proxy_read_timeout (\S+);", location)[1])  # type: ignore[index]
    assert 1000 < read_timeout <= 2000
    retry = re.search(r"proxy_next_upstream ([^;]+);", location)
    assert retry and {"error", "timeout", "non_idempotent"} <= set(retry[1].split())


def test_an_instance_that_timed_out_is_skipped_for_a_while() -> None:
    servers = re.findall(r"server unix:\S+ ([^;]*);", nginx_conf.SOURCE.read_text())
    assert len(servers) == 4
    for options in servers:
        assert "max_fails=1" in options.split() and re.search(r"fail_timeout=\d+s", options)


def test_nginx_refuses_a_body_at_the_apis_limit_in_the_apis_words() -> None:
    """One body-size limit: nginx's client_max_body_size and its own 413 are
    services/api/admission.py's MAX_BODY_BYTES and TOO_LARGE."""
    text = nginx_conf.SOURCE.read_text()
    size = re.search(r"^\s*client_max_body_size\s+(\d+)([kKmM]?);", text, re.MULTILINE)
    assert size is not None
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size[2].lower()]
    assert int(size[1]) * factor == admission.MAX_BODY_BYTES
    too_large = re.search(r"location @too_large \{[^}]*return 413 '([^']*)';", text)
    assert too_large is not None
    assert json.loads(too_large[1]) == {"error": admission.TOO_LARGE}
