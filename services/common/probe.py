"""``python -m services.common.probe``: is a service alive, or ready? For
healthchecks (compose, Kubernetes exec probes, scripts): exit 0 if it is, 1 if
it is not, with one line on stderr saying why.

    python -m services.common.probe http unix:/run/rinha/api1.sock /health/ready
    python -m services.common.probe http 127.0.0.1:9999 /health/live
    python -m services.common.probe grpc unix:/run/rinha/cache.sock pipeline.v1.Cache

``http`` passes on a 2XX; ``grpc`` asks the standard health service
(grpc.health.v1) and passes on SERVING ("" is the server as a whole). Only the
standard library and grpcio: it runs in the service's own image.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys

from services.common.listen import split_listen

TIMEOUT_SECONDS = 3.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def http_status(listen: str, path: str, timeout: float = TIMEOUT_SECONDS) -> int:
    """The status of ``GET path`` at ``listen`` (unix:/path or host:port)."""
    address = split_listen(listen)
    if isinstance(address, str):
        connection: http.client.HTTPConnection = _UnixConnection(address, timeout)
    else:
        connection = http.client.HTTPConnection(address[0] or "127.0.0.1", address[1], timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        return connection.getresponse().status
    finally:
        connection.close()


def grpc_serving(address: str, service: str = "", timeout: float = TIMEOUT_SECONDS) -> str:
    """The health status name the server gives ``service`` ("SERVING", ...)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.probe", description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    over_http = kinds.add_parser("http", help="GET a path; healthy on 2XX")
    over_http.add_argument("listen", help="unix:/path or host:port")
    over_http.add_argument("path", nargs="?", default="/health/ready")
    over_grpc = kinds.add_parser("grpc", help="grpc.health.v1 Check; healthy on SERVING")
    over_grpc.add_argument("address", help="unix:/path or host:port")
    over_grpc.add_argument("service", nargs="?", default="")
    args = parser.parse_args(argv)
    try:
        if args.kind == "http":
            status = http_status(args.listen, args.path)
            verdict, healthy = f"HTTP {status}", 200 <= status < 300
        else:
            verdict = grpc_serving(args.address, args.service)
            healthy = verdict == "SERVING"
    except Exception as exc:  # any failure to get an answer is "unhealthy"
        details = getattr(exc, "details", None)  # a gRPC error's one line
        print(f"unhealthy: {details() if callable(details) else repr(exc)}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"unhealthy: {verdict}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
