"""docker-compose.yml checked statically (no Docker engine runs here): structure, pinned
images, health-gated start order, every command exists in the project, every secret documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from paperwire.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
AIRFLOW_COMMANDS = {"db", "api-server", "scheduler", "dag-processor", "triggerer"}


def test_the_pipeline_is_all_there():
    assert {
        "kafka",
        "redis",
        "postgres",
        "mailpit",
        "matcher",
        "mailer",
        "web",
        "airflow-scheduler",
        "airflow-api-server",
        "airflow-dag-processor",
        "airflow-triggerer",
    } <= set(SERVICES)
    assert "--appendonly" in SERVICES["redis"]["command"]  # the ledger must survive restarts
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft


def test_images_are_pinned():
    for name, svc in SERVICES.items():
        image = svc.get("image", "")
        assert re.fullmatch(r"[\w./-]+:v?\d[\w.-]*", image) or ("build" in svc and image.endswith(":0.1.0")), (
            name,
            image,
        )
    assert "FROM apache/airflow:slim-3.3.2" in (ROOT / "Dockerfile").read_text()


def test_dependencies_wait_for_health():
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, (name, dep)
            wanted = cond["condition"]
            assert wanted in ("service_healthy", "service_completed_successfully"), (name, dep)
            if wanted == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}, which has no healthcheck"


def test_every_command_exists_in_the_project():
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    for name, svc in SERVICES.items():
        cmd = svc.get("command")
        if not cmd or name in ("redis",):
            continue
        if cmd[0] == "paperwire":
            assert cmd[1] in subcommands, (name, cmd)
            build_parser().parse_args(cmd[1:])  # parses, or SystemExit fails the test
        elif cmd[0] == "airflow":
            assert cmd[1] in AIRFLOW_COMMANDS, (name, cmd)


def test_every_variable_is_documented_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    for var in set(re.findall(r"\$\{(\w+)", text)):
        assert re.search(rf"^{var}=", example, re.M), var


def test_services_share_one_model_cache():
    # Every container that embeds would otherwise export the model again (~20 s) on each start.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    path = re.search(r"PAPERWIRE_MODEL_CACHE_DIR=(\S+)", dockerfile)
    assert path, "the image sets no PAPERWIRE_MODEL_CACHE_DIR"
    assert f"chown airflow:root {path[1]}" in dockerfile  # the volume starts owned by the service user
    for name, svc in SERVICES.items():
        if svc.get("image") == "paperwire:0.1.0":
            assert f"model-cache:{path[1]}" in svc.get("volumes", []), name
    assert "model-cache" in COMPOSE["volumes"]
