"""`make run` serves through the Procfile: web, cluster and scheduler start and stop together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.processes import ROOT, process_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status_of(url: str) -> int | None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        return urllib.request.build_opener(NoRedirect).open(url, timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_the_procfile_starts_web_cluster_and_scheduler_and_ctrl_c_stops_them(tmp_path):
    port = free_port()
    bin_dir = Path(os.sys.executable).parent
    env = process_env(
        PORT=str(port), CRONOS_HOST="127.0.0.1", PATH=f"{bin_dir}:{os.environ['PATH']}"
    )
    honcho = subprocess.Popen(
        [str(bin_dir / "honcho"), "start", "-f", "Procfile"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: status_of(f"http://127.0.0.1:{port}/") == 302, 60, "the web server to answer"
        )
        children = psutil.Process(honcho.pid).children(recursive=True)
        commands = " ".join(" ".join(p.cmdline()) for p in children)
        assert "daphne" in commands
        assert "qcluster" in commands
        assert "cronos_scheduler" in commands
        assert status_of(f"http://127.0.0.1:{port}/admin/login/") == 200
    finally:
        os.killpg(honcho.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        honcho.wait(30)
    wait_for(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children),
        30,
        "every process to stop",
    )
