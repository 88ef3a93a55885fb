#!/usr/bin/env bash
# Stands in for the official Airflow image's /entrypoint (scripts/docker/entrypoint_prod.sh of apache/airflow)
# in tests/deployment/test_compose_stack.py: the steps of it that the compose file's settings reach, in its
# order and with its outcomes (a failed migration or user creation does not stop it, as in the image).
set -euo pipefail
umask 0002

# wait_for_airflow_db: `airflow db check` until it passes, 20 tries 3 s apart.
for attempt in $(seq 20); do
    if check=$(airflow db check 2>&1); then break; fi
    if [[ ${attempt} == 20 ]]; then printf 'ERROR! Maximum number of retries (20) reached.\n%s\n' "${check}" >&2; exit 1; fi
    sleep 3
done

if [[ -n "${_AIRFLOW_DB_MIGRATE:-}" ]]; then
    airflow db migrate || true
fi

if [[ -n "${_AIRFLOW_WWW_USER_CREATE:-}" ]]; then
    if [[ -z "${_AIRFLOW_WWW_USER_PASSWORD:-}" ]]; then
        echo "ERROR! Airflow Admin password not set via _AIRFLOW_WWW_USER_PASSWORD" >&2
        exit 1
    fi
    airflow users create \
        --username "${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
        --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" \
        --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
        --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" \
        --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}" \
        --password "${_AIRFLOW_WWW_USER_PASSWORD}" || true
    unset _AIRFLOW_WWW_USER_PASSWORD
fi

case "${1:-}" in
    bash) shift; exec /bin/bash "$@" ;;
    python) shift; exec python "$@" ;;
    airflow) shift ;;
esac
exec airflow "$@"
