"""deploy/: `python app.py` (what the image runs) serves and answers the manifest's probes; the
manifest and the Dockerfile say what the seed's do, plus the probes and this project's install."""

from __future__ import annotations

from pathlib import Path

import yaml

from served import Served

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_python_app_py_serves_with_probes(module_url, tmp_path):
    with Served(DEPLOY / "app.py", module_url, tmp_path) as app:
        assert app.http.get("/health").json() == {"status": "ok"}
        assert app.http.get("/ready").json()["status"] == "ready"
        assert app.http.post("/orders", json={"customer_id": 1, "amount": "9.50"}).status_code == 201
        assert app.http.post("/orders", json={"customer_id": 2, "amount": 1, "status": "paid"}).status_code == 201
        assert app.http.get("/metrics/sales").json() == {"today": "10.5000000000"}
        assert app.http.get("/metrics/sales", params={"status": "paid"}).json() == {"today": "1.0000000000"}


def test_database_url_alone_points_the_app_at_the_database(module_url, tmp_path):
    """The Kubernetes manifest sets only DATABASE_URL: the app must use it, not ./dataflow.db."""
    import sqlalchemy as sa

    from dataflow.core.engine import parse_url

    with Served(DEPLOY / "app.py", module_url, tmp_path, url_env="DATABASE_URL") as app:
        assert app.http.post("/users", json={"name": "Kube", "email": "k@x.test"}).status_code == 201
    engine = sa.create_engine(parse_url(module_url), poolclass=sa.NullPool)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM users WHERE email = 'k@x.test'").scalar() == "Kube"
    engine.dispose()
    assert not (tmp_path / "dataflow.db").exists()


def test_ready_is_503_when_the_database_is_unreachable(tmp_path):
    url = "postgresql://nobody@127.0.0.1:1/none"  # nothing listens on port 1
    with Served(DEPLOY / "app.py", url, tmp_path) as app:
        r = app.http.get("/ready")
        assert r.status_code == 503 and r.json() == {"status": "unavailable", "reason": "database unavailable"}
        r = app.http.get("/users")
        assert r.status_code == 503 and r.json()["error"] == "database_unavailable" and "nobody" not in r.text


def test_manifest():
    deployment, service = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "db-secret", "key": "url"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8000}
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > 25
    assert service["spec"]["ports"][0]["targetPort"] == 8000


def test_dockerfile_installs_this_project_and_the_requirements():
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert 'RUN pip install --no-cache-dir "/opt/dataflow[web]"' in lines
    assert "RUN pip install --no-cache-dir -r requirements.txt" in lines
    assert lines.index("COPY deploy/requirements.txt .") < lines.index("RUN pip install --no-cache-dir -r requirements.txt")
    assert lines[-1] == 'CMD ["python", "app.py"]'
    assert not any("kailash-dataflow" in ln for ln in lines)
