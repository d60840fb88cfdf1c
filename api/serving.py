"""Several API processes on one port (`modelpress api --workers N`), with TCP_NODELAY on every connection.

uvicorn binds the shared listening socket itself with its protocol left at 0 (Kludex/uvicorn#3149, open);
accepted connections inherit that, and asyncio only sets TCP_NODELAY when a socket says IPPROTO_TCP. Without
it every keep-alive response after the first waits about 40 ms on the client's delayed ACK (Nagle): a
status poll measured 44 ms instead of 1 ms. The socket is re-wrapped here so the kernel's own answer (TCP)
is what the worker processes inherit."""
from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import Multiprocess


class TcpConfig(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return socket.socket(fileno=sock.detach())   # family, type and protocol read back from the socket
        return sock


def serve_processes(app: str, host: str, port: int, workers: int, log_config: dict) -> None:
    """uvicorn.run(app, factory=True, workers=N) with the socket above."""
    config = TcpConfig(app, factory=True, host=host, port=port, workers=workers, log_level="info",
                       log_config=log_config)
    Multiprocess(config, sockets=[config.bind_socket()]).run()
