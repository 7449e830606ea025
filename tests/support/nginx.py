"""A private nginx running a copy of deploy/nginx.conf on loopback, in front of given
upstream ports: the compose topology without containers."""

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.support import servers

CONF = servers.ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
)


def render(folder: Path, port: int, upstreams: tuple[int, int]) -> Path:
    """The file with loopback addresses and every path inside `folder`."""
    text = CONF.read_text()
    replacements = {
        "listen 8000;": f"listen 127.0.0.1:{port};",
        "server app1:8000 ": f"server 127.0.0.1:{upstreams[0]} ",
        "server app2:8000 ": f"server 127.0.0.1:{upstreams[1]} ",
        "/run/nginx.pid": str(folder / "nginx.pid"),
        "/var/cache/nginx/": f"{folder}/",
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/nginx.conf no longer contains {old!r}"
        text = text.replace(old, new)
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


class Nginx:
    """nginx in the foreground on a free loopback port; access log in `access_log`."""

    def __init__(self, folder: Path, upstreams: tuple[int, int]):
        self.port = servers.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.chmod(0o755)  # workers run as nobody and keep temp files here
        conf = render(folder, self.port, upstreams)
        self.access_log = folder / "access.log"
        self.error_log = folder / "error.log"
        with open(self.access_log, "wb") as out, open(self.error_log, "wb") as err:
            self.proc = subprocess.Popen(
                [NGINX, "-e", "stderr", "-p", f"{folder}/", "-c", str(conf), "-g", "daemon off;"],
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        servers.wait_until(self._listening, 10, message=f"nginx on {self.port}")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{self.error_log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def log(self) -> list[dict]:
        pattern = r'"(\S+) (\S+) \S+" (\d{3}) .* upstream=(.*) us=(.*) urt='
        return [
            dict(zip(("method", "uri", "status", "upstream", "upstream_status"), m, strict=True))
            for m in re.findall(pattern, self.access_log.read_text())
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # fast shutdown, workers included
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
