"""``python -m mnist_lit serve``: the draw-a-digit page and its HTTP API, over a checkpoint or an ONNX file."""

from __future__ import annotations

import argparse
import errno
import socket
from pathlib import Path

from mnist_lit.errors import UserError

PROG = "python -m mnist_lit serve"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0: any free port, printed when the server starts)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The command's options; abbreviations are off, as in the rest of the CLI."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        description=(
            "Serve a web page to draw a digit on (or upload a picture of one) and see what a trained network reads, "
            "with the ten probabilities and the 28x28 image it saw, plus an HTTP API: POST /api/predict with an "
            "image, GET /api/health."
        ),
        epilog=(
            f"Example: {PROG} --ckpt_path lightning_logs/compact/version_0/checkpoints/last-epoch=4.ckpt, then open "
            "the printed address. The server listens on the loopback address only, unless --host says otherwise. "
            "Stop it with Ctrl+C."
        ),
    )
    parser.add_argument(
        "--ckpt_path",
        required=True,
        metavar="PATH",
        help="the network: a checkpoint (.ckpt, from `fit` or `import-keras`) or an exported ONNX file (.onnx)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"the address to listen on (default: {DEFAULT_HOST}, this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"the TCP port (default: {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--unsure_threshold",
        type=float,
        metavar="P",
        help="answer 'not sure' when the top probability is under P (default: the network's own, from `calibrate`; "
        "0: never)",
    )
    return parser


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to ``host:port``, or a :class:`UserError` saying why not (port in use...)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise UserError(f"--host {host}: cannot resolve it ({err.strerror})") from err
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = " (choose another with --port, or 0 for any free one)" if err.errno == errno.EADDRINUSE else ""
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from err
    return sock


def url_of(sock: socket.socket) -> str:
    """The address a browser opens for a bound socket; IPv6 hosts go in brackets."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if sock.family == socket.AF_INET6 else f"http://{host}:{port}/"


def main(argv: list[str]) -> None:
    """Parse ``argv``, load the network, bind, print the address, and serve until Ctrl+C."""
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from mnist_lit.serve.app import create_app
    except ImportError as err:
        raise UserError(f"`serve` needs FastAPI and uvicorn: pip install -e '.[serve]' ({err})") from err
    from mnist_lit.inference.runners import load_runner

    path = Path(args.ckpt_path)
    try:
        runner = load_runner(path)
        if args.unsure_threshold is not None:
            runner.unsure_threshold = args.unsure_threshold if args.unsure_threshold > 0 else None
        app = create_app(runner)
    except UserError:
        raise
    except ImportError as err:
        raise UserError(f"--ckpt_path {path}: serving an ONNX file needs: pip install -e '.[export]' ({err})") from err
    except Exception as err:  # ONNX Runtime raises its own types for a file it cannot run
        if path.suffix.lower() != ".onnx":
            raise
        raise UserError(f"--ckpt_path {path}: not an ONNX model this can run ({type(err).__name__}: {err})") from err
    sock = bind_socket(args.host, args.port)
    print(f"Serving {runner.network_name} from {path} at {url_of(sock)} (Ctrl+C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Listening on {args.host}: other machines may reach this server.", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn has shut down gracefully and raises Ctrl+C again afterwards; that is the normal way to stop
    finally:
        sock.close()
