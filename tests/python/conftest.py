"""Fixtures that run the real vtwin binary for the client tests."""
import os
import shutil
import subprocess
import tempfile

import pytest

ADMIN = "administrator@vsphere.local"
PW = "Py-Passw0rd!"


def vtwin_bin():
    b = os.environ.get("VTWIN_BIN")
    if not b:
        raise RuntimeError("VTWIN_BIN must name the vtwin binary under test")
    return b


class Server:
    def __init__(self, data_dir, plain_http=True, extra=()):
        self.data_dir = data_dir
        args = [vtwin_bin(), "serve", "--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--data-dir", data_dir,
                "--admin-password", PW] + list(extra)
        if plain_http:
            args.append("--plain-http")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.vcd_url = None
        for line in self.proc.stdout:
            if line.startswith("vtwin VCD on "):
                self.vcd_url = line.strip().split(" ")[-1]
            if line.startswith("vtwin listening on "):
                url = line.strip().split(" ")[-1]
                self.scheme, rest = url.split("://")
                self.host, port = rest.rsplit(":", 1)
                self.port = int(port)
                break
        else:
            raise RuntimeError("vtwin exited before listening")

    def connect(self, user=ADMIN, pwd=PW):
        """A pyvmomi ServiceInstance logged in to this server."""
        from pyVim.connect import SmartConnect
        if self.scheme == "http":
            return SmartConnect(host=self.host, port=self.port, protocol="http", user=user, pwd=pwd)
        return SmartConnect(host=self.host, port=self.port, user=user, pwd=pwd, disableSslCertValidation=True)

    def add_user(self, name, pw, role):
        subprocess.run([vtwin_bin(), "user", "add", name, "--password", pw, "--role", role,
                        "--data-dir", self.data_dir], check=True, capture_output=True)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def data_dir():
    d = tempfile.mkdtemp(prefix="vtwin-py-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(data_dir):
    s = Server(data_dir, extra=["--datastores", "2"])
    yield s
    s.stop()


@pytest.fixture
def tls_server(data_dir):
    s = Server(data_dir, plain_http=False)
    yield s
    s.stop()


@pytest.fixture
def si(server):
    """The administrator's pyvmomi ServiceInstance on `server`."""
    from pyVim.connect import Disconnect
    si = server.connect()
    yield si
    Disconnect(si)
