"""What every runbook script shares: logging to stderr, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from include.catalog_publisher.errors import PublisherError

ENVIRONMENT_HELP = """
environment:
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...   the AWS credential chain
  AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3)                     an S3-compatible endpoint instead of AWS
  AWS_DEFAULT_REGION                                            the bucket's region
  KAFKA_BOOTSTRAP_SERVERS                                       Kafka brokers, host:port[,host:port]
  ELASTICSEARCH_URL                                             Elasticsearch, e.g. https://host:9200
  ELASTICSEARCH_API_KEY, or ELASTICSEARCH_USERNAME and _PASSWORD   Elasticsearch credentials, if it needs them
"""


def parser(description: str, environment: bool = True) -> argparse.ArgumentParser:
    """An argparse parser whose --help ends with the environment variables the command reads."""
    return argparse.ArgumentParser(
        description=description,
        epilog=ENVIRONMENT_HELP if environment else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_dry_run(parser: argparse.ArgumentParser, still: str) -> None:
    """The --dry-run flag every runbook command has: print what the command would do and change nothing.
    `still` says what the dry run still reads or asks, e.g. "scans the folder"."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"print what would be done and change nothing: {still}; exits as a real run would on bad input",
    )


def run(main: Callable[[], int | None]) -> None:
    """Run main() and exit: 0 on success, 1 with one 'error: ...' line for a PublisherError, 130 on Ctrl+C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    try:
        code = main() or 0
    except PublisherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
