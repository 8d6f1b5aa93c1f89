"""docker-compose.yml and the Dockerfile, checked without Docker: structure, wiring, and real commands."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import typer
import yaml
from fastapi.testclient import TestClient
from ray.scripts.scripts import cli as ray_cli

from api.app import create_app
from api.settings import ApiSettings
from orchestrator.cli import app as orchestrator_app
from resultsdb import migrate

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
RAY_SERVICES = ("ray-head", "ray-worker")
DATABASE_SERVICES = ("migrate", "api", "ray-head")  # ray-head hosts the sweep drivers
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def command_of(service: str) -> list[str]:
    spec = SERVICES[service]
    command = spec["command"]
    return [*spec.get("entrypoint", []), *(shlex.split(command) if isinstance(command, str) else command)]


def resolve(group, argv: list[str]):
    """The (sub)command that argv names, and the arguments left for it; fails on an unknown command.

    Works for Ray's click group and for Typer's (which vendors its own click), so by attributes, not types.
    """
    command = group
    while hasattr(command, "commands") and argv and not argv[0].startswith("-"):
        name, argv = argv[0], argv[1:]
        assert name in command.commands, f"{name!r} is not a command of {command.name}: {sorted(command.commands)}"
        command = command.commands[name]
    return command, argv


def assert_options_exist(command, argv: list[str]) -> None:
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    assert used <= known, f"{command.name} has no option {sorted(used - known)}"


def test_the_lab_stack_has_its_five_services():
    assert set(SERVICES) == {"postgres", "migrate", "api", "ray-head", "ray-worker"}


@pytest.mark.parametrize("service", ["migrate", "api"])
def test_orchestrator_services_run_real_cli_commands(service):
    argv = command_of(service)
    assert argv[0] == "orchestrator"
    command, rest = resolve(typer.main.get_command(orchestrator_app), argv[1:])
    assert_options_exist(command, rest)


@pytest.mark.parametrize("service", RAY_SERVICES)
def test_ray_services_run_ray_start_with_real_options(service):
    argv = command_of(service)
    assert argv[:2] == ["ray", "start"] and "--block" in argv  # --block: the container lives as long as the node
    command, rest = resolve(ray_cli, argv[1:])
    assert_options_exist(command, rest)


def test_the_worker_joins_the_head_on_its_port():
    head_port = next(a.split("=")[1] for a in command_of("ray-head") if a.startswith("--port="))
    assert f"--address=ray-head:{head_port}" in command_of("ray-worker")


def test_the_api_listens_on_all_interfaces_on_the_published_port():
    argv = command_of("api")
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    port = argv[argv.index("--port") + 1]
    assert any(str(mapping).endswith(f":{port}") for mapping in SERVICES["api"]["ports"])


def test_health_checks_probe_real_endpoints(tmp_path):
    for service, spec in SERVICES.items():
        if service != "migrate":
            assert spec["healthcheck"]["test"], f"{service} has no healthcheck"
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    probe = " ".join(SERVICES["api"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8000(/[^'\" ]*)", probe).group(1)
    database_url = f"sqlite:///{tmp_path / 'elmscale.db'}"
    migrate.upgrade(database_url)
    with TestClient(create_app(settings=ApiSettings(database_url=database_url))) as client:
        assert client.get(path).status_code == 200
    for service in RAY_SERVICES:
        command, rest = resolve(ray_cli, SERVICES[service]["healthcheck"]["test"][2:])
        assert command.name == "status"


def test_startup_order_waits_for_health_and_migrations():
    expected = {
        "migrate": {"postgres": "service_healthy"},
        "api": {"migrate": "service_completed_successfully"},
        "ray-head": {"migrate": "service_completed_successfully"},
        "ray-worker": {"ray-head": "service_healthy"},
    }
    for service, spec in SERVICES.items():
        depends = {name: entry["condition"] for name, entry in spec.get("depends_on", {}).items()}
        assert depends == expected.get(service, {}), service
        for name, condition in depends.items():
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[name], f"{service} waits for {name}'s health, which is never checked"
    assert SERVICES["migrate"]["restart"] == "no"


def test_volumes_are_declared_and_shared_where_state_must_be():
    declared = set(COMPOSE["volumes"])
    mounts = {service: dict(m.split(":")[:2] for m in spec.get("volumes", [])) for service, spec in SERVICES.items()}
    named = {source for by_target in mounts.values() for source in by_target if not source.startswith(".")}
    assert named == declared  # every named volume is declared, and every declared one is used
    assert mounts["postgres"]["postgres-data"] == "/var/lib/postgresql/data"
    for service in RAY_SERVICES:
        state_dir = SERVICES[service]["environment"]["ELMSCALE_STATE_DIR"]
        assert mounts[service]["elmscale-state"] == state_dir, f"{service}: ELMSCALE_STATE_DIR is not the shared volume"


def test_every_process_is_configured_by_environment():
    for service in DATABASE_SERVICES:
        assert "ELMSCALE_DATABASE_URL" in SERVICES[service]["environment"], service
        assert "postgres:5432" in SERVICES[service]["environment"]["ELMSCALE_DATABASE_URL"]
    assert "ELMSCALE_DATABASE_URL" not in SERVICES["ray-worker"]["environment"]  # workers never open the database
    for service in RAY_SERVICES:
        env = SERVICES[service]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")  # required, never a default token
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_the_worker_reserves_nvidia_gpus():
    devices = SERVICES["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and (d.get("count") or d.get("device_ids"))
               for d in devices)


def test_every_compose_variable_is_documented():
    documented = (ROOT / "docs" / "deploy.md").read_text()
    variables = set(VARIABLE.findall((ROOT / "docker-compose.yml").read_text()))
    assert {v for v in variables if f"`{v}`" not in documented} == set()


def test_the_image_installs_every_package_and_selects_the_torch_index_by_build_arg():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert all((ROOT / source).exists() for source in copied)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"the image misses {sorted(packages - copied)}"
    assert "ARG TORCH_VARIANT=cpu" in dockerfile and "download.pytorch.org/whl/${TORCH_VARIANT}" in dockerfile
    assert COMPOSE["x-image"]["build"]["args"]["TORCH_VARIANT"].startswith("${TORCH_VARIANT:-cu")  # GPU workers
