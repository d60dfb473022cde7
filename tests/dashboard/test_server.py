"""The driver's observability server: loopback only, a token on every request, GETs only; the
session file the CLI finds it by is owner-only and goes away with the program."""

from __future__ import annotations

import json
import os
import stat
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import ember
from ember.dashboard import _session
from ember.errors import SessionError
from ember.testing import LeakCheck


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch):
    folder = tmp_path / "runtime"
    monkeypatch.setenv("EMBER_RUNTIME_DIR", str(folder))
    return folder


def test_the_dashboard_is_on_loopback_and_answers_only_with_its_token(runtime_dir):
    info = ember.init(num_cpus=1, include_dashboard=True, dashboard_port=0)
    try:
        url = urlsplit(info.dashboard_url)
        assert url.hostname == "127.0.0.1"
        token = url.query.removeprefix("token=")
        base = f"http://127.0.0.1:{url.port}"
        with httpx.Client(timeout=10) as client:
            refused = client.get(f"{base}/api/status")
            assert refused.status_code == 403
            assert "needs its token" in refused.json()["error"]
            assert client.get(f"{base}/metrics").status_code == 403
            assert client.get(f"{base}/api/status", params={"token": "guess"}).status_code == 403
            assert client.post(f"{base}/api/status", params={"token": token}).status_code == 405

            page = client.get(info.dashboard_url)  # the printed URL: the page, and a cookie
            assert page.status_code == 200
            assert "<title>ember dashboard</title>" in page.text
            assert "HttpOnly" in page.headers["set-cookie"]
            status = client.get(f"{base}/api/status")  # the cookie is enough from now on
            assert status.json()["nodes"][0]["resources_total"]["CPU"] == 1.0
            assert client.get(f"{base}/static/app.js").status_code == 200

        scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"},
                            timeout=10)
        names = {f.name for f in text_string_to_metric_families(scraped.text)}
        assert {"ember_tasks", "ember_actors", "ember_object_store_bytes"} <= names
    finally:
        LeakCheck().check()


def test_the_session_file_is_owner_only_and_removed_at_shutdown(runtime_dir):
    ember.init(num_cpus=1)
    try:
        assert stat.S_IMODE(os.stat(runtime_dir).st_mode) == 0o700
        path = runtime_dir / f"{os.getpid()}.json"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        record = json.loads(path.read_text())
        assert stat.S_IMODE(os.stat(record["socket"]).st_mode) & 0o077 == 0
        assert len(record["token"]) >= 32 and record["dashboard_url"] is None
        [session] = _session.live_sessions()
        assert (session.pid, session.token) == (os.getpid(), record["token"])
    finally:
        LeakCheck().check()
    assert list(runtime_dir.iterdir()) == []


def test_a_session_folder_open_to_others_is_refused(runtime_dir):
    runtime_dir.mkdir(mode=0o755)
    os.chmod(runtime_dir, 0o755)
    with pytest.raises(SessionError, match=r"open to other users .*chmod 700"):
        _session.session_dir()


def test_sessions_of_programs_that_died_are_cleaned_up(runtime_dir):
    runtime_dir.mkdir(mode=0o700)
    dead_pid = 2**22 + 12345  # above the kernel's pid limit: never running
    (runtime_dir / f"{dead_pid}.json").write_text(json.dumps(
        {"pid": dead_pid, "socket": str(runtime_dir / f"{dead_pid}.sock"), "token": "t"}))
    assert _session.live_sessions() == []
    assert list(runtime_dir.iterdir()) == []
    with pytest.raises(SessionError, match="no running ember program found"):
        _session.find_session()


def test_the_session_socket_can_be_turned_off(runtime_dir, monkeypatch):
    monkeypatch.setenv("EMBER_SESSION_SERVER", "0")
    ember.init(num_cpus=1)
    try:
        assert not runtime_dir.exists() or list(runtime_dir.iterdir()) == []
    finally:
        LeakCheck().check()
