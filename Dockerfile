# One image for every paperwire service (matcher, mailer, Airflow with the DAGs, web later).
# Airflow's own image is the base, so the scheduler, api-server, dag-processor and triggerer
# run the project's DAGs with the project installed; the stream services reuse it.
FROM apache/airflow:slim-3.3.2-python3.11

USER root
WORKDIR /opt/paperwire
COPY --chown=airflow:root pyproject.toml README.md ./
COPY --chown=airflow:root paperwire ./paperwire
COPY --chown=airflow:root producers ./producers
COPY --chown=airflow:root consumers ./consumers
COPY --chown=airflow:root alerts ./alerts
COPY --chown=airflow:root dags ./dags
COPY --chown=airflow:root profiles ./profiles
COPY --chown=airflow:root feeds.yaml ./feeds.yaml
# The ONNX export of the embedding model (made on first use, ~20 s) is cached here; compose mounts
# one volume at this path for every service, so it is made once, not once per container.
RUN mkdir -p /opt/paperwire/model-cache && chown airflow:root /opt/paperwire/model-cache

USER airflow
# CPU torch first so nothing resolves a CUDA build.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -e . apache-airflow-providers-postgres

ENV HF_HUB_OFFLINE=1 \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/paperwire/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    PAPERWIRE_FEEDS_FILE=/opt/paperwire/feeds.yaml \
    PAPERWIRE_PROFILES_DIR=/opt/paperwire/profiles \
    PAPERWIRE_MODEL_CACHE_DIR=/opt/paperwire/model-cache
