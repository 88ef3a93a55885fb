# The Airflow image with this project's pinned dependencies and its pipeline library installed.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root requirements.txt constraints.txt pyproject.toml /opt/catalog-publisher/
COPY --chown=airflow:root include /opt/catalog-publisher/include
RUN pip install --no-cache-dir -r /opt/catalog-publisher/requirements.txt -c /opt/catalog-publisher/constraints.txt \
 && pip install --no-cache-dir --no-deps /opt/catalog-publisher
