"""Rebuild the search index beside the live one and swap it in, or roll back to the version before.

plan -> fill_version -> verify_version -> swap_alias, then discard_unswapped (a teardown: runs whatever failed)

For a mapping change (the indexer's run report and log say when the live index's mapping is not the code's):
a new version of the `index` alias is made with the code's mapping and filled by replaying the topic from the
start with a consumer group of its own, while index_product_catalog goes on indexing into the live index. It is
checked against the latest published catalog (count, every id, a sample compared byte for byte); then writes to
the live index are blocked for a moment (the live indexer retries), the version catches up to the topic's end,
and one `_aliases` call moves the alias. Searches through the alias never see an empty or partial index.
`rollback` moves the alias back to the version before, caught up the same way. Orchestration only: the task
bodies are in include.catalog_publisher (rebuild_tasks, reindex, index_versions).
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from include.catalog_publisher.dag_defaults import DEFAULT_ARGS, START_DATE
from include.catalog_publisher.params import rebuild_params


def _refusing(step, *args):
    """Run a step that may refuse (a failed check): the reason goes to the run report (XCom `refused`), then fails
    the task, so the alias stays where it was."""
    from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError

    try:
        return step(*args)
    except PublisherError as exc:
        if not isinstance(exc, ServiceUnavailableError):  # a service error is retried, not a refusal
            get_current_context()["ti"].xcom_push(key="refused", value=str(exc))
        raise


@dag(
    dag_id="rebuild_product_index",
    dag_display_name="Rebuild product index",
    description="Rebuild the search index from the Kafka topic beside the live one and swap it in, or roll back",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # two rebuilds of one alias would race for its swap
    tags=["catalog", "kafka", "elasticsearch"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params=rebuild_params(),
)
def rebuild_product_index():
    @task(multiple_outputs=False, task_display_name="Plan the rebuild")
    def plan(params=None, run_id=None) -> dict:
        from include.catalog_publisher import allowed_outputs, rebuild_tasks

        allowed_outputs.check_indexer(params, [params["topic"]])  # the alias and its versions, the dead letters
        return rebuild_tasks.plan_run(params["action"], params["index"], params["topic"], params["group_id"], run_id)

    @task(multiple_outputs=False, task_display_name="Fill the new version from the topic")
    def fill_version(planned: dict, params=None) -> dict:
        from include.catalog_publisher import rebuild_tasks

        return rebuild_tasks.fill(planned, params["batch_size"])

    @task(multiple_outputs=False, task_display_name="Verify it against the catalog")
    def verify_version(planned: dict, filled: dict, params=None) -> dict:
        from include.catalog_publisher import rebuild_tasks

        return _refusing(rebuild_tasks.verify, planned, params["catalog_file"], params["batch_size"])

    @task(multiple_outputs=False, task_display_name="Swap the alias")
    def swap_alias(planned: dict, verified: dict, params=None) -> dict:
        from include.catalog_publisher import rebuild_tasks

        return _refusing(rebuild_tasks.swap, planned, verified, params["batch_size"])

    @task(multiple_outputs=False, task_display_name="Discard what a failed run left")
    def discard_unswapped(planned: dict) -> dict:
        from include.catalog_publisher import rebuild_tasks

        return rebuild_tasks.discard(planned)

    planned = plan()
    filled = fill_version(planned)
    verified = verify_version(planned, filled)
    swapped = swap_alias(planned, verified)
    swapped >> discard_unswapped(planned).as_teardown(setups=planned)  # runs after any failure past the plan


rebuild_product_index()
