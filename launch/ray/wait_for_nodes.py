"""Wait until the Ray cluster at ADDRESS has at least N alive nodes (exit 0), or give up (exit 1).

    python launch/ray/wait_for_nodes.py HOST:PORT [--timeout SECONDS] N [--while-alive PID ...]

Used by launch/slurm/data.sbatch and launch/ray/local_cluster.sh between starting the nodes and
running the driver, so the work spreads over every node from the first task on. It gives up
after --timeout seconds, or as soon as one of the --while-alive processes (the `ray start`
steps) has exited. It only calls ray.init once the head's port accepts connections, because
ray.init keeps retrying a head that is not there far beyond any timeout.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait(address: str, nodes: int, timeout: float, watched: list[int]) -> str | None:
    """None once `nodes` nodes are up, else why not."""
    import ray

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    up = 0
    while time.monotonic() < deadline:
        gone = [pid for pid in watched if not alive(pid)]
        if gone:
            return f"the node process {gone[0]} exited"
        if ray.is_initialized() or port_open(host, int(port)):
            if not ray.is_initialized():
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            up = sum(1 for node in ray.nodes() if node["Alive"])
            if up >= nodes:
                print(f"ray cluster at {address}: {up} nodes up", flush=True)
                return None
        time.sleep(1)
    return f"{up} of {nodes} nodes up after {timeout:g} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the head's HOST:PORT")
    parser.add_argument("nodes", type=int, help="alive nodes to wait for")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--while-alive", type=int, nargs="+", default=[], metavar="PID",
                        help="give up when one of these processes has exited")
    args = parser.parse_args(argv)
    import ray

    try:
        problem = wait(args.address, args.nodes, args.timeout, args.while_alive)
    except (ConnectionError, RuntimeError, ValueError) as err:
        problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if problem:
        print(f"wait_for_nodes: the Ray cluster at {args.address} is not ready: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
