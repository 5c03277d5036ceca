import subprocess
from pathlib import Path

import pytest

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
