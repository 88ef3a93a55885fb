#!/usr/bin/env python
"""Start, stop or use the embedded stack (SeaweedFS S3, Tansu Kafka, osmem Elasticsearch API).

python scripts/stack.py start          start on free loopback ports, print the environment
python scripts/stack.py env            print `export` lines for the running stack
python scripts/stack.py run -- CMD...  start, run CMD with the stack's environment, stop
python scripts/stack.py stop           stop (data stays in .stack/ for the next start)
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: include/ and devstack/ import from it

from devstack.embedded_stack import EmbeddedStack, StackError, default_state_dir, isolate_from_caller  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "env", "run"])
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="with run: the command to run")
    parser.add_argument(
        "--state-dir", default=str(default_state_dir()), help="where data, logs and pids live (default .stack/)"
    )
    args = parser.parse_args()
    stack = EmbeddedStack(args.state_dir)
    try:
        if args.command == "stop":
            stack.stop()
            print("embedded stack stopped")
            return 0
        if args.command in ("status", "env"):
            state = stack.running()
            if not state:
                print("embedded stack is not running; start it with: python scripts/stack.py start", file=sys.stderr)
                return 1
        else:
            isolate_from_caller()  # the stack's services, and a `run` command, see only the stack's settings
            state = stack.start()
        if args.command == "run":
            argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            try:
                return subprocess.run(argv, env={**os.environ, **state.env()}).returncode
            finally:
                stack.stop()
        if args.command == "env":
            for key, value in state.env().items():
                print(f"export {key}={shlex.quote(value)}")
            return 0
        print(f"S3 (SeaweedFS)       {state.s3_endpoint}  bucket {state.bucket}")
        print(f"Kafka (Tansu)        {state.kafka_bootstrap}  (no topics: the first publish creates '{state.topic}')")
        print(f"Elasticsearch API    {state.elasticsearch_url}")
        print(f'logs in {stack.logs}; use it from a shell with: eval "$(python scripts/stack.py env)"')
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
