import socket
from pathlib import Path

import pytest

from tools.stack import Stack, StackConfig, StackError


def test_a_second_stack_on_taken_ports_refuses_to_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = Stack(StackConfig(run_dir=tmp_path, port=port, default_url="http://127.0.0.1:1",
                                  fallback_url="http://127.0.0.1:2"))
        with pytest.raises(StackError, match=f"port\\(s\\) {port} already in use"):
            stack.start()
        assert stack.procs == {}
