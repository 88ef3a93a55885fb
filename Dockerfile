# The Airflow image with this project's pinned dependencies, DAGs, library and plugins, laid out as
# Airflow expects them at AIRFLOW_HOME (/opt/airflow). The project root is on PYTHONPATH, so the DAGs
# import include.catalog_publisher as they do in an Astro project; nothing is pip-installed from here.
# Development wiring (devstack/, tests/, scripts/) is not copied.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt /opt/airflow/
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt -c /opt/airflow/constraints.txt
COPY --chown=airflow:root include /opt/airflow/include
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
ENV PYTHONPATH=/opt/airflow \
    CATALOG_PUBLISHER_HOME=/opt/airflow
