"""The one exception type for mistakes a user can fix."""


class PublisherError(Exception):
    """A failure caused by input or configuration, with a message naming the input and the fix.

    Scripts print it as one line and exit non-zero; DAG tasks let it fail the task so the
    message is the last line of the task log.
    """
