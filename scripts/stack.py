#!/usr/bin/env python
"""Start, stop or use the embedded stack (SeaweedFS S3, Tansu Kafka, osmem Elasticsearch API).

python scripts/stack.py start          start on free loopback ports, print the environment
python scripts/stack.py env            print `export` lines for the running stack
python scripts/stack.py run -- CMD...  start, run CMD with the stack's environment, stop (Ctrl+C and
                                       SIGTERM stop CMD first, then the stack)

Your shell's credentials and endpoints (AWS_*, KAFKA_*, ELASTICSEARCH_*, AIRFLOW_CONN_*, ...) never reach the
stack or CMD: it uses the stack's own, and says which it ignored. CMD keeps your AIRFLOW__API__PORT (the UI's
port) and your PUBLISHER_* settings (schedule, time zone, ...), but those that name places (PUBLISHER_BUCKET,
PUBLISHER_ARTIFACTS_URL, PUBLISHER_ARTIFACTS_CONN_ID, PUBLISHER_ALLOWED_INPUTS, PUBLISHER_ALLOWED_OUTPUTS).
python scripts/stack.py stop           stop (data stays in .stack/ for the next start)
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: include/ and devstack/ import from it

from devstack.embedded_stack import EmbeddedStack, StackError, default_state_dir, isolate_from_caller  # noqa: E402

# What `run` passes on from the caller: the UI's port and the publisher's settings, but the stack's own places.
STACK_PLACES = (
    "PUBLISHER_BUCKET",
    "PUBLISHER_ARTIFACTS_URL",
    "PUBLISHER_ARTIFACTS_CONN_ID",
    "PUBLISHER_ALLOWED_INPUTS",
    "PUBLISHER_ALLOWED_OUTPUTS",
)


def _kept_from_caller(environ) -> dict[str, str]:
    return {
        name: value
        for name, value in environ.items()
        if name == "AIRFLOW__API__PORT" or (name.startswith("PUBLISHER_") and name not in STACK_PLACES)
    }


def _run_until_it_ends(argv: list[str], env: dict[str, str]) -> int:
    """Run the command to its end: Ctrl+C reaches it from the terminal (this process waits for it), SIGTERM is
    passed on to it; only then does the caller stop the stack, so the command never loses its services mid-stop."""
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as exc:
        print(f"error: cannot run {shlex.join(argv)}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # a handler, not SIG_IGN: the child keeps the default
    signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    code = child.wait()
    return 128 - code if code < 0 else code  # a command ended by a signal: the shell's 128 + its number


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "env", "run"])
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="with run: the command to run")
    parser.add_argument(
        "--state-dir", default=str(default_state_dir()), help="where data, logs and pids live (default .stack/)"
    )
    before_command = sys.argv[1 : sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
    if {"-h", "--help"} & set(before_command):  # `run --help`, `env --help`: help, and nothing started
        parser.print_help()
        return 0
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.command == "run" and not argv:
        parser.error("run needs a command: python scripts/stack.py run -- CMD ...")
    stack = EmbeddedStack(args.state_dir)
    try:
        if args.command == "stop":
            stack.stop()
            print("embedded stack stopped")
            return 0
        if args.command in ("status", "env"):
            return _describe(stack, args.command)
        if args.command == "run":
            return _run(stack, argv)
        _print_state(stack, _isolated_start(stack))
        return 0
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _isolated_start(stack: EmbeddedStack):
    """Start the stack seeing none of the caller's settings (they are named, never their values)."""
    isolate_from_caller()
    return stack.start()


def _run(stack: EmbeddedStack, argv: list[str]) -> int:
    """Start, run the command with the stack's environment (and the caller's kept settings), stop."""
    kept = _kept_from_caller(os.environ)
    ignored = [name for name in isolate_from_caller() if name not in kept]
    if ignored:
        print(f"stack.py: ignoring {', '.join(ignored)} from your shell: the stack's own are used", file=sys.stderr)
    if kept:
        print(f"stack.py: passing on {', '.join(sorted(kept))} from your shell", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # while starting: stop what started
    try:
        state = stack.start()
        return _run_until_it_ends(argv, {**os.environ, **state.env(), **kept})
    finally:
        stack.stop()


def _describe(stack: EmbeddedStack, command: str) -> int:
    state = stack.running()
    if not state:
        print("embedded stack is not running; start it with: python scripts/stack.py start", file=sys.stderr)
        return 1
    if command == "env":
        for key, value in state.env().items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    _print_state(stack, state)
    return 0


def _print_state(stack: EmbeddedStack, state) -> None:
    print(f"S3 (SeaweedFS)       {state.s3_endpoint}  bucket {state.bucket}")
    print(f"Kafka (Tansu)        {state.kafka_bootstrap}  (no topics: the first publish creates '{state.topic}')")
    print(f"Elasticsearch API    {state.elasticsearch_url}")
    print(f'logs in {stack.logs}; use it from a shell with: eval "$(python scripts/stack.py env)"')


if __name__ == "__main__":
    sys.exit(main())
