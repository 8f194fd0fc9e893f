"""``python -m neofleet.sandbox.agent --dir DIR``: the node agent process that ``up`` starts.

Registers the pools' Nodes, keeps them Ready, runs their pods; on SIGTERM stops every pod
process and exits. Logs to ``DIR/logs/agent.log``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from kubernetes import config

from neofleet.sandbox.agent.agent import NodeAgent
from neofleet.sandbox.pools import load_pools


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m neofleet.sandbox.agent")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--pools", type=Path, default=None)
    args = parser.parse_args()
    folder: Path = args.dir.resolve()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = config.new_client_from_config(str(folder / "kubeconfig"))
    agent = NodeAgent(api, load_pools(args.pools), folder, os.environ)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.register_nodes()
    for target in (agent.heartbeat_forever, agent.watch_pods_forever):
        threading.Thread(target=target, daemon=True).start()
    logging.getLogger("neofleet.sandbox.agent").info("simulating %s", ", ".join(agent.pools))
    done.wait()
    agent.stop_all()


if __name__ == "__main__":
    main()
